"""Fashion-MNIST multilayer perceptrons as a reproducible Snakemake + DVC + MLflow pipeline.

One module per stage (download, prepare, train, evaluate, report), each with a
`main(argv)`; shared concerns live in config (params), io (atomic files),
data (Fashion-MNIST formats), models (Keras), runtime (TensorFlow set-up) and
tracking (MLflow).
"""

__version__ = "0.1.0"


class PipelineError(Exception):
    """An expected failure with a message for the user (bad params, bad data, no mirror)."""
