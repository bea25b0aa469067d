"""The lessons `fashion-mlp lesson <name>` runs: one module per claim of the tutorial, by its params.yaml name.

A lesson module has TITLE, CLAIM (the tutorial's claim in our words), KERAS and DATA (whether it uses
TensorFlow, whether it reads the training split), `run(options, train, seed)`, which
returns its record ("figures", "passed", "holds", "shown", and what its figure needs: keys starting
with "_" reach `plot(record, path)` but not the JSON). A lesson on the trained models sets MODELS = True:
its `train` is {name: path of the .keras file}, and its block is under `model_lessons:`. A new lesson is
a module, an entry here, its block in params.yaml and its schema.
"""

from __future__ import annotations

from fashion_mlp.lessons import (
    backprop,
    initialization,
    learned_features,
    optimizers,
    perceptron,
    regularization_strength,
    search_strategies,
    small_data,
    universal_approximation,
    vanishing_gradients,
)

LESSONS = {
    "backprop": backprop,
    "vanishing_gradients": vanishing_gradients,
    "initialization": initialization,
    "optimizers": optimizers,
    "perceptron": perceptron,
    "universal_approximation": universal_approximation,
    "regularization_strength": regularization_strength,
    "small_data": small_data,
    "search_strategies": search_strategies,
    "learned_features": learned_features,  # under model_lessons: it reads the trained models
}


def section(name: str) -> str:
    """The params.yaml section of a lesson's options: `model_lessons.<name>` if it reads the trained models."""
    return f"{'model_lessons' if getattr(LESSONS[name], 'MODELS', False) else 'lessons'}.{name}"
