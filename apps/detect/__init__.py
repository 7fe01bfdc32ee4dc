"""detect: object detection (YOLO-style one-stage or Faster R-CNN two-stage), boxes drawn, COCO mAP, NMS inside the SavedModel.

Files, the same in every app: config.py (typed defaults and mode options), data.py (demo generator,
Pascal VOC, YOLO txt, COCO JSON, CSV, tfds), model.py (the Keras detectors), app.py (the hooks of
shared.app.App), README.md.
"""
