"""Lesson `search_strategies`: grid search, random search and Hyperband on one space, by epochs spent.

The space is the tutorial's own (its KerasTuner code: hidden units 32 to 256 by 32) with a learning rate
from `learning_rates`, for the tutorial's net. Every configuration's learning curve (validation accuracy
after each of `max_epochs` epochs) is trained once, by hand in NumPy (backprop's net and Adam), from the
same seeded weights, batch order and dropout masks. KerasTuner's own oracles (GridSearchOracle,
RandomSearchOracle, HyperbandOracle) then search that table, as tabular benchmarks of hyperparameter
search do (HPOBench, LCBench): a trial scores the best validation accuracy of the epochs it trained, as
KerasTuner scores one, and costs those epochs; a promoted Hyperband trial goes on from its parent's last
epoch, as KerasTuner resumes it. Trained once, the searches are cheap to repeat: random search and
Hyperband run under `repeats` seeds, and the claim is decided on their medians.
"""

from __future__ import annotations

import tempfile
import warnings

import numpy as np

TITLE = "Grid search, random search and Hyperband"
KERAS = True  # KerasTuner's oracles import Keras (and TensorFlow); the training is NumPy
DATA = True  # a subset of the training split, and the validation images
CLAIM = (
    "Grid search and random search find good values of hyperparameters such as the number of units and the "
    "learning rate (and the tutorial's own code runs KerasTuner's Hyperband, which stops poor candidates early)."
)
STRATEGIES = ("grid", "random", "hyperband")


def configurations(options: dict) -> list[tuple[int, float]]:
    """The space, in the grid's order: (units, learning rate)."""
    return [(u, lr) for u in range(32, options["max_units"] + 1, 32) for lr in options["learning_rates"]]


def learning_curve(units: int, lr: float, train: dict, options: dict, seed: int) -> list[float]:
    """Validation accuracy after each epoch of the tutorial's net with `units` hidden units, Adam at `lr`."""
    from fashion_mlp.lessons.backprop import accuracy, adam_step, backward, dropout_mask, forward, init_params

    rng = np.random.default_rng(seed)  # the same start, batches and masks for every configuration
    p, state, size = init_params(rng, units), {}, options["batch_size"]
    x, y, curve = train["x"], train["y"], []
    for _ in range(options["max_epochs"]):
        order = rng.permutation(len(x))
        for start in range(0, len(x), size):
            batch = order[start : start + size]
            keep = dropout_mask(rng, (len(batch), units), options["dropout"])
            adam_step(p, backward(p, forward(p, x[batch], keep), y[batch]), state, lr)
        curve.append(round(accuracy(p, train["x_val"], train["y_val"]), 6))
    return curve


def oracle(strategy: str, options: dict, seed: int):
    """KerasTuner's oracle of `strategy` on the space; random search gets as many trials as the grid has points."""
    import keras_tuner as kt

    seed += 1  # KerasTuner takes a seed of 0 for none and draws its own: every seed is offset by one

    hp = kt.HyperParameters()
    hp.Choice("units", sorted({u for u, _ in configurations(options)}))
    hp.Choice("learning_rate", options["learning_rates"])
    objective = kt.Objective("val_accuracy", "max")
    if strategy == "grid":
        return kt.oracles.GridSearchOracle(objective=objective, hyperparameters=hp, seed=seed)
    if strategy == "random":
        trials = len(configurations(options))
        return kt.oracles.RandomSearchOracle(objective=objective, max_trials=trials, hyperparameters=hp, seed=seed)
    return kt.oracles.HyperbandOracle(
        objective=objective, max_epochs=options["max_epochs"], factor=options["factor"], hyperparameters=hp, seed=seed
    )


def search(strategy: str, table: dict, options: dict, seed: int) -> list[tuple[int, float]]:
    """One search of the table by KerasTuner's oracle: each trial's (epochs spent so far, score), in order."""
    import keras_tuner as kt

    trials: list[tuple[int, float]] = []

    class Replay(kt.Tuner):  # a trial looks its curve up instead of training
        def run_trial(self, trial, *args, **kwargs):
            values = trial.hyperparameters.values
            first, last = values.get("tuner/initial_epoch", 0), values.get("tuner/epochs", options["max_epochs"])
            score = max(table[(values["units"], values["learning_rate"])][first:last])
            trials.append(((trials[-1][0] if trials else 0) + last - first, score))
            return {"val_accuracy": score}

    with tempfile.TemporaryDirectory() as folder:  # KerasTuner's trial files, read by nothing after
        Replay(oracle=oracle(strategy, options, seed), directory=folder, project_name=strategy).search(verbose=0)
    return trials


def best_so_far(trials: list[tuple[int, float]], budget: int) -> np.ndarray:
    """The best score found by each number of epochs spent, 0 to `budget` (NaN before the first trial ends)."""
    curve = np.full(budget + 1, np.nan)
    best = -np.inf
    for spent, score in trials:
        best = max(best, score)
        curve[min(spent, budget) :] = best
    return curve


def epochs_to(trials: list[tuple[int, float]], target: float) -> float:
    """Epochs spent when a trial first scores at least `target`; infinite if none does."""
    return next((float(spent) for spent, score in trials if score >= target), float("inf"))


