"""Lesson `small_data`: the tutorial's net on about 1,000 training images, with and without its three remedies.

A stratified subset of `small_images` training images, trained from the same initial weights twice: plain,
and with dropout, L2 on both kernels and early stopping together (the tutorial's rate, strength and
patience). Early stopping watches `monitor_images` validation images; every gap is measured on the other
validation images, which no run has seen. The plain net trained on all the stage's `images` (ten times as
many by default) stands for the full data, for `large_epochs` epochs: about as many gradient steps as
`epochs` of the small set, so that mainly the number of distinct images differs. The claim holds when the
small set's gap is much larger than the larger set's, and the remedies narrow it.
"""

from __future__ import annotations

import numpy as np

TITLE = "Overfitting a small training set"
KERAS = True  # the stage seeds TensorFlow first
DATA = True  # the training split (`images` of it) and its validation images
CLAIM = (
    "An MLP easily overfits a small data set: it memorizes the training images instead of learning patterns "
    "that generalize. Dropout, L2 regularization and early stopping keep that from happening."
)
PLAIN, ALL = (False, False, False), (True, True, True)  # whether a run applies dropout, L2, early stopping


def measure(data: tuple, start: dict, options: dict, remedies: tuple, epochs: int) -> dict:
    """Train one net; its accuracy on its training images and on the held-out validation images."""
    import keras

    from fashion_mlp.lessons.regularization_strength import accuracy, tutorial_net

    x, y, watch, held = data
    dropout, l2, early = remedies
    rate, strength = (options["dropout"] if dropout else 0.0), (options["l2"] if l2 else 0.0)
    model = tutorial_net(start, rate, strength, options["learning_rate"])
    stop = keras.callbacks.EarlyStopping(patience=options["patience"], restore_best_weights=True)  # val_loss
    # Keras shuffles each epoch from the seeded TensorFlow: the same batches in every rerun.
    history = model.fit(
        x, y, batch_size=options["batch_size"], epochs=epochs, verbose=0,
        validation_data=watch if early else None, callbacks=[stop] if early else [],
    )  # fmt: skip
    fit, val = accuracy(model, x, y), accuracy(model, *held)
    kept = stop.best_epoch + 1 if early else len(history.history["loss"])
    del model
    keras.backend.clear_session(free_memory=True)  # three nets in one process: stay within 1 GB
    return {"train": fit, "validation": val, "gap": round(fit - val, 6), "epochs": kept}


def run(options: dict, train: dict, seed: int) -> dict:
    from fashion_mlp import PipelineError
    from fashion_mlp.data import stratified_indices
    from fashion_mlp.lessons.backprop import init_params

    y_val = train["y_val"]
    if options["monitor_images"] >= len(y_val):
        raise PipelineError(f"lesson small_data: monitor_images must leave some of the {len(y_val)} validation images")
    watched = stratified_indices(y_val, options["monitor_images"], seed)
    held = np.setdiff1d(np.arange(len(y_val)), watched)
    watch, held = (train["x_val"][watched], y_val[watched]), (train["x_val"][held], y_val[held])
    pick = stratified_indices(train["y"], options["small_images"], seed)
    small, large = (train["x"][pick], train["y"][pick], watch, held), (train["x"], train["y"], watch, held)
    start = init_params(np.random.default_rng(seed))
    larger = measure(large, start, options, PLAIN, options["large_epochs"])  # first: a peak RSS 40 MB lower
    plain = measure(small, start, options, PLAIN, options["epochs"])
    regularized = measure(small, start, options, ALL, options["epochs"])
    runs = {"plain": plain, "regularized": regularized, "larger_set": larger}
    n, big, more, narrower = len(pick), len(train["y"]), options["larger_by"], options["narrower_by"]
    passed = {
        f"the plain net's gap on {n:,} images is at least {more} above its gap on {big:,}": plain["gap"]
        >= larger["gap"] + more,
        f"dropout, L2 and early stopping narrow the gap on {n:,} images by at least {narrower}": regularized["gap"]
        <= plain["gap"] - narrower,
    }
    held_down, gained = plain["train"] - regularized["train"], regularized["validation"] - plain["validation"]
    how = "mostly by holding training accuracy down" if held_down > gained else "mostly by raising validation accuracy"
    more_data = larger["validation"] - regularized["validation"]
    shown = [
        f"On {n:,} training images for {options['epochs']} epochs, the plain net fits them to {plain['train']:.4f} but "
        f"reaches {plain['validation']:.4f} on {len(held[1]):,} validation images it never saw: a gap of "
        f"{plain['gap']:.4f}. On {big:,} images for about as many gradient steps ({options['large_epochs']} "
        f"epochs), the gap is {larger['gap']:.4f}.",
        f"Dropout {options['dropout']:g}, L2 {options['l2']:g} on both kernels and early stopping (patience "
        f"{options['patience']}, kept epoch {regularized['epochs']}) change the small set's gap to "
        f"{regularized['gap']:.4f}, {how}: training accuracy {-held_down:+.4f}, validation accuracy {gained:+.4f}.",
        f"The plain net on {big:,} images reaches {larger['validation']:.4f} on validation, {more_data:+.4f} against "
        "the remedies on the small set: "
        + ("more images do more than the three remedies together." if more_data > 0 else "the remedies do as well."),
    ]
    return {
        "figures": {"runs": runs, "small_images": n, "large_images": big},
        "passed": passed,
        "holds": all(passed.values()),
        "shown": shown,
    }


def plot(record: dict, path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    figures = record["figures"]
    runs, n, large = figures["runs"], figures["small_images"], figures["large_images"]
    names = [f"{n:,} images, plain", f"{n:,} images,\ndropout + L2 + early stop", f"{large:,} images, plain"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    where = np.arange(len(runs))
    for shift, key, label in ((-0.2, "train", "its training images"), (0.2, "validation", "unseen validation images")):
        ax.bar(where + shift, [r[key] for r in runs.values()], width=0.4, label=label)
    for x, r in zip(where, runs.values(), strict=True):
        ax.annotate(f"gap {r['gap']:.3f}", (x, max(r["train"], r["validation"])), ha="center", xytext=(0, 4),
                    textcoords="offset points")  # fmt: skip
    low = min(min(r["train"], r["validation"]) for r in runs.values()) - 0.1  # the differences, not the bars' feet
    ax.set(xticks=where, ylim=(max(low, 0), 1.02), ylabel="accuracy", title="The tutorial's net: small data overfits")
    ax.set_xticklabels([f"{name}\n({r['epochs']} epochs)" for name, r in zip(names, runs.values(), strict=True)])
    ax.legend(loc="lower right")
    save_figure(fig, path)
