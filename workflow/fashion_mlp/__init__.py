"""Fashion-MNIST multilayer perceptrons as a reproducible Snakemake + DVC + MLflow pipeline.

The folders are rooms by role: stages/ (one module per pipeline stage or command, each with a
`main(argv)`), tuning/ (the search's machinery), attribution/ (explanations as numbers and
figures), summary/ (the sections of reports/summary.md) and lessons/ (the tutorial's lessons).
The shared libraries sit at the top: config (params.yaml), io (atomic files), data (Fashion-MNIST
formats), models (Keras), training, inference, tracking (MLflow), runtime (TensorFlow set-up)...
No library imports a stage.
"""

__version__ = "0.1.0"


class PipelineError(Exception):
    """An expected failure with a message for the user (bad params, bad data, no mirror)."""
