"""classify: image classification by fine-tuning a pretrained backbone (MobileNet, MobileNetV2, EfficientNetB0, ResNet50).

Files, the same in every app: config.py (typed defaults), data.py (demo generator, image folders,
CSV, tfds), model.py (the Keras model), app.py (train/predict/evaluate/export returning plain
Python), cli.py (the thin typer layer).
"""
