"""charlm: character-level language model (LSTM, GRU or Transformer) scored by perplexity, with sampling.

Files, the same in every app: config.py (typed defaults), data.py (demo corpus, local text files),
model.py (the Keras model, scoring and sampling graphs), app.py (train/predict/score/evaluate/export
returning plain Python), cli.py (the thin typer layer).
"""
