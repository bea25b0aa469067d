"""The lessons `fashion-mlp lesson <name>` runs: one module per claim of the tutorial, by its params.yaml name.

A lesson module has TITLE, CLAIM (the tutorial's claim in our words), KERAS and DATA (whether it uses
TensorFlow, whether it reads the training split), `run(options, train, seed)`, which
returns its record ("figures", "passed", "holds", "shown", and what its figure needs), and
`plot(record, path)`. A new lesson is a module, an entry here, its block under `lessons:` in
params.yaml and its schema.
"""

from __future__ import annotations

from fashion_mlp.lessons import (
    backprop,
    initialization,
    optimizers,
    perceptron,
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
}
