"""The smoke runs' params: the keys of params.yaml that a smoke copy changes (conftest.smoke_copy).

Every stage on real data, at a small size: 3,000 training and 1,000 test pictures, 2 epochs a model,
a Hyperband search of one bracket, small explanation samples, and three of the lessons.
"""

from __future__ import annotations

from pathlib import Path

DEBIAN_DATA = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (make data installs it)

DROP = object()  # a SMOKE value: the key is removed (an entry left out is not run)

# A small, fast, real-data configuration: an unreachable mirror first (exercises
# the fallback), then Debian's copy of the files.
SMOKE = {
    "data.mirrors": ["http://127.0.0.1:9/", str(DEBIAN_DATA)],
    "prepare.limit_train": 3000,
    "prepare.limit_test": 1000,
    "train.*.epochs": 2,
    # Hyperband with max_epochs 2 and factor 2: one bracket of at least 2 trials, then a 2-epoch retrain.
    "tune.max_epochs": 2,
    "tune.factor": 2,
    "tune.hyperband_iterations": 1,
    "tune.workers": 2,  # its one bracket starts 2 trials at once: a third worker would only wait
    "tune.final_epochs": 2,
    "tune.space.units": [32, 128, 32],
    # Two epochs leave BatchNorm's moving statistics unsettled (validation 0.31 against 0.74 without).
    "train.cnn.batchnorm": False,
    # 20 explained images on a 20-image background: every check and figure, at a fifth of the SHAP work.
    "explain.background_size": 20,
    "explain.images_per_class": 2,
    # Each layer's step maps every method again; SHAP's DeepExplainer is most of that cost (about 20 s a run).
    "explain.cascade_images_per_class": 1,
    "explain.cascade_methods": ["lrp", "gradient"],
    "explain.data_randomization_images": 500,
    "explain.data_randomization_epochs": 1,
    "explain.smoothgrad_samples": 2,
    "explain.ig_steps": 4,
    # The model card's photo-like pictures: 100 test images, 8 variants, for one or two models.
    "card.robustness_images": 100,
    # Three lessons, one of each wiring: on the data with NumPy, on the data with Keras, on the trained models.
    # The others (a job each, most importing TensorFlow) would lengthen DVC's one-stage-at-a-time smoke run,
    # the suite's longest chain; each has its own tests (test_lessons*.py), and the generic rule is the same.
    **{f"lessons.{name}": DROP for name in ("backprop", "initialization", "perceptron", "universal_approximation")},
    **{f"lessons.{name}": DROP for name in ("regularization_strength", "small_data", "search_strategies")},
    "lessons.vanishing_gradients.images": 1000,
    "lessons.vanishing_gradients.steps": 50,
    "lessons.optimizers.images": 1000,
    "lessons.optimizers.epochs": 1,
}
