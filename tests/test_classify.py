"""classify: demo train -> predict -> evaluate -> export, phase-two freezing, weights files, every bad input."""

import io
import json

import numpy as np
import pytest

from .helpers import assert_ok, assert_user_error, heavy_imports_of, kill_training_after, run_cli, run_subprocess, saved_model_outputs, snapshot

SIZE = 64
TINY = ["--weights", "none", "--image-size", str(SIZE), "--demo-size", "400", "--batch-size", "16",
        "--learning-rate", "0.003", "--no-augment"]


def image_bytes(array, fmt="PNG", mode=None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(array)
    if mode:
        picture = picture.convert(mode)
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


def demo_files(folder, per_class=1, seed=7, fmt="PNG"):
    """Fresh demo images (not the training ones) written as files, one subfolder per class."""
    from dlapps.apps.classify.data import DEMO_CLASSES, demo_image

    rng = np.random.default_rng(seed)
    files = []
    for kind in DEMO_CLASSES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / kind / f"{kind}_{i}.{fmt.lower()}"
            path.write_bytes(image_bytes(demo_image(rng, kind), fmt))
            files.append(path)
    return files


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("classify") / "run"
    assert_ok(run_cli("classify", "train", "--out", out, "--epochs", "8", *TINY))
    return out


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return demo_files(tmp_path_factory.mktemp("samples"), fmt="JPEG")


def predicted(run_dir, *args):
    result = run_cli("classify", "predict", *map(str, args), "-m", run_dir, "--json")
    assert_ok(result)
    return [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]


def test_demo_training_learns_well_above_chance(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [line.split(",") for line in (run_dir / "history.csv").read_text().splitlines()]
    header, rows = history[0], history[1:]
    loss = [float(r[header.index("loss")]) for r in rows]
    assert loss[-1] < loss[0] - 0.15, loss
    # five classes: chance is 0.2; a from-scratch MobileNet-0.25 is a slow learner over 8 short epochs
    val_accuracy = [float(r[header.index("val_accuracy")]) for r in rows]
    assert metrics["monitor"] == "val_loss" and max(val_accuracy) > 0.35, val_accuracy
    assert metrics["labels"] == ["checkerboard", "circle", "square", "stripes", "triangle"]
    assert metrics["train_size"] == 320 and metrics["val_size"] == 80
    for name in ("config.json", "model.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "backup").exists() and not (run_dir / "checkpoints").exists()


def test_predict_top_k_json_and_gradcam_overlays(run_dir, samples, tmp_path):
    rows = predicted(run_dir, *samples, "--top-k", "2", "--gradcam", tmp_path / "cam")
    assert [r["image"] for r in rows] == [str(p) for p in samples]
    assert all(len(r["top"]) == 2 and r["top"][0]["label"] == r["label"] for r in rows)
    assert all(r["top"][0]["probability"] >= r["top"][1]["probability"] for r in rows)
    from PIL import Image

    for row in rows:
        overlay = Image.open(row["overlay"])
        assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
    # a folder: searched recursively, the same answers; the table output names each image
    from_folder = predicted(run_dir, samples[0].parent.parent)
    assert sorted(r["label"] for r in from_folder) == sorted(r["label"] for r in rows)
    table = run_cli("classify", "predict", samples[0], "-m", run_dir)
    assert_ok(table)
    assert str(samples[0]) in table.output and rows[0]["label"] in table.output


def test_evaluate_on_the_validation_split_and_on_a_folder(run_dir, samples, tmp_path):
    result = run_cli("classify", "evaluate", "-m", run_dir, "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["examples"] == 80 and metrics["accuracy"] > 0.3  # chance 0.2: 16 of 80, sd 3.6
    assert metrics["top_3_accuracy"] >= metrics["accuracy"]
    assert np.array(metrics["confusion_matrix"]).sum() == 80
    assert set(metrics["per_class"]) >= set(metrics["labels"])
    assert (run_dir / "confusion_matrix.png").read_bytes().startswith(b"\x89PNG")
    plot = tmp_path / "cm.png"
    result = run_cli("classify", "evaluate", "-m", run_dir, "--data", samples[0].parent.parent, "--plot", plot)
    assert_ok(result)
    assert "examples" in result.output and "confusion matrix" in result.output and plot.exists()


def test_export_on_jpeg_bytes_and_float_tensors_equals_predict(run_dir, samples, tmp_path):
    out = tmp_path / "exported"
    result = run_cli("classify", "export", "--model", run_dir, "--out", out, "--json")
    assert_ok(result)
    exported = json.loads(result.output)
    assert exported["version"] == 1 and (out / "model.keras").exists() and (out / "serving" / "1" / "saved_model.pb").exists()
    rows = predicted(run_dir, *samples)
    served = saved_model_outputs(out / "serving" / "1", {"image_bytes": [p.read_bytes() for p in samples]}, binary=("image_bytes",))
    assert served["label"] == [r["label"] for r in rows]
    assert np.allclose(served["probability"], [r["probability"] for r in rows], atol=1e-4)
    assert served["top_labels"][::3] == [r["label"] for r in rows]  # string outputs come back flattened (N * k)
    from dlapps.shared.images import read_image

    # the float signature on the pixels the bytes signature decodes to: the same answers
    pixels = [read_image(p, (SIZE, SIZE)).astype(float).tolist() for p in samples]
    tensors = saved_model_outputs(out / "serving" / "1", {"images": pixels}, signature="classify_images")
    assert tensors["label"] == served["label"]
    assert np.allclose(tensors["probabilities"], served["probabilities"], atol=1e-4)


def test_keras_file_and_config_round_trip(run_dir, samples):
    import keras

    from dlapps.apps.classify.model import ImageClassifier
    from dlapps.shared.images import read_image

    model = keras.saving.load_model(run_dir / "model.keras")
    assert isinstance(model, ImageClassifier) and model.image_size == SIZE and model.backbone_name == "mobilenet"
    clone = ImageClassifier.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    batch = np.stack([read_image(p, (SIZE, SIZE)) for p in samples]).astype("float32")
    assert np.allclose(model(batch), clone(batch), atol=1e-5)
    assert clone.get_config() == model.get_config()


def test_phase_two_trains_only_the_top_layers_and_keeps_batchnorm_frozen(run_dir, samples):
    import keras

    from dlapps.shared.images import read_image

    model = keras.saving.load_model(run_dir / "model.keras")
    backbone = model.get_layer("backbone")
    assert model.set_phase("head") == [] and len(model.trainable_weights) == 2  # the classifier's kernel and bias
    trainable = model.set_phase("finetune", unfreeze=10)
    top = backbone.layers[-10:]
    assert trainable == [l.name for l in top if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    assert trainable and all(not l.trainable for l in backbone.layers[:-10])
    assert all(not l.trainable for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = {v.path: v.numpy().copy() for v in model.weights}
    batch = np.stack([read_image(p, (SIZE, SIZE)) for p in samples]).astype("float32")
    labels = np.array([model.labels.index(p.parent.name) for p in samples])
    model.train_on_batch(batch, labels)
    changed = {v.path for v in model.weights if not np.array_equal(before[v.path], v.numpy())}
    top_variables = {v.path for name in trainable for v in backbone.get_layer(name).weights}
    # exactly the unfrozen layers and the head moved; BatchNorm moving statistics did not
    assert changed == top_variables | {v.path for v in model.get_layer("classifier").weights}
    assert model.set_phase("all") and all(l.trainable for l in backbone.layers)


def test_two_phases_from_a_local_weights_file_resume_after_a_kill_and_a_mismatched_file(tmp_path):
    import keras

    right = tmp_path / "mobilenet_025.weights.h5"
    keras.applications.MobileNet(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None).save_weights(right)
    wrong = tmp_path / "mobilenet_v2.weights.h5"
    keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None).save_weights(wrong)
    out = tmp_path / "run"
    common = ["--image-size", "32", "--demo-size", "60", "--batch-size", "16", "--no-augment", "--out", str(out)]
    command = ["classify", "train", "--weights", str(right), "--epochs", "1",
               "--unfreeze", "6", "--finetune-epochs", "60", *common]
    done_epochs = kill_training_after(*command, metadata=out / "backup" / "finetune" / "training_metadata.json", epochs=1)
    assert (out / "checkpoints" / "head.done").exists() and not (out / "model.keras").exists()

    result = run_cli("classify", "train", "--out", out, "--resume", "--finetune-epochs", str(done_epochs + 1))
    assert_ok(result)
    # phase one is not repeated; phase two continues at its first unfinished epoch
    assert "Phase one" not in result.output and "Phase two: top 6 backbone layers trainable" in result.output
    epochs = [int(line.split(",")[0]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs[0] == 0 and epochs[-1] == done_epochs, epochs
    assert (out / "model.keras").exists() and not (out / "backup").exists() and not (out / "checkpoints").exists()
    assert json.loads((out / "config.json").read_text())["unfreeze"] == 6

    before = snapshot(out)
    assert_user_error(run_cli("classify", "train", "--weights", wrong, *common), str(wrong), "does not match the mobilenet alpha 0.25 backbone")
    assert_user_error(run_cli("classify", "train", "--weights", tmp_path / "none.h5", *common), "none.h5", "no such weights file")
    assert snapshot(out) == before


# --- bad input -----------------------------------------------------------------------------------


def write_class_folders(root, good_per_class=3):
    rng = np.random.default_rng(1)
    for name in ("ants", "bees"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(good_per_class):
            (root / name / f"{i}.jpg").write_bytes(image_bytes(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), "JPEG"))


def test_bad_images_are_skipped_with_a_warning_and_odd_pngs_are_converted(tmp_path, capsys):
    from dlapps.apps.classify.config import ClassifyConfig
    from dlapps.apps.classify.data import load_splits
    from dlapps.shared.images import decode_image

    root = tmp_path / "photos"
    write_class_folders(root)
    rng = np.random.default_rng(2)
    good_jpeg = (root / "ants" / "0.jpg").read_bytes()
    (root / "ants" / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (root / "ants" / "notes.jpg").write_bytes(b"this is not an image\n")
    (root / "bees" / "imageNotFound.gif").write_bytes(image_bytes(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "GIF"))
    (root / "bees" / "empty.png").write_bytes(b"")
    gray = rng.integers(0, 255, (10, 12), dtype=np.uint8)
    (root / "bees" / "gray.png").write_bytes(image_bytes(gray, "PNG"))
    (root / "bees" / "rgba.png").write_bytes(image_bytes(rng.integers(0, 255, (10, 12, 4), dtype=np.uint8), "PNG"))
    sixteen = (rng.integers(0, 65535, (10, 12), dtype=np.uint16))
    (root / "bees" / "sixteen.png").write_bytes(image_bytes(sixteen, "PNG"))

    splits = load_splits(ClassifyConfig(data=str(root), val_fraction=0.3))
    warnings = capsys.readouterr().err
    for name in ("truncated.jpg", "notes.jpg", "imageNotFound.gif", "empty.png"):
        assert name in warnings, warnings
    assert "skipped 4 of 13 files" in warnings
    assert "corrupt or truncated JPEG" in warnings and "a GIF" in warnings
    kept = sorted(p.rsplit("/", 1)[-1] for p in splits.train.sources + splits.val.sources)
    assert kept == ["0.jpg", "0.jpg", "1.jpg", "1.jpg", "2.jpg", "2.jpg", "gray.png", "rgba.png", "sixteen.png"]
    for name in ("gray.png", "rgba.png", "sixteen.png"):
        pixels = decode_image((root / "bees" / name).read_bytes(), (16, 16)).numpy()
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    sixteen_pixels = decode_image((root / "bees" / "sixteen.png").read_bytes(), (10, 12)).numpy()
    assert abs(int(sixteen_pixels[0, 0, 0]) - int(sixteen[0, 0] >> 8)) <= 1  # scaled to 8 bits, not clipped


@pytest.mark.parametrize(
    "layout, args, fragments",
    [
        ("none", ["--data", "{tmp}/missing"], ["missing", "no such file or folder"]),
        ("flat", ["--data", "{tmp}/photos"], ["photos", "no class folders"]),
        ("one_class", ["--data", "{tmp}/photos"], ["at least two classes"]),
        ("single_image", ["--data", "{tmp}/photos"], ["class 'bees' has only 1 usable image"]),
        ("csv_missing", ["--data", "{tmp}/labels.csv"], ["labels.csv", "line 3", "no such image file 'gone.jpg'"]),
        ("csv_empty", ["--data", "{tmp}/labels.csv"], ["labels.csv", "empty file"]),
        ("none", ["--data", "{tmp}/photos.zip"], ["photos.zip", "no such file or folder"]),
        ("none", ["--backbone", "mobilnet"], ["backbone must be one of", "did you mean 'mobilenet'"]),
        ("none", ["--image-size", "16"], ["image_size must be at least 32"]),
        ("none", ["--resume"], ["no interrupted run to resume"]),
    ],
)
def test_bad_training_input(tmp_path, layout, args, fragments):
    photos = tmp_path / "photos"
    if layout in ("one_class", "single_image", "csv_missing", "flat"):
        write_class_folders(photos)
    if layout == "one_class":
        for file in (photos / "bees").iterdir():
            file.unlink()
        (photos / "bees").rmdir()
    if layout == "single_image":
        for name in ("1.jpg", "2.jpg"):
            (photos / "bees" / name).unlink()
    if layout == "flat":
        for folder in ("ants", "bees"):
            for file in (photos / folder).iterdir():
                file.rename(photos / f"{folder}_{file.name}")
            (photos / folder).rmdir()
    if layout == "all_bad":
        for name in ("ants", "bees"):
            (photos / name).mkdir(parents=True)
            (photos / name / "x.jpg").write_bytes(b"nope")
    if layout == "csv_missing":
        (tmp_path / "labels.csv").write_text("path,label\nphotos/ants/0.jpg,ants\ngone.jpg,bees\n")
    if layout == "csv_empty":
        (tmp_path / "labels.csv").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = run_cli("classify", "train", "--out", tmp_path / "run", "--epochs", "1", "--weights", "none", *args)
    assert_user_error(result, *fragments)
    assert not (tmp_path / "run" / "model.keras").exists()


def test_a_folder_without_one_usable_image_names_each_file_then_fails(tmp_path):
    for name in ("ants", "bees"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        (tmp_path / "photos" / name / "x.jpg").write_bytes(b"nope")
    result = run_cli("classify", "train", "--data", tmp_path / "photos", "--out", tmp_path / "run", "--weights", "none")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and "Traceback" not in result.stderr and len(lines) == 4, result.stderr
    assert "ants/x.jpg: not a JPEG, PNG or BMP image" in lines[0] and "bees/x.jpg" in lines[1]
    assert "skipped 2 of 2 files" in lines[2] and lines[3].startswith("Error: ") and "no usable images" in lines[3]


def test_predict_input_errors(run_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert_user_error(run_cli("classify", "predict", broken, "-m", run_dir), "broken.jpg", "corrupt or truncated JPEG")
    gif = tmp_path / "anim.gif"
    gif.write_bytes(image_bytes(np.zeros((4, 4, 3), dtype=np.uint8), "GIF"))
    assert_user_error(run_cli("classify", "predict", gif, "-m", run_dir), "anim.gif", "a GIF")
    assert_user_error(run_cli("classify", "predict", tmp_path / "nope.png", "-m", run_dir), "nope.png", "no such file or folder")
    assert_user_error(run_cli("classify", "predict", "-m", run_dir), "no input")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert_user_error(run_cli("classify", "predict", empty, "-m", run_dir), "no input")


def test_missing_and_corrupt_models_as_a_subprocess(tmp_path):
    assert_user_error(run_subprocess("classify", "predict", "x.jpg", "-m", tmp_path / "nothing"), "no trained model here")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"not a zip file")
    assert_user_error(run_cli("classify", "evaluate", "-m", broken), "not a readable Keras model")
    assert_user_error(run_cli("classify", "export", "-m", tmp_path / "nothing"), "no trained model here")


@pytest.mark.parametrize("args", [["classify", "--help"], ["classify", "train", "--help"], ["classify", "predict", "--help"]])
def test_help_never_imports_tensorflow(args):
    heavy, _ = heavy_imports_of(*args)
    assert heavy == []


def test_top_k_accuracy_with_two_classes_and_more():
    from dlapps.apps.classify.app import top_k_accuracy

    binary = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    assert top_k_accuracy(binary, [0, 0, 1], 1) == pytest.approx(1 / 3) and top_k_accuracy(binary, [0, 0, 1], 2) == 1.0
    three = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert top_k_accuracy(three, [1, 0], 2) == 0.5
