"""Everything `explain` reports for one model: the samples, both methods and every check on them.

explain_model computes all of it before anything is written. Pure functions of arrays and models:
no files, no MLflow.
"""

from __future__ import annotations

import functools

import numpy as np

from fashion_mlp import inference
from fashion_mlp.attribution import cascade, data_randomization, gradients, randomization
from fashion_mlp.attribution.checks import CONTROLS, area_under, control_orders, deletion_curve, randomized_copy
from fashion_mlp.attribution.methods import ShapExplainers, conservation_summary, lrp_attributions, shap_attributions
from fashion_mlp.data import NUM_CLASSES


def stratified_sample(labels: np.ndarray, n_per_class: int | list[int], seed: int) -> np.ndarray:
    """Sorted indices of up to `n_per_class` images of every class (one count, or one per class), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    counts = [n_per_class] * NUM_CLASSES if isinstance(n_per_class, int) else n_per_class
    picks = []
    for cls, count in enumerate(counts):
        members = np.flatnonzero(labels == cls)
        picks.append(rng.choice(members, size=min(count, len(members)), replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


def pick_examples(
    labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, pool: np.ndarray, n_correct: int, n_mistakes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices for the examples figure: correct predictions from `pool`, one class after another,
    and the most confident mistakes of the whole test set (ties broken by index)."""
    correct = [i for i in pool if predicted[i] == labels[i]]
    by_class = [[i for i in correct if labels[i] == cls] for cls in range(NUM_CLASSES)]
    chosen: list[int] = []
    while len(chosen) < n_correct and any(by_class):
        for members in by_class:
            if members and len(chosen) < n_correct:
                chosen.append(members.pop(0))
    wrong = np.flatnonzero(predicted != labels)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:n_mistakes]
    return np.array(chosen, dtype=np.int64), mistakes.astype(np.int64)


def explain_model(
    model,
    background: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    opts: dict,
    seed: int,
    lrp: bool = True,
    training: tuple | None = None,
):
    """Every number and map of the stage, computed before anything is written.

    `lrp` False (a kind LRP does not cover, models/kinds.py) leaves LRP out: its part of the report is None.
    `training`: (images, labels) of the training split for the data randomization; None leaves it out.
    """
    predict = functools.partial(inference.probabilities, model)
    probabilities = predict(x_test)
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    sample = stratified_sample(y_test, opts["images_per_class"], seed)
    correct, mistakes = pick_examples(
        y_test, predicted, confidence, sample, opts["grid_correct"], opts["grid_mistakes"]
    )
    shown = np.concatenate([correct, mistakes])
    # The sample explains its true class (per-class maps, deletion); the examples their predicted class.
    images = np.concatenate([x_test[sample], x_test[shown]])
    targets = np.concatenate([y_test[sample], predicted[shown]])
    shap_out = shap_attributions(model, background, images, targets)
    n = len(sample)
    maps = {"shap": shap_out["values"]}
    rules = lrp_rules(opts)
    if lrp:
        lrp_out = lrp_attributions(model, images, targets, rules)
        maps["lrp"] = lrp_out["values"]

    random_model = randomized_copy(model, seed)
    random_maps = {"shap": shap_attributions(random_model, background, images[:n], targets[:n])["values"]}
    if lrp:
        random_maps["lrp"] = lrp_attributions(random_model, images[:n], targets[:n], rules)["values"]
    fractions = np.linspace(0.0, 1.0, opts["deletion_steps"] + 1)
    orders = {key: maps[key][:n] for key in maps} | control_orders(images[:n], seed)
    curves, areas = faithfulness_curves(predict, images[:n], targets[:n], orders, fractions)
    # Each method against noise of its own form: DeepSHAP's (x - background mean)·g, LRP-epsilon's x·g.
    centre = background.reshape(len(background), -1).mean(axis=0)
    sample_ = (images[:n], targets[:n])
    references = reference_report(
        model, random_model, sample_, centre, opts, seed, (predict, fractions, areas), lrp and rules.name != "epsilon"
    )
    permuted, data_randomization = permuted_label_check(model, training, x_test, y_test, opts, seed)
    layers = layer_randomization((model, random_model, permuted), background, sample_, centre, opts, seed, lrp)
    margin = opts["randomization_margin"]
    shap_check = randomization.check(maps["shap"][:n], random_maps["shap"], images[:n], centre, seed, margin=margin)
    report = {
        "explained_output": "logits (pre-softmax score of the explained class)",
        "images": {
            "explained": n,
            "per_class": opts["images_per_class"],
            "target": "true class",
            "examples_correct": len(correct),
            "examples_mistakes": len(mistakes),
            "background": len(background),
            "background_source": f"training split, stratified, seed {seed}",
        },
        "shap": {
            "method": "shap.DeepExplainer",
            "additivity_max_abs_gap": float(shap_out["additivity_gaps"].max()),
            "additivity_mean_abs_gap": float(shap_out["additivity_gaps"].mean()),
            "randomization": shap_check,
            **faithfulness(areas, "shap"),
        },
        "lrp": None
        if not lrp
        else {
            "method": f"{rules.name} rule",
            "epsilon": rules.epsilon,
            "gamma": rules.gamma if rules.name == "composite" else None,
            "folded_batchnorm": lrp_out["folded_batchnorm"],
            "conservation": conservation_summary(
                lrp_out["relevance_out"], lrp_out["relevance_in"], lrp_out["per_layer"]
            ),
            # The epsilon rule's maps are x·(something), like x·noise; z^B also credits black pixels: plain noise.
            "randomization": randomization.check(
                maps["lrp"][:n], random_maps["lrp"], images[:n], None, seed, rules.name == "epsilon", margin
            ),
            **faithfulness(areas, "lrp"),
        },
        "deletion": {"steps": opts["deletion_steps"], "fill": 0.0}
        | {f"{control}_area": areas["deletion"][control] for control in CONTROLS},
        "insertion": {f"{control}_area": areas["insertion"][control] for control in CONTROLS},
        "reference_methods": references,
        "cascade": layers["report"],
        "data_randomization": data_randomization,
    }
    return {
        "report": rounded(report),
        "sample": (images[:n], targets[:n], {k: v[:n] for k, v in maps.items()}),
        "examples": (
            images[n:],
            y_test[shown],
            predicted[shown],
            confidence[shown],
            {k: v[n:] for k, v in maps.items()},
        ),
        "deletion": (fractions, curves["deletion"], areas["deletion"]),
        "insertion": (fractions, curves["insertion"], areas["insertion"]),
        "cascade": (layers["report"], layers["image"], layers["label"], layers["maps"]),
    }


