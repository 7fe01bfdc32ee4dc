"""sentiment: text classification with a BiLSTM over raw strings (binary or multi-class).

Files, the same in every app: config.py (typed defaults), data.py (demo generator, local formats,
tfds), model.py (the Keras model), app.py (its hooks into the shared contract),
README.md.
"""
