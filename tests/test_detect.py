"""detect: box geometry (IoU, encode/decode, NMS) on hand-made cases, COCO scoring, every data
format and bad input, and tiny YOLO and Faster R-CNN models trained once on the demo: they learn,
a flipped image's detections are the flipped boxes, save/load and the exported SavedModel on
image bytes answer as predict does."""

import io
import json
import shutil

import numpy as np
import pytest

from dlapps.shared.errors import UserError

from .contract import AnotherArchitecture, AppContract, trained
from .helpers import assert_ok, assert_user_error, run_cli

# tiny backbone, small images, no augmentation: a few seconds of CPU per epoch
TINY = ("--backbone", "tiny", "--weights", "none", "--image-size", "64", "--demo-size", "160", "--batch-size", "8",
        "--learning-rate", "0.004", "--max-boxes", "8", "--width", "16", "--no-augment")
EPOCHS = 4


def png(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def demo_files(folder, count=4, seed=11):
    """Fresh demo images (not the training ones) as PNG files, with their boxes and classes."""
    from dlapps.apps.detect.data import demo_image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        image, boxes, labels = demo_image(rng)
        path = folder / f"shape_{i}.png"
        path.write_bytes(png(image))
        rows.append((path, image, boxes, labels))
    return rows


# --- box geometry --------------------------------------------------------------------------------


def test_iou_on_hand_made_boxes_and_broadcasting():
    import keras

    from dlapps.apps.detect.model import box_iou

    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 0, 0]], dtype="float32")
    b = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], dtype="float32")
    iou = np.asarray(box_iou(a, b))
    expected = np.array([[1.0, 0.25], [25 / 175, 0.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(iou, expected, atol=1e-6)
    # anchors (N, 4) against a batch (B, M, 4) -> (B, N, M), as Keras computes it batch by batch
    batch = np.stack([b, b[::-1]])
    broadcast = np.asarray(box_iou(a, batch))
    assert broadcast.shape == (2, 4, 2)
    reference = np.asarray(keras.utils.bounding_boxes.compute_iou(np.stack([a, a]), batch, "xyxy"))
    np.testing.assert_allclose(broadcast, reference, atol=1e-5)


def test_box_encode_decode_round_trip():
    from dlapps.apps.detect.model import decode_boxes, encode_boxes, grid_anchors

    rng = np.random.default_rng(0)
    anchors = grid_anchors(4, [0.2, 0.4], [0.5, 1.0, 2.0])
    assert anchors.shape == (4 * 4 * 6, 4)
    corner = rng.uniform(0, 0.6, (len(anchors), 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.4, (len(anchors), 2))], axis=1).astype("float32")
    deltas = np.asarray(encode_boxes(anchors, boxes))
    assert np.all(np.isfinite(deltas))
    np.testing.assert_allclose(np.asarray(decode_boxes(anchors, deltas)), boxes, atol=1e-5)
    # a box equal to its anchor encodes to zero deltas
    np.testing.assert_allclose(np.asarray(encode_boxes(anchors, anchors)), 0.0, atol=1e-5)


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    from dlapps.apps.detect.model import non_max_suppression

    boxes = np.array([[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.5, 0.5]]], "float32")
    # classes: the first two boxes overlap (IoU 0.9) as class 0; box 3 is class 1; box 4 is class 1 at the same place as box 1
    scores = np.array([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.0, 0.6]]], "float32")
    found = {k: np.asarray(v) for k, v in non_max_suppression(boxes, scores, 0.05, 0.5, 10).items()}
    assert found["count"].tolist() == [3]
    kept = {(tuple(round(float(v), 2) for v in b), int(c)) for b, c in zip(found["boxes"][0][:3], found["classes"][0][:3])}
    assert kept == {((0.1, 0.1, 0.5, 0.5), 0), ((0.6, 0.6, 0.9, 0.9), 1), ((0.1, 0.1, 0.5, 0.5), 1)}
    assert found["scores"][0][:3].tolist() == pytest.approx([0.9, 0.7, 0.6])
    # a higher IoU threshold keeps the overlapping pair; a score threshold drops the weak ones
    assert np.asarray(non_max_suppression(boxes, scores, 0.05, 0.95, 10)["count"]).tolist() == [4]
    assert np.asarray(non_max_suppression(boxes, scores, 0.65, 0.5, 10)["count"]).tolist() == [2]


