"""Detect data: the generated demo (shapes on textured backgrounds, with their boxes), Pascal VOC
XML folders, YOLO txt labels (``images/`` + ``labels/``), COCO JSON, CSV rows of
``filename,width,height,class,xmin,ymin,xmax,ymax`` (the raccoon layout) and ``tfds:voc/2007``.

Every reader returns a :class:`DetectionSet`: image sources (file paths or encoded bytes), each
image's size and its boxes in the image's own pixels (xmin, ymin, xmax, ymax) with class names.
Boxes reaching outside their image are clipped and boxes of no area dropped, with one warning
giving the counts; files that are not usable images are skipped with a warning naming each; an
image without boxes is valid (background). The tf.data pipeline (:func:`dataset`) decodes and
resizes in parallel, normalises the boxes to [0, 1] and pads them to a fixed count per image.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlapps.shared import data as data_lib
from dlapps.shared import images
from dlapps.shared.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class DetectionSet:
    sources: list  # file paths (str) or encoded image bytes, one per image
    sizes: list  # (width, height) of each image in pixels
    boxes: list  # float32 (n, 4) arrays: xmin, ymin, xmax, ymax in the image's pixels
    labels: list  # class names, one list per image, one name per box
    names: list  # a display name per image (the file path, or demo-00012.png)
    encoded: bool = False  # True: `sources` hold encoded bytes, not paths
    class_names: list = field(default_factory=list)  # declared class order (classes file, COCO categories), if any
    notes: dict = field(default_factory=dict)  # counts of what was clipped, dropped or skipped

    def __len__(self):
        return len(self.sources)

    def subset(self, indices) -> "DetectionSet":
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return DetectionSet(pick(self.sources), pick(self.sizes), pick(self.boxes), pick(self.labels), pick(self.names),
                            self.encoded, list(self.class_names), dict(self.notes))

    @property
    def objects(self) -> int:
        return sum(len(b) for b in self.boxes)

    def label_names(self) -> list[str]:
        """The declared class order when the source has one, else the sorted names that occur."""
        found = sorted({name for row in self.labels for name in row})
        if self.class_names:
            return list(self.class_names) + [n for n in found if n not in self.class_names]
        return found


class BoxChecker:
    """Clips boxes to their image and drops boxes of no area, counting both for one warning."""

    def __init__(self):
        self.clipped = 0
        self.dropped = 0

    def __call__(self, boxes, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(kept boxes, index of each kept box in `boxes`)."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        clipped = boxes.copy()
        clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
        clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        self.clipped += int(np.sum(np.any(clipped != boxes, axis=1) & keep))
        self.dropped += int(np.sum(~keep))
        return clipped[keep], np.flatnonzero(keep)

    def report(self, source, notes: dict, stream=None) -> None:
        notes["clipped_boxes"] = notes.get("clipped_boxes", 0) + self.clipped
        notes["dropped_boxes"] = notes.get("dropped_boxes", 0) + self.dropped
        if self.clipped or self.dropped:
            print(f"Warning: {source}: clipped {self.clipped} boxes reaching outside their image, "
                  f"dropped {self.dropped} of zero area", file=stream or sys.stderr)


# --- demo: shapes on textured backgrounds --------------------------------------------------------

DEMO_CLASSES = ("circle", "square", "triangle")


def _colour(rng, avoid=None):
    while True:
        colour = rng.uniform(0, 255, 3)
        if avoid is None or np.abs(colour - avoid).sum() > 220:
            return colour


def _background(rng, height: int, width: int) -> np.ndarray:
    """A low-contrast texture (stripes, checks or a gradient) with pixel noise, float RGB."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = _colour(rng)
    other = np.clip(base + rng.uniform(-60, 60, 3), 0, 255)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
        mix = (np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period) > 0).astype(np.float32)
    elif kind == 1:  # checks
        period = rng.uniform(8, 24)
        mix = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    else:  # a smooth gradient
        angle = rng.uniform(0, 2 * np.pi)
        mix = (x * np.cos(angle) + y * np.sin(angle))
        mix = (mix - mix.min()) / max(1e-6, float(np.ptp(mix)))
    return base * (1 - mix[..., None]) + other * mix[..., None]