def decide(table: dict, options: dict, seed: int) -> dict:
    """Run the three searches on the table of learning curves; the record's figures, checks and curves."""
    (units, lr), curve = max(table.items(), key=lambda item: max(item[1]))
    best, tolerance = max(curve), options["tolerance"]
    target, budget = best - tolerance, len(table) * options["max_epochs"]
    seeds = {"grid": [seed], "random": [seed + r for r in range(options["repeats"])]}
    seeds["hyperband"] = seeds["random"]
    runs = {s: [search(s, table, options, k) for k in seeds[s]] for s in STRATEGIES}
    figures = {"space_best": {"units": units, "learning_rate": lr, "val_accuracy": best}, "grid_budget": budget}
    for s in STRATEGIES:
        to_target = np.median([epochs_to(trials, target) for trials in runs[s]])
        figures[s] = {
            "median_best": float(np.median([max(score for _, score in trials) for trials in runs[s]])),
            "median_epochs": float(np.median([trials[-1][0] for trials in runs[s]])),
            "median_epochs_to_target": None if np.isinf(to_target) else float(to_target),
            "trials": int(np.median([len(trials) for trials in runs[s]])),
        }
    reach = {s: figures[s]["median_epochs_to_target"] or np.inf for s in STRATEGIES}
    n = options["repeats"]
    passed = {
        f"random search's median best over {n} seeds is within {tolerance} of the space's best": figures["random"][
            "median_best"
        ]
        >= target,
        f"Hyperband's median best over {n} seeds is within {tolerance} of the space's best": figures["hyperband"][
            "median_best"
        ]
        >= target,
        "Hyperband gets within it for fewer epochs than grid search and random search (medians)": reach["hyperband"]
        < min(reach["grid"], reach["random"]),
    }
    bands = {s: np.array([best_so_far(trials, budget) for trials in runs[s]]) for s in STRATEGIES}
    return {"figures": figures, "passed": passed, "holds": all(passed.values()), "_bands": bands}


def run(options: dict, train: dict, seed: int) -> dict:
    table = {(u, lr): learning_curve(u, lr, train, options, seed) for u, lr in configurations(options)}
    record = decide(table, options, seed)
    f, tolerance = record["figures"], options["tolerance"]
    space_best = f["space_best"]

    def reached(s: str) -> str:
        spent = f[s]["median_epochs_to_target"]
        return "never" if spent is None else f"after {spent:g} epochs"

    shown = [
        f"Trained for {options['max_epochs']} epochs on {len(train['y']):,} training images, the {len(table)} "
        f"configurations reach {min(max(c) for c in table.values()):.4f} to {space_best['val_accuracy']:.4f} "
        f"validation accuracy; the best has {space_best['units']} units and learning rate "
        f"{space_best['learning_rate']:g}. Grid search trains all of them fully: {f['grid_budget']} epochs.",
        f"Within {tolerance} of that best, in the median of {options['repeats']} seeds: grid search (in its order) "
        f"{reached('grid')}, random search {reached('random')}, Hyperband {reached('hyperband')}. A whole Hyperband "
        f"search spends {f['hyperband']['median_epochs']:g} epochs on {f['hyperband']['trials']} trials and ends at "
        f"{f['hyperband']['median_best']:.4f} (median).",
        "Grid search's cost grows with the product of the values tried, and its order decides when it meets the "
        "good region; random search is as good at the same budget and can stop any time; Hyperband gives many "
        "candidates a few epochs and only the best of each round more, which works when early epochs already rank "
        "the candidates as the last ones do.",
    ]
    record["shown"] = shown
    record["table"] = {f"{u} units, lr {lr:g}": c for (u, lr), c in table.items()}
    record["_table"] = table
    return record


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    table, bands, f = record["_table"], record["_bands"], record["figures"]
    units = sorted({u for u, _ in table})
    rates = sorted({lr for _, lr in table})
    grid = np.array([[max(table[(u, lr)]) for lr in rates] for u in units])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.2), width_ratios=[1, 1.8], layout="constrained")
    shown = left.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        dark = value < grid.min() + 0.6 * (grid.max() - grid.min())  # viridis is dark at the bottom
        left.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    left.set(xticks=range(len(rates)), yticks=range(len(units)), xlabel="learning rate", ylabel="hidden units",
             title="The space: best validation accuracy")  # fmt: skip
    left.set_xticklabels([f"{lr:g}" for lr in rates])
    left.set_yticklabels([str(u) for u in units])
    fig.colorbar(shown, ax=left)
    epochs = np.arange(f["grid_budget"] + 1)
    for s, color in zip(STRATEGIES, ("tab:gray", "tab:blue", "tab:orange"), strict=True):
        runs = bands[s]
        if len(runs) == 1:
            right.plot(epochs, runs[0], color=color, label=f"{s} search")
            continue
        with warnings.catch_warnings(action="ignore"):  # all-NaN columns before the first trial ends
            low, mid, high = np.nanquantile(runs, [0.25, 0.5, 0.75], axis=0)
        right.plot(epochs, mid, color=color, label=f"{s}: median of {len(runs)} seeds, quartiles shaded")
        right.fill_between(epochs, low, high, color=color, alpha=0.2)
    target = f["space_best"]["val_accuracy"] - record["params"]["tolerance"]
    right.axhline(target, color="black", linestyle="--", linewidth=1, label="within the tolerance of the best")
    right.set(xlabel="epochs spent", ylabel="best validation accuracy so far", title="Searching the space")
    right.set_ylim(target - 0.06, f["space_best"]["val_accuracy"] + 0.01)  # the searches' ends, not their starts
    right.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)