def test_ground_truth_scored_as_predictions_gives_map_one(tmp_path):
    from dlapps.apps.detect.app import coco_scores
    from dlapps.apps.detect.data import demo

    truth = demo(30, seed=3)
    perfect = [[(box, 1.0, name) for box, name in zip(boxes, labels)] for boxes, labels in zip(truth.boxes, truth.labels)]
    metrics = coco_scores(truth, perfect, list(truth.class_names), plot=tmp_path / "pr.png")
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    assert all(v["ap"] == pytest.approx(1.0) for v in metrics["per_class"].values())
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"
    # shifted by half their width, boxes miss at IoU 0.5 and the score falls to zero
    shifted = [[(np.asarray(box) + [(box[2] - box[0]) * 0.6, 0, (box[2] - box[0]) * 0.6, 0], 1.0, name)
                for box, name in zip(boxes, labels)] for boxes, labels in zip(truth.boxes, truth.labels)]
    assert coco_scores(truth, shifted, list(truth.class_names))["map50"] == pytest.approx(0.0)


def test_kept_epoch_has_the_best_map50_to_three_decimals_then_the_best_map():
    from dlapps.apps.detect.app import selection_score

    # mAP@0.5 saturated (equal to three decimals): the epoch with the tighter boxes is kept
    assert selection_score(0.9998, 0.85) > selection_score(1.0, 0.80)
    # otherwise a better mAP@0.5 wins, whatever mAP@[.5:.95] says
    assert selection_score(1.0, 0.30) > selection_score(0.999, 0.90)
    assert selection_score(0.951, 0.0) > selection_score(0.95, 1.0)


def test_yolo_keeps_the_lowest_validation_loss_and_faster_rcnn_the_best_validation_map():
    from dlapps.apps.detect.app import APP
    from dlapps.apps.detect.config import DetectConfig

    assert APP.checkpoint_selection(DetectConfig(arch="yolo"))[:2] == ("val_loss", "min")
    assert APP.checkpoint_selection(DetectConfig(arch="faster-rcnn"))[:2] == ("val_selection", "max")
    assert APP.checkpoint_selection(DetectConfig(arch="faster-rcnn", val_fraction=0))[:2] == ("loss", "min")


# --- data ----------------------------------------------------------------------------------------


def test_demo_boxes_frame_their_shapes():
    from dlapps.apps.detect.data import demo_image

    rng = np.random.default_rng(5)
    for _ in range(20):
        image, boxes, labels = demo_image(rng)
        height, width = image.shape[:2]
        assert len(boxes) == len(labels) <= 3
        for x1, y1, x2, y2 in boxes.astype(int):
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            inside = image[y1:y2, x1:x2].astype(float)
            ring = np.concatenate([image[max(0, y1 - 3):y1, x1:x2].reshape(-1, 3), image[y2:y2 + 3, x1:x2].reshape(-1, 3)])
            # the shape's colour differs from the background around it: the box holds pixels that the ring does not
            if len(ring):
                assert np.abs(inside.reshape(-1, 3)[:, None] - ring.mean(axis=0)).sum(-1).max() > 60


def write_voc(folder, rows):
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    for path, image, boxes, labels in rows:
        shutil.copy(path, folder / "JPEGImages" / path.name)
        objects = "".join(
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for b, name in zip(boxes, labels))
        (folder / "Annotations" / f"{path.stem}.xml").write_text(
            f"<annotation><filename>{path.name}</filename><size><width>{image.shape[1]}</width>"
            f"<height>{image.shape[0]}</height></size>{objects}</annotation>")