def _shape_mask(kind: str, height: int, width: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    if kind == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if kind == "square":
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        half = radius * 0.8
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "triangle":
        corners = [(cx + radius * np.cos(angle + k * 2 * np.pi / 3), cy + radius * np.sin(angle + k * 2 * np.pi / 3)) for k in range(3)]
        mask = np.ones((height, width), dtype=bool)
        for (x1, y1), (x2, y2) in zip(corners, corners[1:] + corners[:1]):
            # inside = on the same side of every edge as the centre
            side = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
            mask &= side * ((x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)) >= 0
        return mask
    raise ValueError(f"unknown demo class {kind!r}")


def demo_image(rng: np.random.Generator, max_objects: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One uint8 RGB image of random size (96-192 pixels a side) with 0 to `max_objects` shapes that
    do not overlap; returns (image, boxes (n, 4) as pixel xmin ymin xmax ymax, class names). A box
    is the tight frame of its shape's pixels."""
    height, width = (int(v) for v in rng.integers(96, 193, 2))
    image = _background(rng, height, width)
    boxes, labels, taken = [], [], np.zeros((height, width), dtype=bool)
    count = int(rng.integers(1, max_objects + 1)) if rng.uniform() > 0.05 else 0  # a few empty images: background
    for _ in range(count * 10):  # attempts; a shape that would overlap another is redrawn elsewhere
        if len(boxes) == count:
            break
        kind = DEMO_CLASSES[int(rng.integers(len(DEMO_CLASSES)))]
        radius = rng.uniform(0.12, 0.26) * min(height, width)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        mask = _shape_mask(kind, height, width, cx, cy, radius, rng.uniform(0, 2 * np.pi))
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows) or (mask & taken).any():
            continue
        frame = np.zeros_like(taken)
        frame[max(0, rows[0] - 2): rows[-1] + 3, max(0, cols[0] - 2): cols[-1] + 3] = True
        taken |= frame  # a margin keeps the shapes' frames apart too
        image = np.where(mask[..., None], _colour(rng, avoid=image[mask].mean(axis=0)), image)
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(kind)
    image = image + rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels


def demo(size: int = 400, seed: int = 0) -> DetectionSet:
    """`size` PNG-encoded demo images with their boxes, from a seeded generator."""
    rng = np.random.default_rng(seed)
    sources, sizes, boxes, labels = [], [], [], []
    for _ in range(size):
        image, image_boxes, image_labels = demo_image(rng)
        sources.append(images.encode_png(image))
        sizes.append((image.shape[1], image.shape[0]))
        boxes.append(image_boxes)
        labels.append(image_labels)
    names = [f"demo-{i:05d}.png" for i in range(size)]
    return DetectionSet(sources, sizes, boxes, labels, names, encoded=True, class_names=list(DEMO_CLASSES))


# --- local formats -------------------------------------------------------------------------------


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header (no decoding: PIL reads the size lazily)."""
    from PIL import Image

    with Image.open(path) as picture:
        return picture.size


def _assemble(entries: list[tuple[Path, list, list[str]]], source, class_names=(), background: int = 0) -> DetectionSet:
    """(image path, pixel boxes, class names) rows -> a DetectionSet: unusable images skipped with
    a warning each, boxes clipped or dropped with a count."""
    paths = [path for path, _, _ in entries]
    good, skipped = images.check_images(paths, what=str(source))
    checker = BoxChecker()
    result = DetectionSet([], [], [], [], [], class_names=list(class_names))
    for index in good:
        path, boxes, labels = entries[index]
        width, height = image_size_of(path)
        kept, keep_index = checker(boxes, width, height)
        result.sources.append(str(path))
        result.sizes.append((width, height))
        result.boxes.append(kept)
        result.labels.append([labels[i] for i in keep_index])
        result.names.append(str(path))
    checker.report(source, result.notes)
    result.notes["skipped_images"] = len(skipped)
    result.notes["background_images"] = sum(1 for b in result.boxes if not len(b))
    if background:
        result.notes["images_without_label_file"] = background
    return result


def _number(text, where: str, what: str) -> float:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        raise UserError(f"{where}: {what} is not a number: {text!r}")
    if not np.isfinite(value):
        raise UserError(f"{where}: {what} is not a finite number: {text!r}")
    return value


def _find_image(name: str, folders: list[Path], where: str) -> Path:
    for folder in folders:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(f) for f in folders)
    raise UserError(f"{where}: image {name!r} not found (looked in {searched})")


def read_voc(folder: Path) -> DetectionSet:
    """Pascal VOC: XML files in ``Annotations/`` (or ``annotations/``, or the folder itself), each
    naming its image, found in ``JPEGImages/``, ``images/``, beside the XML or by its ``<path>``.
    Objects marked ``difficult`` are kept (VOC's own scoring ignores them; COCO's has no such flag)."""
    xml_dir = next((folder / n for n in ("Annotations", "annotations") if (folder / n).is_dir()), folder)
    files = sorted(xml_dir.glob("*.xml"))
    if not files:
        raise UserError(f"{folder}: no Pascal VOC .xml files found")
    image_dirs = [folder / n for n in ("JPEGImages", "images", "Images") if (folder / n).is_dir()] + [xml_dir, folder]
    entries = []
    for path in files:
        try:
            root = ElementTree.parse(path).getroot()
        except ElementTree.ParseError as error:
            raise UserError(f"{path}: not valid XML ({error})")
        name = (root.findtext("filename") or "").strip()
        if not name:
            raise UserError(f"{path}: no <filename>")
        recorded = Path((root.findtext("path") or "").strip())
        dirs = image_dirs + ([recorded.parent] if str(recorded) not in ("", ".") else [])
        image = _find_image(name, dirs, str(path))
        boxes, labels = [], []
        for number, obj in enumerate(root.findall("object"), start=1):
            where = f"{path}: object {number}"
            label = (obj.findtext("name") or "").strip()
            if not label:
                raise UserError(f"{where}: no <name>")
            box = obj.find("bndbox")
            if box is None:
                raise UserError(f"{where}: no <bndbox>")
            boxes.append([_number(box.findtext(k), where, k) for k in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(label)
        entries.append((image, boxes, labels))
    return _assemble(entries, folder)


def _yolo_class_names(folder: Path) -> list[str]:
    """Class names of a YOLO dataset: data.yaml/dataset.yaml ``names`` (list or {id: name}), else
    classes.txt / obj.names, one per line; [] when none is there (the ids become the names)."""
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        path = folder / name
        if path.is_file():
            import yaml

            try:
                content = yaml.safe_load(data_lib.read_text(path)) or {}
            except yaml.YAMLError as error:
                raise UserError(f"{path}: not valid YAML: {str(error).splitlines()[0]}")
            names = content.get("names") if isinstance(content, dict) else None
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names, key=int)]
            if isinstance(names, list):
                return [str(n) for n in names]
            raise UserError(f"{path}: no 'names' list of class names")
    for name in ("classes.txt", "obj.names", "classes.names"):
        if (folder / name).is_file():
            return [line.strip() for line in data_lib.read_lines(folder / name)]
    return []


def read_yolo(folder: Path, part: str = "") -> DetectionSet:
    """YOLO txt labels: ``images/[PART/]NAME.jpg`` with ``labels/[PART/]NAME.txt``, one line per
    box: ``class_id cx cy w h``, normalised to [0, 1]. An image without a label file is background
    (as ultralytics reads it), counted in the notes."""
    class_names = _yolo_class_names(folder)
    image_dir, label_dir = folder / "images" / part, folder / "labels" / part
    files = [p for p in images.list_images(image_dir, recursive=not part) if p.suffix.lower() in IMAGE_SUFFIXES
             and not (not part and p.relative_to(image_dir).parts[0] in ("val", "valid", "validation"))]
    if not files:
        raise UserError(f"{image_dir}: no .jpg/.png/.bmp images")
    entries, missing = [], 0
    for image in files:
        label_file = label_dir / image.relative_to(image_dir).with_suffix(".txt")
        boxes, labels = [], []
        if not label_file.is_file():
            missing += 1
            entries.append((image, boxes, labels))
            continue
        width, height = None, None
        for number, line in enumerate(data_lib.read_lines(label_file, skip_blank=False), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{label_file}: line {number}"
            if len(fields) != 5:
                raise UserError(f"{where}: expected 'class cx cy w h', found {len(fields)} fields")
            class_id = fields[0]
            if not class_id.isdigit():
                raise UserError(f"{where}: class id {class_id!r} is not a non-negative integer")
            if class_names and int(class_id) >= len(class_names):
                raise UserError(f"{where}: class id {class_id} but only {len(class_names)} class names are declared")
            cx, cy, w, h = (_number(v, where, k) for v, k in zip(fields[1:], ("cx", "cy", "w", "h")))
            if width is None:
                try:
                    width, height = image_size_of(image)
                except Exception:  # corrupt: check_images names and skips it later
                    width, height = 1, 1
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            labels.append(class_names[int(class_id)] if class_names else class_id)
        entries.append((image, boxes, labels))
    if missing:
        print(f"Warning: {label_dir}: {missing} of {len(files)} images have no label file; read as background (no objects)",
              file=sys.stderr)
    return _assemble(entries, folder, class_names, background=missing)


def read_coco(path: Path) -> DetectionSet:
    """COCO JSON: ``images`` (file_name, id), ``annotations`` (image_id, category_id, bbox as
    x, y, width, height) and ``categories`` (id, name). Images are found beside the JSON, in
    ``images/`` beside it, or in the parent folder's ``images/``."""
    try:
        content = json.loads(data_lib.read_text(path))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON: {error}")
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise UserError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories'")
    categories = {}
    for number, category in enumerate(content.get("categories") or [], start=1):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise UserError(f"{path}: categories[{number - 1}]: needs 'id' and 'name'")
        categories[category["id"]] = str(category["name"])
    folders = [path.parent, path.parent / "images", path.parent.parent / "images"]
    by_id, entries = {}, []
    for number, record in enumerate(content["images"]):
        if not isinstance(record, dict) or "file_name" not in record or "id" not in record:
            raise UserError(f"{path}: images[{number}]: needs 'id' and 'file_name'")
        by_id[record["id"]] = len(entries)
        entries.append((_find_image(record["file_name"], folders, f"{path}: images[{number}]"), [], []))
    for number, annotation in enumerate(content.get("annotations") or []):
        where = f"{path}: annotations[{number}]"
        if not isinstance(annotation, dict) or not {"image_id", "category_id", "bbox"} <= set(annotation):
            raise UserError(f"{where}: needs 'image_id', 'category_id' and 'bbox'")
        if annotation["image_id"] not in by_id:
            raise UserError(f"{where}: image_id {annotation['image_id']!r} is not among the images")
        if annotation["category_id"] not in categories:
            raise UserError(f"{where}: category_id {annotation['category_id']!r} is not among the categories")
        bbox = annotation["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise UserError(f"{where}: bbox must be [x, y, width, height]")
        x, y, w, h = (_number(v, where, "bbox") for v in bbox)
        _, boxes, labels = entries[by_id[annotation["image_id"]]]
        boxes.append([x, y, x + w, y + h])
        labels.append(categories[annotation["category_id"]])
    ordered = [categories[k] for k in sorted(categories, key=lambda k: (str(type(k)), k))]
    return _assemble(entries, path, ordered)


CSV_COLUMNS = ("filename", "class", "xmin", "ymin", "xmax", "ymax")


def read_csv(path: Path, encoding: str = "utf-8") -> DetectionSet:
    """CSV with a header naming at least filename, class, xmin, ymin, xmax, ymax (width and height
    may be there: the image's own size is used), one row per box; images beside the CSV or in
    ``images/`` beside it. A row with an empty class and box is an image without objects."""
    content = data_lib.read_text(path, encoding).replace("\r\n", "\n")
    rows = list(csv.reader(io.StringIO(content)))
    if not rows:
        raise UserError(f"{path}: empty file")
    header = [c.strip().lower() for c in rows[0]]
    aliases = {"path": "filename", "file": "filename", "image": "filename", "label": "class", "x1": "xmin",
               "y1": "ymin", "x2": "xmax", "y2": "ymax"}
    header = [aliases.get(name, name) for name in header]
    absent = [c for c in CSV_COLUMNS if c not in header]
    if absent:
        raise UserError(f"{path}: line 1: header lacks {', '.join(absent)} (expected filename,width,height,class,xmin,ymin,xmax,ymax)")
    column = {name: header.index(name) for name in CSV_COLUMNS}
    folders = [path.parent, path.parent / "images"]
    grouped: dict[str, tuple[Path, list, list]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path}: line {number}"
        if len(row) < len(header):
            raise UserError(f"{where}: expected {len(header)} columns, found {len(row)}")
        name = row[column["filename"]].strip()
        if name not in grouped:
            grouped[name] = (_find_image(name, folders, where), [], [])
        label = row[column["class"]].strip()
        values = [row[column[k]].strip() for k in ("xmin", "ymin", "xmax", "ymax")]
        if not label and not any(values):
            continue
        if not label:
            raise UserError(f"{where}: empty class")
        grouped[name][1].append([_number(v, where, k) for v, k in zip(values, ("xmin", "ymin", "xmax", "ymax"))])
        grouped[name][2].append(label)
    if not grouped:
        raise UserError(f"{path}: has a header but no rows")
    return _assemble(list(grouped.values()), path)


VAL_PARTS = ("val", "valid", "validation")


def read_local(path: Path, encoding: str = "utf-8") -> tuple[DetectionSet, DetectionSet | None]:
    """The training images at `path` and, when the source has one (YOLO ``images/val``), its
    validation images."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return read_coco(path), None
        if suffix in (".csv", ".txt"):
            return read_csv(path, encoding), None
        if suffix in (".yaml", ".yml"):
            return read_local(path.parent, encoding)
        raise UserError(f"{path}: expected a COCO .json, a .csv of boxes, or a folder (Pascal VOC or YOLO)")
    if (path / "images").is_dir() and (path / "labels").is_dir():
        val = next((p for p in VAL_PARTS if (path / "images" / p).is_dir()), None)
        if val and (path / "images" / "train").is_dir():
            return read_yolo(path, "train"), read_yolo(path, val)
        return read_yolo(path), (read_yolo(path, val) if val else None)
    if any((path / n).is_dir() for n in ("Annotations", "annotations")) or any(path.glob("*.xml")):
        return read_voc(path), None
    jsons = sorted(path.glob("*.json"))
    if len(jsons) == 1:
        return read_coco(jsons[0]), None
    csvs = sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return read_csv(csvs[0], encoding), None
    raise UserError(f"{path}: no detection data found (expected Pascal VOC XML, YOLO images/ + labels/, "
                    "one COCO .json or one .csv of boxes)")


def join(first: DetectionSet, second: DetectionSet | None) -> DetectionSet:
    if second is None:
        return first
    notes = {k: first.notes.get(k, 0) + second.notes.get(k, 0) for k in set(first.notes) | set(second.notes)}
    return DetectionSet(first.sources + second.sources, first.sizes + second.sizes, first.boxes + second.boxes,
                        first.labels + second.labels, first.names + second.names, first.encoded,
                        first.class_names or second.class_names, notes)


# --- tensorflow-datasets -------------------------------------------------------------------------


def read_tfds(spec: data_lib.DataSpec, split: str, tfds_dir: str = "") -> DetectionSet:
    """A tfds detection set with an ``image`` and ``objects`` {``bbox`` (ymin, xmin, ymax, xmax in
    [0, 1]), ``label``} (voc/2007, coco/2017, ...). Images are re-encoded as PNG (lossless: the
    pixels tfds decoded), so the input pipeline decodes every source the same way."""
    dataset, info = data_lib.load_tfds(spec, split, tfds_dir, as_supervised=False)  # prepares it, or one clear line
    if "image" not in info.features or "objects" not in info.features:
        raise UserError(f"{spec}: not a detection set (needs image and objects features; has {', '.join(info.features.keys())})")
    names = info.features["objects"]["label"].names
    result = DetectionSet([], [], [], [], [], encoded=True, class_names=list(names))
    checker = BoxChecker()
    for number, example in enumerate(dataset.as_numpy_iterator()):
        image = example["image"]
        height, width = image.shape[:2]
        ymin, xmin, ymax, xmax = np.asarray(example["objects"]["bbox"], dtype=np.float32).reshape(-1, 4).T
        boxes = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)
        labels = [names[int(i)] for i in example["objects"]["label"]]
        count = min(len(boxes), len(labels))
        kept, keep_index = checker(boxes[:count], width, height)
        result.sources.append(images.encode_png(image))
        result.sizes.append((width, height))
        result.boxes.append(kept)
        result.labels.append([labels[i] for i in keep_index])
        result.names.append(f"{spec}#{number}")
    checker.report(spec, result.notes)
    return result


# --- what train and evaluate read ----------------------------------------------------------------


def check(dataset: DetectionSet, source) -> DetectionSet:
    if not len(dataset):
        raise UserError(f"{source}: no usable images found")
    return dataset


def read_any(value: str, config, demo_seed_offset: int = 0, tfds_split: str = "train") -> tuple[DetectionSet, DetectionSet | None]:
    """--data (demo | path | tfds:NAME[:SPLIT]) -> (images, the source's own validation images or None)."""
    spec = data_lib.parse_data_spec(value)
    if spec.kind == "demo":
        return demo(config.demo_size, config.seed + demo_seed_offset), None
    if spec.kind == "tfds":
        train = read_tfds(spec, tfds_split, config.tfds_dir)
        return check(train, spec), None
    train, val = read_local(spec.path, config.encoding)
    return check(train, spec), val


def load_splits(config) -> tuple[DetectionSet, DetectionSet, list[str]]:
    """(training images, validation images, class names) for `config.data`, with a seeded split
    when the source has no validation part of its own."""
    spec = data_lib.parse_data_spec(config.data)
    train, val = read_any(config.data, config)
    label_names = train.label_names()
    if not label_names:
        raise UserError(f"{spec}: no boxes in any image: nothing to learn")
    if val is None:
        train_index, val_index = data_lib.split_indices(len(train), config.val_fraction, config.seed)
        train, val = train.subset(train_index), train.subset(val_index)
    unknown = sorted({name for row in val.labels for name in row} - set(label_names))
    if unknown:
        raise UserError(f"{spec}: validation classes {unknown} do not occur in the training data")
    return train, val, label_names


# --- tf.data -------------------------------------------------------------------------------------


def normalised_targets(dataset: DetectionSet, class_index: dict, max_boxes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes as fractions of their image (xmin, ymin, xmax, ymax in [0, 1]) padded with -1 to
    `max_boxes` per image, class indices padded with -1, and how many boxes did not fit."""
    boxes, classes, cut = [], [], 0
    for image_boxes, labels, (width, height) in zip(dataset.boxes, dataset.labels, dataset.sizes):
        scale = np.asarray([width, height, width, height], dtype=np.float32)
        boxes.append(np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4) / scale)
        classes.append(np.asarray([class_index[name] for name in labels], dtype=np.int32))
        cut += max(0, len(labels) - max_boxes)
    return (data_lib.pad_targets(boxes, -1, max_rows=max_boxes, dtype=np.float32).reshape(len(boxes), max_boxes, 4),
            data_lib.pad_targets(classes, -1, max_rows=max_boxes, dtype=np.int32).reshape(len(boxes), max_boxes), cut)


def augmentation(seed: int | None = None):
    """Keras's box-aware image layers: a horizontal flip, a zoom and a shift, each moving the boxes
    with the pixels (clipped to the image). Works on dicts of ``images`` and ``bounding_boxes``."""
    import keras

    common = dict(bounding_box_format="rel_xyxy", seed=seed)
    return [
        keras.layers.RandomFlip("horizontal", **common),
        keras.layers.RandomZoom((-0.2, 0.2), fill_mode="constant", **common),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", **common),
    ]


def dataset(data: DetectionSet, class_index: dict, image_size: int, batch_size: int, max_boxes: int,
            shuffle: bool = False, augment: bool = False, seed: int = 0):
    """(float images (B, S, S, 3) in [0, 255], {"boxes": (B, max_boxes, 4), "classes": (B, max_boxes)})
    batches: decoding and the resize (stretching each image to S x S, so normalised boxes stay
    valid) run in tf.data and are cached as uint8; augmentation runs per batch after the cache."""
    import tensorflow as tf

    boxes, classes, cut = normalised_targets(data, class_index, max_boxes)
    if cut:
        print(f"Warning: {cut} boxes beyond --max-boxes {max_boxes} per image are left out", file=sys.stderr)
    sources = np.asarray([s if data.encoded else str(s) for s in data.sources], dtype=object)
    size = (image_size, image_size)

    def decode(source, image_boxes, image_classes):
        encoded = source if data.encoded else tf.io.read_file(source)
        return images.decode_image(encoded, size), image_boxes, image_classes

    pipeline = tf.data.Dataset.from_tensor_slices((sources, boxes, classes)).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    pipeline = pipeline.cache()
    layers = augmentation(seed) if augment else []

    def to_model(image_batch, box_batch, class_batch):
        batch = {"images": tf.cast(image_batch, tf.float32), "bounding_boxes": {"boxes": box_batch, "labels": class_batch}}
        for layer in layers:
            batch = layer(batch, training=True)
        box_batch = batch["bounding_boxes"]["boxes"]
        class_batch = tf.cast(batch["bounding_boxes"]["labels"], tf.int32)
        # a box pushed out of the picture (or the -1 padding, which the layers clip to zero area) is padding again
        area = (box_batch[..., 2] - box_batch[..., 0]) * (box_batch[..., 3] - box_batch[..., 1])
        valid = (class_batch >= 0) & (area > 1e-6)
        box_batch = tf.where(valid[..., None], box_batch, -tf.ones_like(box_batch))
        return batch["images"], {"boxes": box_batch, "classes": tf.where(valid, class_batch, -1)}

    return data_lib.batch_dataset(pipeline, batch_size=batch_size, shuffle=shuffle, shuffle_buffer=len(sources), seed=seed,
                                  batch_map_fn=to_model)
