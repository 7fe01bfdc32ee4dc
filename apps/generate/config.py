"""Typed defaults of the generate app; every field is also a ``dlapps generate train`` flag."""

from dataclasses import dataclass

from dlapps.shared.config import TrainConfig, default, option

ARCHS = ("vae", "gan")
LIKELIHOODS = ("bernoulli", "gaussian")
GAN_LOSSES = ("ns", "hinge", "wgan-gp")


@dataclass
class GenerateConfig(TrainConfig):
    epochs: int = default(20)
    batch_size: int = default(64)
    learning_rate: float = default(1e-3, help="Adam learning rate of the VAE (the GAN's are --g-learning-rate and --d-learning-rate)")
    # --- data ---
    demo_size: int = option(2000, "images the demo generator draws (16x16 shapes in 4 classes)", min=10, max=100_000)
    image_size: int = option(0, "side of the square images are resized to (0: the data's own, most common size)", min=0, max=128)
    channels: int = option(0, "1 (grayscale) or 3 (RGB); 0: grayscale when every image is", choices=(0, 1, 3))
    # --- model ---
    arch: str = option("vae", "vae: convolutional VAE; gan: DCGAN", choices=ARCHS)
    conditional: bool = option(False, "condition on the class label (needs labelled data)")
    latent_dim: int = option(32, "size of the latent vector", min=1, max=1024)
    filters: int = option(32, "convolution filters of the first stage (doubling per stage)", min=4, max=512)
    # --- VAE ---
    likelihood: str = option("bernoulli", "VAE pixel model: bernoulli (pixels binarised at random by intensity) or gaussian", choices=LIKELIHOODS)
    kl_warmup: float = option(2.0, "VAE: epochs over which the KL weight rises linearly from 0 to 1", min=0, max=1000)
    # --- GAN ---
    gan_loss: str = option("ns", "ns: non-saturating with one-sided label smoothing; hinge; wgan-gp: Wasserstein with gradient penalty", choices=GAN_LOSSES)
    g_learning_rate: float = option(2e-4, "GAN: Adam learning rate of the generator", above=0, max=10)
    d_learning_rate: float = option(2e-4, "GAN: Adam learning rate of the discriminator", above=0, max=10)
    d_steps: int = option(1, "GAN: discriminator steps per generator step (5 is usual for wgan-gp)", min=1, max=10)
    label_smoothing: float = option(0.1, "GAN ns loss: real images are labelled 1 - this", min=0, below=0.5)
    gp_weight: float = option(10.0, "GAN wgan-gp: weight of the gradient penalty", min=0, max=1000)
    spectral_norm: bool = option(True, "GAN: spectral normalisation on the discriminator's layers")
    # --- figures ---
    grid: int = option(8, "side of the sample grid written after every epoch (0: none)", min=0, max=32)
    fid_epochs: int = option(8, "epochs of the small classifier trained after training for FID (0: no FID); needs labels", min=0, max=100)
