"""charlm: character-level language model (LSTM, GRU or Transformer) scored by perplexity, with sampling.

Files, the same in every app: config.py (typed options), data.py (demo corpus, local text files,
tfds), model.py (the Keras model, scoring and sampling graphs), app.py (the hooks of the shared
contract, shared/app.py).
"""
