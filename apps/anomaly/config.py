"""Typed defaults of the anomaly app; every field is also a ``dlapps anomaly train`` flag."""

from dataclasses import dataclass

from dlapps.shared.config import TrainConfig, default, option

KINDS = ("tabular", "timeseries", "image")


@dataclass
class AnomalyConfig(TrainConfig):
    epochs: int = default(30)
    batch_size: int = default(64)
    patience: int = default(5)
    # A larger held-out share than the other apps: it is also where the threshold is calibrated.
    val_fraction: float = default(0.2)
    # --- data ---
    kind: str = option("tabular", "what the data is: table rows, a time series (scored in windows) or images", choices=KINDS, short="-k")
    label_column: str = option(
        "", "CSV column of 0/1 anomaly labels, read only by evaluate (name or 0-based index; default: a column named label, anomaly, is_anomaly or outlier)"
    )
    labels: str = option("", "timeseries: NAB label-window JSON (e.g. combined_windows.json) marking each series' anomalies, read only by evaluate")
    demo_size: int = option(0, "demo: rows, time steps or images to generate (0: 2,000 rows, 4,032 steps (14 days of 5-minute readings) or 600 images)", min=0, max=1_000_000)
    # --- model ---
    hidden_units: list[int] = option([64, 32], "tabular: encoder layer widths; the decoder mirrors them", min=1, max=8192)
    bottleneck: int = option(0, "tabular/image: width of the dense code (0: 8 for tables, 16 for images)", min=0, max=8192)
    members: int = option(5, "tabular: autoencoders in the ensemble; the score is the mean of theirs, each over its own training median", min=1, max=64)
    member_rows: float = option(0.5, "tabular: share of the training rows each member learns from, drawn per member (bagging; 1: every row)", above=0, max=1)
    filters: list[int] = option([32, 16], "timeseries/image: encoder convolutions, each halving the length or side; the decoder mirrors them", min=1, max=4096)
    window: int = option(288, "timeseries: steps per window (a multiple of 2 ** the number of --filters; keras-io: 288, a day of 5-minute readings)", min=8, max=100_000)
    image_size: int = option(32, "image: side of the square every image is resized to (a multiple of 2 ** the number of --filters)", min=8, max=1024)
    channels: int = option(1, "image: 1 reads images as grayscale, 3 as RGB", choices=(1, 3))
    noise: float = option(
        -1.0, "denoising: std of Gaussian noise added to the standardised input while training (0: a plain autoencoder; -1: 0.2 for tables, 0 for series and images)", min=-1, max=10
    )
    # --- threshold ---
    contamination: float = option(0.0, "expected share of anomalies: the threshold flags that share of the held-out scores (tables: of all rows; 0: see --threshold-percentile)", min=0, below=0.5)
    threshold_percentile: float = option(0.0, "threshold at this percentile of the held-out scores, e.g. 99 (0 and no --contamination: Tukey's fence on log scores, Q3 + 3 IQR, for tables 2 IQR)", min=0, below=100)
