"""Lesson `perceptron`: Rosenblatt's learning rule by hand, on AND and on XOR, and XOR in an MLP's hidden space.

The rule: for each point, if the unit's answer (w·x + b > 0) is wrong, w += lr (target − answer) x and
b += lr (target − answer). On binary inputs with lr = 1 every weight stays an integer, so the state
after an epoch can be compared exactly: the rule has converged when an epoch makes no mistake, and
cycles when it comes back to a state it was in before (it will then repeat forever). A 2-2-1 net
trained on XOR by hand then maps the four points to where one straight line separates them, decided
by the same linear program as the XOR demo (`xor.separating_hyperplane`). No TensorFlow.
"""

from __future__ import annotations

import numpy as np

from fashion_mlp.lessons import xor

TITLE = "The perceptron: AND, XOR, and a hidden layer"
KERAS = False  # the stage seeds TensorFlow first
DATA = False  # it reads the training split
CLAIM = (
    "A single perceptron solves linearly separable problems such as AND but not XOR; hidden layers transform "
    "the input into a space where a linear boundary can be drawn."
)
AND_Y = np.array([0, 0, 0, 1])
HIDDEN = 2  # the XOR net's hidden units (see train_xor_net)


def perceptron_rule(x: np.ndarray, y: np.ndarray, max_epochs: int, lr: float = 1.0) -> dict:
    """Train one threshold unit from zero weights, point by point in order; stop at convergence or a cycle."""
    w, b = np.zeros(x.shape[1]), 0.0
    seen, mistakes = {}, []
    for epoch in range(max_epochs):
        state = (*w.tolist(), b)
        if state in seen:  # the same weights at an epoch's start: every later epoch repeats
            return {"converged": False, "cycle": [seen[state], epoch], "mistakes": mistakes, "w": w.tolist(), "b": b}
        seen[state] = epoch
        wrong = 0
        for point, target in zip(x, y, strict=True):
            answer = int(point @ w + b > 0)
            if answer != target:
                w, b, wrong = w + lr * (target - answer) * point, b + lr * (target - answer), wrong + 1
        mistakes.append(wrong)
        if wrong == 0:
            return {"converged": True, "cycle": None, "mistakes": mistakes, "w": w.tolist(), "b": b}
    return {"converged": False, "cycle": None, "mistakes": mistakes, "w": w.tolist(), "b": b}


def train_xor_net(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, steps: int, lr: float) -> dict:
    """A 2-2-1 net (tanh hidden, sigmoid output, cross-entropy) by full-batch gradient descent, in NumPy.

    Two hidden units, so the hidden space is a plane one can draw and separability means something (four
    points in three or more dimensions can almost always be split by a plane, trained or not).
    """
    w1, b1 = rng.normal(0, 1, (2, HIDDEN)), np.zeros(HIDDEN)
    w2, b2 = rng.normal(0, 1, HIDDEN), 0.0
    before = np.tanh(x @ w1 + b1)
    for _ in range(steps):
        h = np.tanh(x @ w1 + b1)
        p = 1 / (1 + np.exp(-(h @ w2 + b2)))
        d_out = (p - y) / len(y)  # sigmoid and cross-entropy together
        d_h = np.outer(d_out, w2) * (1 - h**2)
        w2, b2 = w2 - lr * h.T @ d_out, b2 - lr * d_out.sum()
        w1, b1 = w1 - lr * x.T @ d_h, b1 - lr * d_h.sum(axis=0)
    h = np.tanh(x @ w1 + b1)
    solved = bool(np.all((h @ w2 + b2 > 0) == (y == 1)))
    return {"before": before, "after": h, "solved": solved}


def hidden_space(options: dict, seed: int) -> dict:
    """Train the 2-2-1 net from fresh random weights until it solves XOR (at most `xor_restarts` tries):
    two tanh units can get stuck in a poor minimum, so several starts are the usual remedy."""
    x, y = xor.xor_data()
    x, y = x.astype(np.float64), y.astype(np.float64)
    rng = np.random.default_rng(seed)
    attempts = 0
    while attempts < options["xor_restarts"]:
        attempts += 1
        net = train_xor_net(x, y, rng, options["xor_steps"], options["xor_learning_rate"])
        if net["solved"]:
            break
    plane = xor.separating_hyperplane(net["after"], y)
    return {
        "attempts": attempts,
        "mlp_solved": net["solved"],
        "separable_before_training": xor.separating_hyperplane(net["before"], y) is not None,
        "separable": plane is not None,
        "plane": plane,
        "points": net["after"].round(6).tolist(),
        "before": net["before"].round(6).tolist(),
    }


