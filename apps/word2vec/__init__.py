"""word2vec: word vectors by skip-gram or CBOW with negative sampling, written in gensim's formats.

Files, the same in every app: config.py (typed defaults), data.py (demo corpus, local text,
tfds, vocabulary, subsampling and the pair batches), model.py (the Keras model), app.py
(train/predict/evaluate/export returning plain Python), cli.py (the thin typer layer).
"""
