"""sentiment: text classification with a BiLSTM over raw strings (binary or multi-class).

Files, the same in every app: config.py (typed defaults), data.py (demo generator, local formats,
tfds), model.py (the Keras model), app.py (train/predict/evaluate/export returning plain Python),
cli.py (the thin typer layer).
"""
