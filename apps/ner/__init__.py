"""ner: named-entity recognition with a BiLSTM-CRF over words, characters and casing; raw text in, entity spans out.

Files, the same in every app: config.py (typed options), data.py (demo generator, CoNLL files, tag
schemes, tfds), model.py (the Keras model and its preprocessor), crf.py (the linear-chain CRF),
app.py (the hooks into shared/app.py).
"""
