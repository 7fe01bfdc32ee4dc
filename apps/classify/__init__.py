"""classify: image classification by fine-tuning a pretrained backbone (MobileNet, MobileNetV2, EfficientNetB0, ResNet50).

Files, the same in every app: config.py (typed options), data.py (demo generator, image folders,
CSV, tfds), model.py (the Keras model), app.py (the app's hooks into the contract, shared/app.py).
"""
