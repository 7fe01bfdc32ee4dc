"""classify: the contract suite, plus its two training phases, Grad-CAM, the float-tensor
signature, weights files and bad images."""

import io
import json
import warnings

import numpy as np
import pytest

from .contract import AppContract, predict_json
from .helpers import assert_ok, assert_user_error, run_cli, snapshot

SIZE = 32
TINY = ("--backbone", "tiny", "--weights", "none", "--image-size", str(SIZE), "--demo-size", "300", "--batch-size", "16",
        "--learning-rate", "0.003", "--no-augment", "--test-flip")  # flip averaging on: the contract's export checks cover it


def image_bytes(array, fmt="PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def demo_files(folder, per_class=1, seed=7, fmt="JPEG"):
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


def photos(per_class=3, classes=("ants", "bees")) -> dict:
    """{relative path: JPEG bytes} of small random photos, a folder per class."""
    rng = np.random.default_rng(1)
    return {f"photos/{name}/{i}.jpg": image_bytes(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8), "JPEG")
            for name in classes for i in range(per_class)}


class TestContract(AppContract):
    app = "classify"
    train_args = TINY
    resume_args = ("--demo-size", "80")  # small epochs for the killed run
    epochs = 6
    # validation loss below chance's ln(5) = 1.61 on the 60 held-out demo images
    learned = {"best_value": (0.0, 1.35), "train_size": (240, 240), "val_size": (60, 60)}
    predict_options = ("--top-k", "2")
    evaluate_keys = ("examples", "accuracy", "top_3_accuracy", "skipped_files", "labels", "confusion_matrix", "per_class")
    tfds_name = "tf_flowers"
    tfds_train_args = ("--backbone", "tiny", "--weights", "none", "--image-size", str(SIZE), "--no-augment")
    bad_train_inputs = [
        ({"flat/a.jpg": photos()["photos/ants/0.jpg"]}, ["--data", "{tmp}/flat"], ["flat", "no class folders"]),
        (photos(classes=("ants",)), ["--data", "{tmp}/photos"], ["photos", "at least two classes"]),
        ({**photos(classes=("ants",)), "photos/bees/0.jpg": photos()["photos/bees/0.jpg"]}, ["--data", "{tmp}/photos"],
         ["class 'bees' has only 1 usable image"]),
        ({**photos(), "labels.csv": b"path,label\nphotos/ants/0.jpg,ants\ngone.jpg,bees\n"}, ["--data", "{tmp}/labels.csv"],
         ["labels.csv", "line 3", "no such image file 'gone.jpg'"]),
        # a header that names no known column is refused, not trained on as a row
        ({**photos(), "header.csv": b"img,target\nphotos/ants/0.jpg,ants\nphotos/bees/0.jpg,bees\n"}, ["--data", "{tmp}/header.csv"],
         ["header.csv", "line 1", "no such image file 'img'", "name its columns path and label"]),
        ({"empty.csv": b""}, ["--data", "{tmp}/empty.csv"], ["empty.csv", "empty file"]),
        ({"binary.csv": b"\x00\x01\x02" * 20}, ["--data", "{tmp}/binary.csv"], ["binary.csv", "binary file"]),
        ({"notes.json": b"{}"}, ["--data", "{tmp}/notes.json"], ["notes.json", "expected a folder of class folders or a CSV"]),
        ({}, ["--backbone", "mobilnet"], ["--backbone must be one of", "did you mean 'mobilenet'"]),
        ({}, ["--image-size", "16"], ["--image-size must be between 32 and 2048, got 16"]),
        ({}, ["--alpha", "0"], ["--alpha must be above 0 and at most 4, got 0.0"]),
        ({}, ["--dropout", "1"], ["--dropout must be at least 0 and below 1, got 1.0"]),
        ({}, ["--unfreeze", "-1"], ["--unfreeze must be between 0 and 100000, got -1"]),
        ({}, ["--finetune-learning-rate", "0"], ["--finetune-learning-rate must be above 0 and at most 10"]),
        ({}, ["--label-smoothing", "1"], ["--label-smoothing must be at least 0 and below 1, got 1.0"]),
        ({}, ["--schedule", "linear"], ["--schedule must be one of"]),
        ({}, ["--weights", "{tmp}/none.h5"], ["none.h5", "no such weights file"]),
        ({}, ["--weights", "imagenet"], ["--backbone tiny has no ImageNet weights"]),
    ]

    @pytest.fixture(scope="class")
    def run_dir(self, trained_run):
        """The file's one training run (the contract's own command), shared with the tests below."""
        return trained_run

    def make_inputs(self, tmp_path):
        return [str(p) for p in demo_files(tmp_path / "samples")]

    def check_predictions(self, rows, inputs):
        assert [r["image"] for r in rows] == list(inputs)
        labels = {"checkerboard", "circle", "square", "stripes", "triangle"}
        for row in rows:
            first, second = row["top"]  # --top-k 2
            assert (first["label"], first["probability"]) == (row["label"], row["probability"])
            assert first["probability"] >= second["probability"] and {first["label"], second["label"]} <= labels

    def serving_call(self, inputs):
        return {"image_bytes": [open(p, "rb").read() for p in inputs]}, ("image_bytes",), "serving_default"

    def check_served(self, served, rows):
        assert served["label"] == [r["label"] for r in rows]
        assert np.allclose(served["probability"], [r["probability"] for r in rows], atol=1e-4)
        assert served["top_labels"][::3] == [r["label"] for r in rows]  # string outputs come back flattened (N * k)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("classify") / "run"
    assert_ok(run_cli("classify", "train", "--out", out, "--epochs", str(TestContract.epochs), *TINY))
    return out


