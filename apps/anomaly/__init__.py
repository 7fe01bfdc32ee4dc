"""anomaly: autoencoder anomaly detection for tables, time series and images, with a calibrated threshold.

Files, the same in every app: config.py (typed defaults), data.py (demo generator, local formats,
tfds), model.py (the Keras model), app.py (the hooks of shared/app.py), README.md.
"""
