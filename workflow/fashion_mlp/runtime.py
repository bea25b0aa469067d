"""TensorFlow set-up shared by the stages that need it: quiet logs, thread counts, determinism, and
tf.data without its autotuning (whose end of every epoch left the process idle)."""

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
    without_data_autotuning(tf)


def without_data_autotuning(tf) -> None:
    """Every dataset given options (Keras builds its batches of arrays so) runs without tf.data's autotuning.

    Autotuning's model thread sleeps for a period that doubles (10 ms, 20 ms, ..., up to a minute), and
    an iterator's destructor waits for that thread, which sleeps out its period before it sees the
    cancellation (strace: a 640 ms wait woken after 504 ms, then 136 ms more). Keras makes new iterators
    every epoch, so a 1-thread training sat idle at each epoch's end: 71 % of a core, 37.4 s, where
    the same training without autotuning took 26.4 s at 99 % (docs/speed.md). The pipeline's datasets
    are arrays in memory, with nothing to tune; the batches and their order do not change. tf.data has
    no process-wide switch, hence this wrapper of `Dataset.with_options` (written here, said so).
    """
    original = tf.data.Dataset.with_options
    if getattr(original, "without_autotuning", False):
        return
    off = tf.data.Options()
    off.autotune.enabled = False

    def with_options(self, options, name=None):
        return original(original(self, options, name=name), off)

    with_options.without_autotuning = True
    with_options.original = original  # for tests/stages/test_train.py's comparison with Keras' defaults
    tf.data.Dataset.with_options = with_options
