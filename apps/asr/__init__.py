"""asr: speech recognition from raw audio: log-mel features, BiGRU stack and CTC, greedy or beam decoding, WER and CER.

Files, the same in every app: config.py (typed defaults), data.py (synthesised demo, LJSpeech, CSV manifests, wav+txt folders, FSDD names, tfds), model.py (the Keras model), app.py (the App contract's hooks).
"""