@pytest.fixture
def run_dir(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return demo_files(tmp_path_factory.mktemp("samples"))


# --- predict, evaluate, export -------------------------------------------------------------------


def test_predict_gradcam_overlays_folders_stdin_and_empty_input(run_dir, samples, tmp_path):
    rows = predict_json("classify", run_dir, samples, "--top-k", "9", "--gradcam", tmp_path / "cam")
    assert all(len(r["top"]) == 5 for r in rows)  # --top-k is cut to the number of classes
    from PIL import Image

    for row in rows:
        overlay = Image.open(row["overlay"])
        assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
    # '-' reads paths from stdin, and a folder is searched recursively: the same answers
    from_stdin = run_cli("classify", "predict", "-", "-m", run_dir, "--json", input=f"{samples[0].parent.parent}\n")
    assert_ok(from_stdin)
    from_folder = sorted((r["image"], r["label"]) for r in map(json.loads, from_stdin.output.splitlines()))
    assert from_folder == sorted((r["image"], r["label"]) for r in rows)
    # an empty argument names no file: an error, not a scan of the current folder
    assert_user_error(run_cli("classify", "predict", "", "-m", run_dir), "empty path")


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
    assert_user_error(run_cli("classify", "predict", empty, "-m", run_dir, "--top-k", "0"), "--top-k must be between 1 and 1000")


def test_evaluate_on_the_validation_split_on_a_folder_and_on_fresh_demo_images(run_dir, samples, tmp_path):
    result = run_cli("classify", "evaluate", "-m", run_dir, "--json")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["examples"] == 60 and metrics["top_3_accuracy"] >= metrics["accuracy"]
    assert np.array(metrics["confusion_matrix"]).sum() == 60 and set(metrics["per_class"]) >= set(metrics["labels"])
    plot = tmp_path / "cm.png"
    result = run_cli("classify", "evaluate", "-m", run_dir, "--data", samples[0].parent.parent, "--plot", plot, "--top-k", "2")
    assert_ok(result)
    assert "top_2_accuracy" in result.output and "confusion circle" in result.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    demo = json.loads(run_cli("classify", "evaluate", "-m", run_dir, "--data", "demo", "--json").output)
    assert demo["examples"] == 100  # fresh images, at least 100
    (tmp_path / "other" / "wasps").mkdir(parents=True)
    for i, sample in enumerate(samples[:2]):
        (tmp_path / "other" / "wasps" / f"{i}.jpg").write_bytes(sample.read_bytes())
    assert_user_error(run_cli("classify", "evaluate", "-m", run_dir, "--data", tmp_path / "other"), "classes ['wasps'] are not among")


def test_the_float_tensor_signature_answers_as_the_bytes_signature(run_dir, samples, tmp_path):
    """The contract checks serving_default in a fresh process; the second signature, in this one."""
    import tensorflow as tf

    from dlapps.shared.images import read_image

    result = run_cli("classify", "export", "--model", run_dir, "--out", tmp_path, "--top-k", "2", "--json")
    assert_ok(result)
    signatures = json.loads(result.output)["signatures"]
    assert signatures["classify_images"].startswith("(images: float32[N, ?, ?, 3]) -> label: string[N]")
    assert "top_labels: string[N, 2]" in signatures["serving_default"]
    loaded = tf.saved_model.load(str(tmp_path / "serving" / "1"))
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([p.read_bytes() for p in samples]))
    # the pixels the bytes signature decodes to, as floats, at another size (resized inside the model)
    pixels = np.stack([read_image(p, (SIZE, SIZE)) for p in samples]).astype("float32")
    from_floats = loaded.signatures["classify_images"](images=tf.constant(pixels))
    assert from_floats["label"].numpy().tolist() == from_bytes["label"].numpy().tolist()
    assert np.allclose(from_floats["probabilities"], from_bytes["probabilities"], atol=1e-4)
    rows = predict_json("classify", run_dir, samples)
    assert [label.decode() for label in from_bytes["label"].numpy()] == [r["label"] for r in rows]