def faithfulness_curves(predict, images: np.ndarray, targets: np.ndarray, orders: dict, fractions: np.ndarray):
    """Each order's deletion and insertion curve, and their areas: ({mode: {order: curve}}, {mode: {order: area}})."""
    curves, areas = {}, {}
    for mode in ("deletion", "insertion"):
        curves[mode] = {
            key: deletion_curve(predict, images, targets, order, fractions, insert=mode == "insertion")
            for key, order in orders.items()
        }
        areas[mode] = {key: area_under(fractions, values) for key, values in curves[mode].items()}
    return curves, areas


# LRP with the epsilon rule in every layer, beside the composite: its maps are x·(something), as input × gradient.
LRP_EPSILON = ("LRP, ε in every layer", "x·noise")


def reference_report(
    model, random_model, sample: tuple, centre: np.ndarray, opts: dict, seed: int, faith: tuple, lrp_epsilon: bool
):
    """The gradient-based reference methods through the same checks as SHAP and LRP, against the same controls;
    with `lrp_epsilon` (LRP runs the composite), LRP-epsilon too, so that the composite's effect shows.

    `faith`: explain_model's (predict, fractions, areas), the controls' areas among them.
    """
    images, targets = sample
    predict, fractions, areas = faith
    trained = gradients.reference_maps(model, images, targets, centre, opts, seed)
    randomized = gradients.reference_maps(random_model, images, targets, centre, opts, seed)
    methods = dict(gradients.REFERENCE_METHODS)
    if lrp_epsilon:
        rules = lrp_rules(opts | {"lrp_rule": "epsilon"})
        trained["lrp_epsilon"] = lrp_attributions(model, images, targets, rules)["values"]
        randomized["lrp_epsilon"] = lrp_attributions(random_model, images, targets, rules)["values"]
        methods["lrp_epsilon"] = LRP_EPSILON
    _, own = faithfulness_curves(predict, images, targets, trained, fractions)
    both = {mode: own[mode] | {c: areas[mode][c] for c in CONTROLS} for mode in own}
    gaps = gradients.completeness_gaps(model, images, targets, trained, centre)
    out = {}
    for name, (label, form) in methods.items():
        by_input, around = form != "noise", centre if form.startswith("(") else None
        margin = opts["randomization_margin"]
        check = randomization.check(trained[name], randomized[name], images, around, seed, by_input, margin)
        out[name] = {"label": label, "randomization": check, **faithfulness(both, name)}
        if name in gaps:  # Integrated Gradients: how far its sum is from logit(x) - logit(baseline)
            out[name]["completeness_mean_abs_gap"] = gaps[name]
    return out


