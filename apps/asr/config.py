"""Typed defaults of the asr app; every field is also a ``dlapps asr train`` flag."""

from dataclasses import dataclass

from dlapps.shared.config import TrainConfig, default, option


@dataclass
class AsrConfig(TrainConfig):
    epochs: int = default(40)
    batch_size: int = default(32, help="utterances per step, summed over all devices")
    learning_rate: float = default(3e-3)
    patience: int = default(8)
    lr_schedule: str = option("cosine", "learning rate over training: cosine decay to 2% by --epochs or --max-minutes, whichever ends first, or constant", choices=("cosine", "constant"))
    # --- data ---
    demo_size: int = option(800, "utterances the demo synthesiser generates (1-3 spoken-digit words each)", min=10, max=1_000_000)
    compose_max: int = option(1, "join 1..N clips per training utterance with short silences and noise, new each epoch (isolated-word sets such as FSDD); 1: clips as they are", min=1, max=20)
    max_seconds: float = option(20.0, "clips longer than this are skipped, with a count", above=0, max=3600)
    max_utterances: int = option(0, "read at most this many utterances, in the source's order (0: all)", min=0)
    lowercase: bool = option(True, "lower-case transcripts (and references when evaluating)")
    keep_punctuation: bool = option(False, "keep punctuation in transcripts; otherwise it is removed (apostrophes inside words stay)")
    alphabet: str = option("", "the characters the model writes, e.g. 'abcdefghijklmnopqrstuvwxyz \\'' (default: those of the training transcripts); a transcript with others is an error")
    # --- features (inside the model, from the raw waveform) ---
    sample_rate: int = option(16000, "model sample rate in Hz; audio at other rates is resampled to it", min=4000, max=48000)
    mel_bins: int = option(80, "log-mel filterbank channels", min=8, max=256)
    window_ms: float = option(25.0, "analysis window of each frame, in milliseconds", min=5, max=100)
    hop_ms: float = option(10.0, "step between frames, in milliseconds", min=2.5, max=50)
    # --- model ---
    conv_filters: list[int] = option([32, 32], "filters of each 3x3 convolution (each halves the mel axis)", min=1, max=1024)
    subsample: int = option(4, "frames per output step: the first log2(N) convolutions stride 2 in time", choices=(1, 2, 4))
    rnn: str = option("gru", "recurrent cell of the bidirectional stack", choices=("gru", "lstm"))
    rnn_units: list[int] = option([160, 160], "units of each bidirectional recurrent layer, e.g. 256,256,256", min=1, max=4096)
    dropout: float = option(0.2, "dropout after the convolutions and between recurrent layers", min=0, below=1)
    # --- SpecAugment (training only) ---
    freq_masks: int = option(2, "frequency masks per utterance", min=0, max=10)
    freq_mask_bins: int = option(12, "widest frequency mask, in mel bins", min=0, max=256)
    time_masks: int = option(2, "time masks per utterance", min=0, max=20)
    time_mask_fraction: float = option(0.05, "widest time mask, as a share of the utterance's frames", min=0, max=0.5)