# --- training phases -----------------------------------------------------------------------------


def test_phase_two_trains_only_the_top_layers_and_keeps_batchnorm_frozen(run_dir, samples):
    import keras

    from dlapps.shared import training
    from dlapps.shared.images import read_image

    model = training.load_model(run_dir, "classify")
    backbone = model.get_layer("backbone")
    assert model.set_phase("head") == [] and len(model.trainable_weights) == 2  # the classifier's kernel and bias
    trainable = model.set_phase("finetune", unfreeze=7)
    top = backbone.layers[-7:]
    assert trainable == [l.name for l in top if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    assert trainable == ["block3_conv", "block4_conv"] and all(not l.trainable for l in backbone.layers[:-7])
    assert all(not l.trainable for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization))
    # more than the backbone has: every layer with weights but BatchNorm (not the last few, as a negative slice would)
    everything = [l.name for l in backbone.layers if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    assert len(everything) > 2 and model.set_phase("finetune", unfreeze=len(backbone.layers) + 5) == everything
    trainable = model.set_phase("finetune", unfreeze=7)
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


def test_two_phases_from_a_weights_file_resume_after_ctrl_c_and_a_mismatched_file(tmp_path, monkeypatch):
    import keras

    from dlapps.apps.classify.app import APP
    from dlapps.apps.classify.model import make_backbone
    from dlapps.shared import training

    right = tmp_path / "tiny.weights.h5"
    make_backbone("tiny", SIZE).save_weights(right)
    wrong = tmp_path / "dense.weights.h5"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save_weights(wrong)
    out = tmp_path / "run"
    staging = tmp_path / ".run.training"
    common = ["--backbone", "tiny", "--image-size", str(SIZE), "--demo-size", "60", "--batch-size", "16", "--no-augment", "--out", str(out)]

    class CtrlC(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt  # after the run's own epoch-end callbacks saved the epoch

    own_callbacks = APP.callbacks

    def callbacks(model, splits, config):  # Ctrl-C at the end of phase two's first epoch
        return [*own_callbacks(model, splits, config), *([CtrlC()] if model.get_layer("backbone").trainable else [])]

    monkeypatch.setattr(APP, "callbacks", callbacks)
    interrupted = run_cli("classify", "train", "--weights", right, "--epochs", "2", "--unfreeze", "6", "--finetune-epochs", "9", *common)
    monkeypatch.undo()
    assert interrupted.exit_code == 130 and "--resume" in interrupted.stderr
    assert "Phase one" in interrupted.output and (staging / "checkpoints" / "head.done").exists() and not out.exists()

    result = run_cli("classify", "train", "--out", out, "--resume", "--finetune-epochs", "2")
    assert_ok(result)
    # phase one is not repeated; phase two continues at its first unfinished epoch
    assert "Phase one" not in result.output and "Phase two: top 6 backbone layers trainable (2 with weights)" in result.output
    epochs = [int(float(line.split(",")[0])) for line in (out / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 0, 1], epochs  # each phase counts its epochs from 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["head_phase"]["epochs_run"] == 2 and metrics["epochs_run"] == 4
    assert (out / "model.keras").exists() and not staging.exists()
    assert json.loads((out / "config.json").read_text())["unfreeze"] == 6
    # a model saved in phase two reloads in phase two: its optimizer state fits, Keras has nothing to say
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = training.load_model(out, "classify")
    assert model.phase == "finetune" and model.unfreeze == 6 and not caught, [str(w.message) for w in caught]
    assert len(model.trainable_weights) == 4  # block3_conv, block4_conv, the classifier's kernel and bias

    before = snapshot(out)
    assert_user_error(run_cli("classify", "train", "--weights", wrong, *common), str(wrong), "does not match the tiny backbone")
    assert snapshot(out) == before


def test_a_keras_applications_weights_file_loads_into_its_backbone(tmp_path):
    import keras

    from dlapps.apps.classify.model import ImageClassifier
    from dlapps.shared.backbones import load_backbone_weights

    file = tmp_path / "mobilenet_025.weights.h5"
    reference = keras.applications.MobileNet(input_shape=(SIZE, SIZE, 3), alpha=0.25, include_top=False, weights=None)
    reference.save_weights(file)
    model = ImageClassifier(["a", "b"], backbone="mobilenet", image_size=SIZE, alpha=0.25, augment=False)
    assert load_backbone_weights(model, str(file)) == f"weights from {file}"
    for loaded, saved in zip(model.get_layer("backbone").weights, reference.weights):
        assert np.array_equal(np.asarray(loaded), np.asarray(saved))


# --- data ----------------------------------------------------------------------------------------


def test_bad_images_are_skipped_with_a_warning_and_odd_pngs_are_converted(tmp_path, capsys):
    from dlapps.apps.classify.config import ClassifyConfig
    from dlapps.apps.classify.data import load_splits
    from dlapps.shared.images import decode_image

    for name, content in photos().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    root = tmp_path / "photos"
    rng = np.random.default_rng(2)
    good_jpeg = (root / "ants" / "0.jpg").read_bytes()
    (root / "ants" / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (root / "ants" / "notes.jpg").write_bytes(b"this is not an image\n")
    (root / "bees" / "imageNotFound.gif").write_bytes(image_bytes(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "GIF"))
    (root / "bees" / "empty.png").write_bytes(b"")
    (root / "bees" / "gray.png").write_bytes(image_bytes(rng.integers(0, 255, (10, 12), dtype=np.uint8)))
    (root / "bees" / "rgba.png").write_bytes(image_bytes(rng.integers(0, 255, (10, 12, 4), dtype=np.uint8)))
    sixteen = rng.integers(0, 65535, (10, 12), dtype=np.uint16)
    (root / "bees" / "sixteen.png").write_bytes(image_bytes(sixteen))

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


def test_a_folder_without_one_usable_image_names_each_file_then_fails(tmp_path):
    for name in ("ants", "bees"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        (tmp_path / "photos" / name / "x.jpg").write_bytes(b"nope")
    result = run_cli("classify", "train", "--data", tmp_path / "photos", "--out", tmp_path / "run", "--weights", "none")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and "Traceback" not in result.stderr and len(lines) == 4, result.stderr
    assert "ants/x.jpg: not a JPEG, PNG or BMP image" in lines[0] and "bees/x.jpg" in lines[1]
    assert "skipped 2 of 2 files" in lines[2] and lines[3].startswith("Error: ") and "no usable images" in lines[3]
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.training").exists()


def test_top_k_accuracy_with_two_classes_and_more():
    from dlapps.apps.classify.app import top_k_accuracy

    binary = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    assert top_k_accuracy(binary, [0, 0, 1], 1) == pytest.approx(1 / 3) and top_k_accuracy(binary, [0, 0, 1], 2) == 1.0
    three = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    assert top_k_accuracy(three, [1, 0], 2) == 0.5


# --- fine-tuning recipe: test-time flips, label smoothing, cosine schedule -----------------------


def test_test_time_flips_average_each_image_with_its_mirror_inside_the_model():
    from dlapps.apps.classify.model import ImageClassifier

    rng = np.random.default_rng(3)
    batch = rng.uniform(0, 255, (3, SIZE, SIZE + 8, 3)).astype("float32")  # not square: the flip is left-right
    plain = ImageClassifier(["a", "b", "c"], backbone="tiny", image_size=SIZE, augment=False, test_flip=False)
    flipping = ImageClassifier.from_config({**plain.get_config(), "test_flip": True})
    flipping.set_weights(plain.get_weights())  # the flip layers have no weights
    expected = (np.asarray(plain(batch, training=False)) + np.asarray(plain(batch[:, :, ::-1], training=False))) / 2
    assert np.allclose(np.asarray(flipping(batch, training=False)), expected, atol=1e-5)
    assert np.allclose(np.asarray(flipping.predict(batch, verbose=0)), expected, atol=1e-5)
    assert not np.allclose(expected, np.asarray(plain(batch, training=False)), atol=1e-5)  # the mirror images change the answer
    assert flipping(batch, training=True).shape == (3, 3)  # training sees the batch once


def test_label_smoothing_loss_and_cosine_rates():
    from dlapps.shared.training import cosine_rate
    from dlapps.apps.classify.model import SmoothedSparseCrossentropy

    probabilities = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype="float32")
    labels = np.array([0, 2])
    smoothed = float(SmoothedSparseCrossentropy(0.3)(labels, probabilities))
    targets = np.full((2, 3), 0.1) + 0.7 * np.eye(3)[labels]  # 1 - 0.3 + 0.3/3 on the label, 0.3/3 elsewhere
    assert smoothed == pytest.approx(float(np.mean(-(targets * np.log(probabilities)).sum(axis=1))), rel=1e-5)
    plain = float(SmoothedSparseCrossentropy(0.0)(labels, probabilities))
    assert plain == pytest.approx(float(np.mean(-np.log([0.7, 0.5]))), rel=1e-5)
    assert [cosine_rate(1e-3, e / 4) for e in (0, 2, 4)] == pytest.approx([1e-3, 5e-4, 0.0])
    assert [cosine_rate(1e-3, p, warmup=0.1) for p in (0.05, 0.1, 0.55, 1.0)] == pytest.approx([5.1e-4, 1e-3, 5e-4, 0.0], abs=1e-6)