def permuted_label_check(model, training, x_test, y_test, opts: dict, seed: int):
    """The model trained on permuted labels (data_randomization.py) and its part of the report; (None, None)
    without training images or with data_randomization_epochs 0."""
    if training is None or not opts["data_randomization_epochs"]:
        return None, None
    images, labels = training
    permuted, memorized = data_randomization.permuted_label_model(
        model, images, labels, opts["data_randomization_epochs"], seed
    )
    predicted = inference.probabilities(permuted, x_test).argmax(axis=1)
    return permuted, {
        "images": len(images),
        "epochs": opts["data_randomization_epochs"],
        "source": f"training split, stratified, seed {seed}; labels permuted with seed {seed}",
        "accuracy_on_permuted_labels": memorized,
        "test_accuracy": float((predicted == y_test).mean()),
    }


def layer_randomization(models: tuple, background, sample: tuple, centre, opts: dict, seed: int, lrp: bool) -> dict:
    """cascade.cascade on the first `cascade_images_per_class` images of each class of the sample, for the
    methods of `cascade_methods` (LRP left out for a kind it does not cover)."""
    images, targets = sample
    pick = np.sort(
        np.concatenate([np.flatnonzero(targets == c)[: opts["cascade_images_per_class"]] for c in range(NUM_CLASSES)])
    )
    images, targets = images[pick], targets[pick]

    wanted = [m for m in opts["cascade_methods"] if lrp or m != "lrp"]
    shap_values = ShapExplainers(models[0], background).values if "shap" in wanted else None
    rules = lrp_rules(opts)

    def explain_all(variant) -> dict:
        maps = {}
        if shap_values:  # the costly one: a DeepExplainer per class, reused across the variants
            maps["shap"] = shap_values(variant, images, targets)
        if "lrp" in wanted:
            maps["lrp"] = lrp_attributions(variant, images, targets, rules)["values"]
        if set(wanted) & set(gradients.REFERENCE_METHODS):
            maps |= gradients.reference_maps(variant, images, targets, centre, opts, seed, wanted)
        return {m: maps[m] for m in wanted}

    model, random_model, permuted = models  # trained; re-initialized (seed `seed`); trained on permuted labels
    result = cascade.cascade(model, explain_all, images, seed, fresh=random_model, permuted=permuted)
    first = {step: {key: m[:1] for key, m in maps.items()} for step, maps in result["maps"].items()}
    return {"report": result["report"], "image": images[:1], "label": targets[:1], "maps": first}


def lrp_rules(opts: dict):
    """The LRP rules of params.yaml's explain section: epsilon everywhere, or the composite."""
    from fashion_mlp.attribution import lrp

    return lrp.Rules(opts["lrp_rule"], epsilon=opts["lrp_epsilon"], gamma=opts["lrp_gamma"])


def faithfulness(areas: dict, method: str) -> dict:
    """A method's deletion and insertion areas, and the controls it beats on both (lower deletion, higher insertion)."""
    deletion, insertion = areas["deletion"], areas["insertion"]
    beaten = [c for c in CONTROLS if deletion[method] < deletion[c] and insertion[method] > insertion[c]]
    missed = [c for c in CONTROLS if c not in beaten]
    return {
        "deletion_area": deletion[method],
        "insertion_area": insertion[method],
        "beats": {control: control in beaten for control in CONTROLS},
        "faithfulness_verdict": "beats every control" if not missed else "does not beat " + ", ".join(missed),
    }


def rounded(value):
    """Floats to 6 significant digits: the JSON stays readable and diffs show real changes only."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value
