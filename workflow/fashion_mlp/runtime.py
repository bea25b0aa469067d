"""TensorFlow set-up shared by the stages that need it: quiet logs, thread counts, determinism."""

from __future__ import annotations

import os


def default_threads() -> int:
    """Snakemake exports OMP_NUM_THREADS={threads} to every job; elsewhere use every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


def configure_tensorflow(threads: int, seed: int) -> None:
    """Pin TF's thread pools to `threads` and make every op deterministic from `seed`.

    Must run before TensorFlow executes its first op.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from fashion_mlp.profiling.marks import TF_IMPORTED, mark

    mark(TF_IMPORTED)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