def run(options: dict, train: dict | None, seed: int) -> dict:
    x, y = xor.xor_data()
    and_run = perceptron_rule(x, AND_Y, options["max_epochs"])
    xor_run = perceptron_rule(x, y, options["max_epochs"])
    space = hidden_space(options, seed)
    figures = {
        "and_converged": and_run["converged"],
        "and_epochs": len(and_run["mistakes"]),
        "xor_converged": xor_run["converged"],
        "xor_cycle": xor_run["cycle"],
        "xor_separable_in_input_space": xor.separating_hyperplane(x, y) is not None,
        "xor_separable_in_hidden_space": space["separable"],
        "xor_separable_in_hidden_space_before_training": space["separable_before_training"],
        "xor_net_attempts": space["attempts"],
    }
    passed = {
        "AND: the rule converges": and_run["converged"],
        "XOR: the rule cycles without converging": not xor_run["converged"] and xor_run["cycle"] is not None,
        "XOR: no line separates the inputs": not figures["xor_separable_in_input_space"],
        "XOR: a line separates the trained hidden layer's outputs": space["separable"],
    }
    cycle = xor_run["cycle"]
    looped = xor_run["mistakes"][cycle[0] : cycle[1]] if cycle else []
    wrong = "-".join(map(str, sorted({min(looped), max(looped)}))) if looped else ""
    shown = [
        f"From zero weights, the perceptron rule classifies AND without a mistake after {len(and_run['mistakes'])} "
        f"epochs (w = {and_run['w']}, b = {and_run['b']}).",
        "On XOR it never gets there: "
        + (
            f"after epoch {cycle[1]} the weights are back where they were before epoch {cycle[0] + 1}, so the same "
            f"{len(looped)} epoch(s) repeat forever, with {wrong} of the 4 points wrong in each."
            if cycle
            else f"it still made mistakes after {options['max_epochs']} epochs."
        ),
        f"A net with two tanh hidden units, trained by hand on XOR ({space['attempts']} random start(s) until it "
        "solved it), moves the four points to where "
        + ("one straight line separates them" if space["separable"] else "still no straight line separates them")
        + "; at its random start, "
        + ("a line happened to do so already." if space["separable_before_training"] else "no line did."),
    ]
    return {
        "figures": figures,
        "passed": passed,
        "holds": all(passed.values()),
        "and": and_run,
        "xor": xor_run,
        "hidden": space,
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    x, y = xor.xor_data()
    grid = np.linspace(-0.5, 1.5, 50)
    ax = axes[0]
    ax.scatter(x[:, 0], x[:, 1], c=["tab:red" if t else "tab:blue" for t in AND_Y], s=80)
    w, b = record["and"]["w"], record["and"]["b"]
    if w[1]:
        ax.plot(grid, -(w[0] * grid + b) / w[1], color="black", label="perceptron's line")
    ax.set(xlim=(-0.5, 1.5), ylim=(-0.5, 1.5), title="AND: the rule converges", xlabel="x1", ylabel="x2")
    ax.legend(loc="upper left")
    ax = axes[1]
    for name, color in (("and", "tab:green"), ("xor", "tab:purple")):
        mistakes = record[name]["mistakes"]
        ax.plot(range(1, len(mistakes) + 1), mistakes, marker="o", color=color, label=name.upper())
    ax.set(xlabel="epoch", ylabel="mistakes in the epoch", title="The perceptron rule, epoch by epoch")
    ax.legend()
    ax = axes[2]
    for key, marker, alpha in (("before", "x", 0.5), ("points", "o", 1.0)):
        h = np.array(record["hidden"][key])
        label = "at the random start" if key == "before" else "trained"
        ax.scatter(h[:, 0], h[:, 1], c=["tab:red" if t else "tab:blue" for t in y], marker=marker, s=80, alpha=alpha)
        ax.plot([], [], marker=marker, color="gray", linestyle="", label=label)
    for (u, v), name in zip(record["hidden"]["points"], ("(0,0)", "(0,1)", "(1,0)", "(1,1)"), strict=True):
        ax.annotate(name, (u, v), textcoords="offset points", xytext=(6, 6))
    plane = record["hidden"]["plane"]
    line = np.linspace(-1.1, 1.1, 50)
    if plane and plane[0][1]:
        ax.plot(line, -(plane[0][0] * line + plane[1]) / plane[0][1], color="black", label="a separating line")
    ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), title="XOR in the hidden layer's space")
    ax.set(xlabel="hidden unit 1", ylabel="hidden unit 2")
    ax.legend(loc="best", fontsize="small")
    save_figure(fig, path)
