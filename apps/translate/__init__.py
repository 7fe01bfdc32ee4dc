"""translate: sequence-to-sequence translation with an attention GRU or a Transformer, beam search in the SavedModel, sacreBLEU.

Files, the same in every app: config.py (typed options), data.py (demo generator, local formats, tfds), model.py (the Keras model), app.py (the contract's hooks, see shared/app.py).
"""
