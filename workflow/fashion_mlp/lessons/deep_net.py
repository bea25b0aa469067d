"""A deep MLP in NumPy for the lessons on depth: initializers, the forward pass with every layer's
activations kept, the backward pass with every layer's gradient, and a plain SGD step.

The same chain rule as `backprop`, for any number of hidden layers and three activations; by hand so
that each layer's numbers can be read off, which is what the lessons plot.
"""

from __future__ import annotations

import itertools

import numpy as np

ACTIVATIONS = {  # f(z) and f'(z) written with f(z), as the backward pass has it at hand
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda a, z: a * (1 - a)),
    "tanh": (np.tanh, lambda a, z: 1 - a**2),
    "relu": (lambda z: np.maximum(z, 0), lambda a, z: (z > 0).astype(z.dtype)),
}
INITIALIZERS = {  # the spread of a kernel's entries for fan-in n_in and fan-out n_out
    "zeros": lambda n_in, n_out: 0.0,
    "small": lambda n_in, n_out: 0.01,  # a fixed, "safe-looking" small spread
    "glorot": lambda n_in, n_out: np.sqrt(2.0 / (n_in + n_out)),  # Glorot and Bengio 2010, normal form
    "he": lambda n_in, n_out: np.sqrt(2.0 / n_in),  # He et al. 2015, for ReLU
}


def init(widths: list[int], scheme: str, rng: np.random.Generator) -> list[dict]:
    """Layers [784, *hidden, 10]: normal kernels of the scheme's spread, zero biases."""
    spread = INITIALIZERS[scheme]
    return [
        {"W": rng.normal(0.0, 1.0, (n_in, n_out)) * spread(n_in, n_out), "b": np.zeros(n_out)}
        for n_in, n_out in itertools.pairwise(widths)
    ]


def forward(layers: list[dict], x: np.ndarray, activation: str) -> dict:
    """Every hidden layer's pre-activation and activation, and the softmax output."""
    f = ACTIVATIONS[activation][0]
    zs, acts = [], [x]
    for layer in layers[:-1]:
        zs.append(acts[-1] @ layer["W"] + layer["b"])
        acts.append(f(zs[-1]))
    logits = acts[-1] @ layers[-1]["W"] + layers[-1]["b"]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"zs": zs, "acts": acts, "probs": e / e.sum(axis=1, keepdims=True)}


def loss(cache: dict, y: np.ndarray) -> float:
    return float(-np.mean(np.log(cache["probs"][np.arange(len(y)), y] + 1e-12)))


def backward(layers: list[dict], cache: dict, y: np.ndarray, activation: str) -> list[dict]:
    """The gradient of the mean cross-entropy for every layer, from the output back to the first."""
    derivative = ACTIVATIONS[activation][1]
    delta = cache["probs"].copy()
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    grads = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        grads[i] = {"W": cache["acts"][i].T @ delta, "b": delta.sum(axis=0)}
        if i:
            delta = (delta @ layers[i]["W"].T) * derivative(cache["acts"][i], cache["zs"][i - 1])
    return grads


def sgd_step(layers: list[dict], grads: list[dict], lr: float) -> None:
    for layer, grad in zip(layers, grads, strict=True):
        layer["W"] -= lr * grad["W"]
        layer["b"] -= lr * grad["b"]


def train(layers, x, y, activation: str, steps: int, batch: int, lr: float, rng) -> list[float]:
    """`steps` minibatch SGD steps; the loss of each."""
    losses = []
    for _ in range(steps):
        pick = rng.integers(0, len(x), size=batch)
        cache = forward(layers, x[pick], activation)
        losses.append(loss(cache, y[pick]))
        sgd_step(layers, backward(layers, cache, y[pick], activation), lr)
    return losses


def gradient_norms(layers, x, y, activation: str) -> list[float]:
    """The Frobenius norm of each hidden layer's kernel gradient, first layer first (the output layer left out)."""
    grads = backward(layers, forward(layers, x, activation), y, activation)
    return [float(np.linalg.norm(g["W"])) for g in grads[:-1]]