def write_yolo(folder, rows, classes):
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "data.yaml").write_text("names: [" + ", ".join(classes) + "]\n")
    for path, image, boxes, labels in rows:
        shutil.copy(path, folder / "images" / path.name)
        height, width = image.shape[:2]
        lines = [f"{classes.index(n)} {(b[0] + b[2]) / 2 / width} {(b[1] + b[3]) / 2 / height} {(b[2] - b[0]) / width} "
                 f"{(b[3] - b[1]) / height}" for b, n in zip(boxes, labels)]
        (folder / "labels" / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")


def write_coco(folder, rows, classes):
    folder.mkdir(parents=True)
    content = {"images": [], "annotations": [], "categories": [{"id": i + 7, "name": n} for i, n in enumerate(classes)]}
    for image_id, (path, image, boxes, labels) in enumerate(rows):
        shutil.copy(path, folder / path.name)
        content["images"].append({"id": image_id, "file_name": path.name, "width": image.shape[1], "height": image.shape[0]})
        for b, n in zip(boxes, labels):
            content["annotations"].append({"id": len(content["annotations"]), "image_id": image_id, "category_id": classes.index(n) + 7,
                                           "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    (folder / "instances.json").write_text(json.dumps(content))


def write_csv(folder, rows):
    (folder / "images").mkdir(parents=True)
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for path, image, boxes, labels in rows:
        shutil.copy(path, folder / "images" / path.name)
        lines += [f"{path.name},{image.shape[1]},{image.shape[0]},{n},{b[0]},{b[1]},{b[2]},{b[3]}" for b, n in zip(boxes, labels)]
        if not len(labels):
            lines.append(f"{path.name},{image.shape[1]},{image.shape[0]},,,,,")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("layout", ["voc", "yolo", "coco", "csv"])
def test_every_format_reads_the_same_boxes(tmp_path, layout):
    from dlapps.apps.detect.data import DEMO_CLASSES, read_local

    rows = demo_files(tmp_path / "source", count=4)
    classes = list(DEMO_CLASSES)
    folder = tmp_path / layout
    {"voc": lambda: write_voc(folder, rows), "yolo": lambda: write_yolo(folder, rows, classes),
     "coco": lambda: write_coco(folder, rows, classes), "csv": lambda: write_csv(folder, rows)}[layout]()
    dataset, val = read_local(folder)
    assert val is None
    by_name = {p.split("/")[-1]: (b, l, s) for p, b, l, s in zip(dataset.sources, dataset.boxes, dataset.labels, dataset.sizes)}
    assert sorted(by_name) == sorted(path.name for path, *_ in rows)
    for path, image, boxes, labels in rows:
        read_boxes, read_labels, size = by_name[path.name]
        assert read_labels == labels and size == (image.shape[1], image.shape[0])
        np.testing.assert_allclose(read_boxes, boxes, atol=1e-3)


def test_boxes_outside_the_image_are_clipped_and_empty_ones_dropped(tmp_path, capsys):
    from dlapps.apps.detect.data import read_csv

    rows = demo_files(tmp_path / "source", count=1)
    path, image, _, _ = rows[0]
    height, width = image.shape[:2]
    (tmp_path / "boxes.csv").write_text(
        "filename,class,xmin,ymin,xmax,ymax\n"
        f"{path},circle,-10,5,20,{height + 30}\n"  # reaches outside: clipped
        f"{path},square,10,10,10,40\n"  # no width: dropped
        f"{path},square,{width + 5},0,{width + 20},10\n"  # wholly outside: dropped
        f"{path},triangle,1,2,30,40\n")
    dataset = read_csv(tmp_path / "boxes.csv")
    assert dataset.labels == [["circle", "triangle"]]
    np.testing.assert_allclose(dataset.boxes[0], [[0, 5, 20, height], [1, 2, 30, 40]])
    assert dataset.notes["clipped_boxes"] == 1 and dataset.notes["dropped_boxes"] == 2
    assert "clipped 1 boxes" in capsys.readouterr().err


def test_yolo_image_without_label_file_is_background_and_corrupt_images_are_skipped(tmp_path, capsys):
    from dlapps.apps.detect.data import read_local

    rows = demo_files(tmp_path / "source", count=3)
    write_yolo(tmp_path / "set", rows, ["circle", "square", "triangle"])
    (tmp_path / "set" / "labels" / "shape_0.txt").unlink()
    (tmp_path / "set" / "images" / "broken.png").write_bytes(png(rows[0][1])[:200])
    dataset, _ = read_local(tmp_path / "set")
    assert len(dataset) == 3
    assert dataset.notes["images_without_label_file"] == 2  # shape_0 and broken.png (skipped afterwards)
    assert dataset.notes["skipped_images"] == 1
    assert dataset.boxes[dataset.names.index(str(tmp_path / "set" / "images" / "shape_0.png"))].shape == (0, 4)
    err = capsys.readouterr().err
    assert "broken.png" in err and "read as background" in err


@pytest.mark.parametrize("content, fragments", [
    ("0 0.5 0.5 0.2\n", ["shape_0.txt: line 1", "expected 'class cx cy w h'"]),
    ("x 0.5 0.5 0.2 0.2\n", ["line 1", "class id 'x'"]),
    ("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n", ["line 2", "class id 7"]),
    ("0 0.5 zero 0.2 0.2\n", ["line 1", "cy is not a number"]),
])
def test_bad_yolo_labels_are_one_line_errors(tmp_path, content, fragments):
    from dlapps.apps.detect.data import read_local

    rows = demo_files(tmp_path / "source", count=1)
    write_yolo(tmp_path / "set", rows, ["circle", "square", "triangle"])
    (tmp_path / "set" / "labels" / "shape_0.txt").write_text(content)
    with pytest.raises(UserError) as error:
        read_local(tmp_path / "set")
    assert "\n" not in str(error.value) and all(f in str(error.value) for f in fragments)


def test_annotations_naming_missing_images_or_bad_fields_are_one_line_errors(tmp_path):
    from dlapps.apps.detect.data import read_local

    rows = demo_files(tmp_path / "source", count=2)
    write_voc(tmp_path / "voc", rows)
    (tmp_path / "voc" / "JPEGImages" / "shape_1.png").unlink()
    with pytest.raises(UserError, match=r"shape_1.xml: image 'shape_1.png' not found"):
        read_local(tmp_path / "voc")
    write_csv(tmp_path / "csv", rows)
    text = (tmp_path / "csv" / "labels.csv").read_text().splitlines()
    text[2] = text[2].replace(text[2].split(",")[4], "left")
    (tmp_path / "csv" / "labels.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(UserError, match=r"labels.csv: line 3: xmin is not a number: 'left'"):
        read_local(tmp_path / "csv")
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "a.json").write_text('{"images": [{"id": 1, "file_name": "x.png"}], ')
    with pytest.raises(UserError, match="a.json: not valid JSON"):
        read_local(tmp_path / "coco" / "a.json")


def test_pipeline_normalises_pads_and_flips_boxes_with_the_pixels():
    import keras

    from dlapps.apps.detect.data import augmentation, dataset, demo

    data = demo(6, seed=2)
    index = {name: i for i, name in enumerate(data.class_names)}
    images, targets = next(iter(dataset(data, index, 64, batch_size=6, max_boxes=5)))
    assert images.shape == (6, 64, 64, 3) and targets["boxes"].shape == (6, 5, 4)
    for i, (boxes, (width, height)) in enumerate(zip(data.boxes, data.sizes)):
        n = len(boxes)
        np.testing.assert_allclose(targets["boxes"][i][:n], boxes / [width, height, width, height], atol=1e-6)
        assert (targets["classes"][i][n:].numpy() == -1).all() and (targets["boxes"][i][n:].numpy() == -1).all()
    flip = augmentation()[0]
    assert isinstance(flip, keras.layers.RandomFlip)
    flipped = flip({"images": images, "bounding_boxes": {"boxes": targets["boxes"], "labels": targets["classes"]}}, training=True)
    for i in range(6):
        boxes, mirrored = targets["boxes"][i].numpy(), flipped["bounding_boxes"]["boxes"][i].numpy()
        valid = targets["classes"][i].numpy() >= 0
        was_flipped = not np.allclose(flipped["images"][i], images[i])
        expected = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1) if was_flipped else boxes
        np.testing.assert_allclose(mirrored[valid], expected[valid], atol=1e-5)
        if was_flipped:
            np.testing.assert_allclose(flipped["images"][i], images[i][:, ::-1], atol=1e-4)


# --- the contract, for each architecture ---------------------------------------------------------


def bad_input(files: dict, fragments: list):
    """A bad data set (files under the test's tmp folder) and the fragments of its one-line error."""
    return (files, ["--data", "{tmp}/" + next(iter(files)).split("/")[0]], fragments)


def a_png() -> bytes:
    return png(np.full((40, 50, 3), 120, dtype=np.uint8))


class TestYoloContract(AppContract):
    app = "detect"
    train_args = TINY + ("--arch", "yolo")
    epochs = EPOCHS
    # validation mAP@0.5 of the untrained model is about 0.0001
    learned = {"val_map50": (0.002, 1.0)}
    # a low threshold in the export test, so that its comparison has many boxes to compare
    export_options = ("--conf", "0.01", "--max-det", "20")
    # the killed run's epochs: a quarter of the images (mixed precision is slow on CPU)
    resume_args = ("--demo-size", "40")
    evaluate_keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "per_class", "images", "objects")
    # tfds.testing.mock_data draws detection sets with bbox and label lists of different lengths, so
    # training on them is not possible; test_tfds_reader_offline_with_mock_data reads one instead
    tfds_name = ""
    bad_train_inputs = [
        bad_input({"yolo/images/a.png": a_png(), "yolo/labels/a.txt": b"0 0.5 0.5 0.2\n"}, ["a.txt: line 1", "expected 'class cx cy w h'"]),
        bad_input({"voc/Annotations/a.xml": b"<annotation><filename>gone.jpg</filename></annotation>"}, ["a.xml", "image 'gone.jpg' not found"]),
        bad_input({"voc2/Annotations/a.xml": b"<annotation><filename"}, ["a.xml", "not valid XML"]),
        bad_input({"boxes.csv": b"filename,label\na.jpg,cat\n"}, ["boxes.csv: line 1", "header lacks xmin, ymin, xmax, ymax"]),
        bad_input({"empty/images/a.png": a_png(), "empty/labels/a.txt": b""}, ["empty", "no boxes in any image"]),
        bad_input({"notes/readme.md": b"hello"}, ["notes", "no detection data found"]),
        ({}, ["--data", "tfds:voc/2070"], ["tfds:voc/2070"]),
        ({}, ["--image-size", "100"], ["--image-size must be a multiple of 32"]),
        ({}, ["--backbone", "mobilenet", "--weights", "{tmp}/none.h5"], ["none.h5", "no such weights file"]),
        ({}, ["--weights", "imagenet"], ["--backbone tiny has no ImageNet weights"]),
        ({}, ["--arch", "rcnn"], ["--arch must be one of", "faster-rcnn"]),
        ({}, ["--anchor-ratios", "1,0"], ["--anchor-ratios must be above 0 and at most 10", "got [1.0, 0.0]"]),
    ]

    def make_inputs(self, tmp_path):
        return [str(path) for path, *_ in demo_files(tmp_path / "inputs", count=3, seed=21)]

    def check_predictions(self, rows, inputs):
        from PIL import Image

        from dlapps.apps.detect.data import DEMO_CLASSES

        assert [r["path"] for r in rows] == inputs
        for row, path in zip(rows, inputs):
            with Image.open(path) as picture:
                assert (row["width"], row["height"]) == picture.size
            assert row["count"] == len(row["objects"])
            for item in row["objects"]:
                x1, y1, x2, y2 = item["box"]
                assert 0 <= x1 <= x2 <= row["width"] and 0 <= y1 <= y2 <= row["height"]
                assert item["class"] in DEMO_CLASSES and 0.25 <= item["score"] <= 1

    def serving_call(self, inputs):
        return {"images": [open(p, "rb").read() for p in inputs]}, ("images",), "serving_default"

    def check_served(self, served, rows):
        assert all(row["count"] > 0 for row in rows) and np.asarray(served["boxes"]).shape == (len(rows), 20, 4)
        assert_served_equals_predicted(served, rows)


@pytest.mark.slow  # what depends on the model again; the reader, CLI and errors are shared (checked by the YOLO class)
class TestFasterRCNNContract(AnotherArchitecture, TestYoloContract):
    train_args = TINY + ("--arch", "faster-rcnn", "--proposals", "32", "--head-units", "64")
    bad_train_inputs = [({}, ["--roi-size", "1"], ["--roi-size must be between 2 and 32"]),
                        ({}, ["--proposals", "0"], ["--proposals must be between 1 and 2000"])]


def assert_served_equals_predicted(served, rows):
    """The SavedModel's padded outputs hold predict's detections, in the same order."""
    assert served["count"] == [r["count"] for r in rows]
    slots = len(served["scores"][0])
    for i, row in enumerate(rows):
        count, objects = row["count"], row["objects"]
        names = served["class_names"][i * slots:(i + 1) * slots]  # string outputs come back flattened
        assert names[:count] == [o["class"] for o in objects] and all(n == "" for n in names[count:])
        assert served["classes"][i][:count] == [o["class_index"] for o in objects]
        assert all(c == -1 for c in served["classes"][i][count:])
        np.testing.assert_allclose(np.asarray(served["boxes"][i][:count]).reshape(-1, 4),
                                   np.asarray([o["box"] for o in objects]).reshape(-1, 4), atol=0.01)
        np.testing.assert_allclose(served["scores"][i][:count], [o["score"] for o in objects], atol=1e-4)


# --- behaviour of the trained models -------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory):
    return trained(tmp_path_factory, "detect", "--epochs", str(EPOCHS), *TestYoloContract.train_args)


def test_predict_draws_boxes_and_folders_skip_bad_files(yolo_run, tmp_path):
    from PIL import Image

    inputs = demo_files(tmp_path / "inputs", count=2, seed=5)
    (tmp_path / "inputs" / "notes.txt").write_text("not an image")
    result = run_cli("detect", "predict", tmp_path / "inputs", "--model", yolo_run, "--conf", "0.01", "--max-det", "3",
                     "--save-dir", tmp_path / "drawn", "--json")
    assert_ok(result)
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and "notes.txt" in result.stderr
    for row, (path, image, _, _) in zip(rows, inputs):
        drawn = np.asarray(Image.open(row["annotated"]).convert("RGB"))
        assert drawn.shape == image.shape and row["count"] == 3
        assert (np.abs(drawn.astype(int) - image).sum(-1) > 60).any()  # the boxes are drawn over the pixels
    assert_user_error(run_cli("detect", "predict", tmp_path / "inputs" / "notes.txt", "--model", yolo_run),
                      "notes.txt", "not a JPEG, PNG or BMP image")


def test_evaluate_on_another_format_and_unknown_classes(yolo_run, tmp_path):
    rows = demo_files(tmp_path / "source", count=4, seed=6)
    write_csv(tmp_path / "set", rows)
    result = run_cli("detect", "evaluate", "--model", yolo_run, "--data", tmp_path / "set" / "labels.csv", "--json",
                     "--plot", tmp_path / "pr.png")
    assert_ok(result)
    metrics = json.loads(result.output)
    assert metrics["images"] == 4 and metrics["objects"] == sum(len(r[3]) for r in rows)
    assert (tmp_path / "pr.png").exists()
    text = (tmp_path / "set" / "labels.csv").read_text().replace(",circle,", ",hexagon,").replace(",square,", ",hexagon,")
    (tmp_path / "set" / "labels.csv").write_text(text)
    assert_user_error(run_cli("detect", "evaluate", "--model", yolo_run, "--data", tmp_path / "set" / "labels.csv"),
                      "classes ['hexagon'] are not among the model's classes")


def test_flipped_image_detections_are_the_flipped_boxes(yolo_run):
    """The model is not built mirror-symmetric (and the tiny run trains without flips), but what it
    finds in a mirrored image is mostly what it finds in the image, mirrored: most of its best boxes
    have a mirrored partner of their class at IoU > 0.5."""
    from dlapps.apps.detect.app import detect_batches
    from dlapps.apps.detect.data import demo_image
    from dlapps.apps.detect.model import box_iou
    from dlapps.shared import training

    model = training.load_model(yolo_run, "detect")
    rng = np.random.default_rng(8)
    pictures = [demo_image(rng)[0] for _ in range(8)]
    found = detect_batches(model, [png(p) for p in pictures], 0.05, 0.5, 2, 8)
    mirrored = detect_batches(model, [png(p[:, ::-1].copy()) for p in pictures], 0.01, 0.5, 50, 8)
    overlaps = []
    for picture, original, flipped in zip(pictures, found, mirrored):
        width = picture.shape[1]
        for item in original["objects"]:
            x1, y1, x2, y2 = item["box"]
            expected = np.array([[width - x2, y1, width - x1, y2]], dtype="float32")
            partners = np.array([o["box"] for o in flipped["objects"] if o["class"] == item["class"]], dtype="float32").reshape(-1, 4)
            overlaps.append(float(np.asarray(box_iou(expected, partners)).max()) if len(partners) else 0.0)
    assert len(overlaps) >= 4, overlaps
    assert np.mean(np.asarray(overlaps) > 0.5) >= 0.6, overlaps


def test_faster_rcnn_components_learn_a_fixed_batch():
    """Both stages' losses fall when the model fits one batch: the RPN learns its anchors, the head its RoIs."""
    import keras

    from dlapps.apps.detect import model as detect_model
    from dlapps.apps.detect.config import DetectConfig
    from dlapps.apps.detect.data import dataset, demo

    keras.utils.set_random_seed(1)
    data = demo(8, seed=1)
    config = DetectConfig(arch="faster-rcnn", backbone="tiny", weights="none", image_size=64, width=16, proposals=16, head_units=32)
    model = detect_model.build_detector("faster-rcnn", list(data.class_names), config, freeze_batchnorm=False)
    model.compile(optimizer=keras.optimizers.Adam(0.003))
    images, targets = next(iter(dataset(data, {n: i for i, n in enumerate(data.class_names)}, 64, 8, 8)))

    def losses():
        outputs = model(images, training=False)
        boxes, classes = detect_model.trim_targets(targets)
        rpn = model._rpn_loss(boxes, classes >= 0, outputs["objectness"], outputs["deltas"])
        proposals, valid = model.propose(outputs["objectness"], outputs["deltas"])
        rois = np.concatenate([proposals, np.where((classes >= 0)[..., None], boxes, 0.0)], axis=1)
        head = model._head_loss(outputs["features"], rois, np.concatenate([valid, classes >= 0], axis=1), boxes, classes)
        return float(rpn), float(head)

    before = losses()
    model.fit(images, targets, epochs=30, batch_size=8, verbose=0)
    after = losses()
    assert after[0] < 0.7 * before[0] and after[1] < 0.7 * before[1], (before, after)


def test_backbone_weights_load_from_files_into_the_cut_and_the_tiny_backbones(tmp_path):
    """shared.backbones: a keras.applications file fills the backbone cut at its feature maps (copied
    by layer name), the tiny CNN takes a file of its own weights, and mismatches are one-line errors."""
    import keras

    from dlapps.apps.detect import model as detect_model
    from dlapps.apps.detect.config import DetectConfig
    from dlapps.shared.backbones import load_backbone_weights
    from dlapps.shared.errors import UserError

    def detector(backbone):
        config = DetectConfig(backbone=backbone, alpha=0.25, weights="none", image_size=64, width=16)
        return detect_model.build_detector("yolo", ["a", "b"], config, freeze_batchnorm=False)

    reference = keras.applications.MobileNet(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=None)
    mobilenet_file = tmp_path / "mobilenet_025.weights.h5"
    reference.save_weights(mobilenet_file)
    model = detector("mobilenet")
    assert load_backbone_weights(model, str(mobilenet_file)) == f"weights from {mobilenet_file}"
    backbone = model.get_layer("backbone")
    copied = [layer for layer in reference.layers if layer.weights]
    assert len(copied) > 40
    for layer in copied:
        for loaded, saved in zip(backbone.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(loaded, saved)

    trained = detector("tiny")
    tiny_file = tmp_path / "tiny.weights.h5"
    trained.get_layer("backbone").save_weights(tiny_file)
    fresh = detector("tiny")
    assert load_backbone_weights(fresh, str(tiny_file)) == f"weights from {tiny_file}"
    for loaded, saved in zip(fresh.get_layer("backbone").get_weights(), trained.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(loaded, saved)
    with pytest.raises(UserError, match=r"mobilenet_025.weights.h5: does not match the tiny backbone without top"):
        load_backbone_weights(fresh, str(mobilenet_file))
    with pytest.raises(UserError, match="--backbone tiny has no ImageNet weights"):
        load_backbone_weights(fresh, "imagenet")
    with pytest.raises(UserError, match="gone.h5: no such weights file"):
        load_backbone_weights(fresh, str(tmp_path / "gone.h5"))


def test_tfds_reader_offline_with_mock_data():
    import tensorflow_datasets as tfds

    from dlapps.apps.detect.data import read_tfds
    from dlapps.shared.data import parse_data_spec

    with tfds.testing.mock_data(num_examples=6):
        dataset = read_tfds(parse_data_spec("tfds:voc/2007"), "train")
    assert len(dataset) == 6 and dataset.encoded and len(dataset.class_names) == 20
    for source, (width, height), boxes, labels in zip(dataset.sources, dataset.sizes, dataset.boxes, dataset.labels):
        assert source[:4] == b"\x89PNG" and len(boxes) == len(labels)
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
