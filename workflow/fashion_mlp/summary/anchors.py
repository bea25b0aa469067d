"""Published Fashion-MNIST test accuracies the pipeline is measured against: the one table of them, with sources.

They are figures from papers, benchmarks and repositories, not runs of this pipeline. `note` says
when a figure was not obtained under this project's protocol (every choice made on a validation split).
"""

from __future__ import annotations

from typing import NamedTuple


class Anchor(NamedTuple):
    name: str
    accuracy: float  # on the 10,000 test images
    kind: str  # "mlp" or "cnn", as params.yaml's train.<model>.kind
    source: str
    note: str = ""


ANCHORS = (
    Anchor("Tutorial baseline MLP (published)", 0.870, "mlp", "the Keras tutorial this project rebuilds (README)"),
    Anchor('Tutorial "improved" MLP (published)', 0.866, "mlp", "the Keras tutorial this project rebuilds (README)"),
    Anchor("Zalando benchmark: best MLP", 0.8833, "mlp", "zalandoresearch/fashion-mnist, benchmark table"),
    Anchor("scikit-learn MLPClassifier", 0.871, "mlp", "zalandoresearch/fashion-mnist, benchmark table"),
    Anchor(
        "Nøkland & Eidnes 2019: 3×1024 MLP",
        0.9163,
        "mlp",
        "Nøkland & Eidnes, ICML 2019; anokland/local-loss",
        "settings chosen on test",
    ),
    Anchor(
        "2-conv CNN, ~113K parameters",
        0.922,
        "cnn",
        "zalandoresearch/fashion-mnist, benchmark table (contributed by Abel G.)",
    ),
    Anchor(
        "2-conv CNN with augmentation",
        0.934,
        "cnn",
        "cmasch/zalando-fashion-mnist",
        "honest validation split",
    ),
)
