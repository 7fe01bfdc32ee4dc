"""ner: named-entity recognition with a BiLSTM-CRF over words, characters and casing; raw text in, entity spans out.

Files, the same in every app: config.py (typed defaults), data.py (demo generator, CoNLL files, tag
schemes, tfds), model.py (the Keras model, its preprocessor and the CRF), app.py
(train/predict/evaluate/export returning plain Python), cli.py (the thin typer layer).
"""
