"""Cascading and independent layer randomization (Adebayo et al., NeurIPS 2018, section 3.1).

Cascading: the weights of the top layer, then of the top two, and so on down to the input, are
replaced by fresh initial ones; independent: one layer at a time, the others kept trained. After each
step every method maps the same images again, and its maps are compared with the trained model's
(Spearman ρ of |maps| on the garment, with a bootstrap interval over images, as randomization.py).
A method whose maps depend on the weights falls towards the level of two different random
initializations compared with each other (seeds `seed` and `seed + 1`), also measured here: a
convolutional architecture alone makes two random models' maps alike, which noise maps cannot show.
A layer with weights is a step: Dense, Conv2D and BatchNormalization (reset to its initial,
identity-like state). Beside them, the data randomization: the maps of a model trained on permuted
labels (data_randomization.py). Pure functions.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp.attribution.checks import randomized_copy
from fashion_mlp.attribution.randomization import JUDGED_ON, similarity


def weight_layers(model) -> list[str]:
    """The names of the layers with weights, input to output."""
    return [layer.name for layer in model.layers if layer.weights]


def partly_randomized(model, fresh, names: set[str]):
    """A copy of `model` whose layers in `names` hold `fresh`'s (a re-initialized copy's) weights."""
    import keras

    copy = keras.models.clone_model(model)
    copy.build(model.input_shape)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if layer.name in names:
            layer.set_weights(fresh.get_layer(layer.name).get_weights())
    return copy


def cascade(model, explain_all, images: np.ndarray, seed: int, fresh=None, permuted=None) -> dict:
    """Each method's ρ against the trained maps, cascading top-down and layer by layer, and between two random inits.

    `explain_all(model)` returns {method: maps of `images`}; `fresh` is the copy re-initialized from `seed`;
    `permuted`, if given, the model trained on permuted labels (data_randomization.py), compared likewise.
    Returns the report (intervals per step) and
    the maps of every cascading step, for the figure of randomized maps.
    """
    names = weight_layers(model)
    fresh = randomized_copy(model, seed) if fresh is None else fresh  # explain's copy when it has one
    other = randomized_copy(model, seed + 1)
    trained = explain_all(model)

    def against(reference: dict, maps: dict) -> dict:
        return {key: similarity(reference[key], maps[key], images, seed, (JUDGED_ON,))[JUDGED_ON] for key in reference}

    steps: dict[str, list] = {"cascading": [], "independent": []}
    maps_by_step = {"trained": trained}
    for k in range(1, len(names) + 1):  # the top k layers re-initialized
        maps = explain_all(partly_randomized(model, fresh, set(names[-k:])))
        steps["cascading"].append(against(trained, maps))
        maps_by_step[f"top {k}"] = maps
    for name in names:  # one layer re-initialized
        steps["independent"].append(against(trained, explain_all(partly_randomized(model, fresh, {name}))))
    report = {
        "images": len(images),
        "layers": names,
        "judged_on": JUDGED_ON,
        **{mode: {key: [step[key] for step in rows] for key in trained} for mode, rows in steps.items()},
        "two_random_inits": against(explain_all(fresh), explain_all(other)),
    }
    if permuted is not None:
        report["permuted_labels"] = against(trained, explain_all(permuted))
    return {"report": report, "maps": maps_by_step}
