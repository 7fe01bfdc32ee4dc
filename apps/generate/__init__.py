"""generate: image generation with a convolutional VAE or a DCGAN (optionally class-conditional), with sample grids, interpolation and quality scores.

Files, the same in every app: config.py (typed defaults), data.py (demo generator, npz, MNIST idx,
image folders, tfds), model.py (the Keras models), app.py (the contract's hooks), README.md.
"""
