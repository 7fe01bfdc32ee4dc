"""One tf.distribute strategy for every app: one device, several GPUs, several machines or a TPU.

Apps build and compile their model inside ``strategy.scope()``; tf.data input is distributed by
``fit`` itself, so the global batch size is the per-step total over all replicas.
"""

from __future__ import annotations

import json
import os

from dlapps.shared.errors import UserError


def _workers_in_tf_config() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError:
        raise UserError("TF_CONFIG: not valid JSON")
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def auto_choice() -> str:
    """What `auto` picks here: tpu > multiworker (TF_CONFIG with several workers) > mirrored (2+ GPUs) > default."""
    import tensorflow as tf

    if tf.config.list_logical_devices("TPU") or os.environ.get("TPU_NAME"):
        return "tpu"
    if _workers_in_tf_config() > 1:
        return "multiworker"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def set_mixed_precision(enabled: bool) -> str:
    """bfloat16 compute on CPU/TPU, float16 on GPU; variables stay float32. Returns the policy name."""
    import keras
    import tensorflow as tf

    if not enabled:
        policy = "float32"
    elif tf.config.list_logical_devices("GPU"):
        policy = "mixed_float16"
    else:
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def get_strategy(name: str = "auto", mixed_precision: bool = False):
    """The tf.distribute strategy for ``--strategy NAME``, with the mixed-precision policy applied."""
    import tensorflow as tf

    set_mixed_precision(mixed_precision)
    if name == "auto":
        name = auto_choice()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Several GPUs when present; otherwise every logical CPU device (tests split the CPU in two).
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UserError("--strategy multiworker: set TF_CONFIG to describe the cluster (see README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise UserError(f"--strategy tpu: no TPU found ({str(error).splitlines()[0]})")
        return tf.distribute.TPUStrategy(resolver)
    raise UserError(f"--strategy: unknown strategy {name!r}")


def describe(strategy) -> str:
    """'MultiWorkerMirroredStrategy with 2 replica(s)': the public name, not TF's internal class."""
    import tensorflow as tf

    # by the names users type: MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy
    public = ((tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
              (tf.distribute.MirroredStrategy, "MirroredStrategy"), (tf.distribute.TPUStrategy, "TPUStrategy"))
    name = next((name for cls, name in public if isinstance(strategy, cls)), "default strategy")
    return f"{name} with {strategy.num_replicas_in_sync} replica(s)"


def loss_scaled(optimizer):
    """`optimizer` wrapped in a LossScaleOptimizer when float16 compute needs one (mixed precision
    on a GPU). Keras's compile does this for ``model.optimizer`` only: a second optimizer (a
    GAN's) goes through here. bfloat16 (CPU/TPU) keeps float32's range and needs no scaling."""
    import keras

    if keras.mixed_precision.global_policy().name == "mixed_float16" and not isinstance(
        optimizer, keras.optimizers.LossScaleOptimizer
    ):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
