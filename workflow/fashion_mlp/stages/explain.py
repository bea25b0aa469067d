"""Stage `explain`: SHAP and LRP attributions for one model, with sanity and faithfulness checks (docs/explain.md).

Reads the model, a stratified background sample of the training split (train.npz) and
test images (test.npz). Like `evaluate`, it only measures and draws on the test set: no stage
fits or chooses a model, hyperparameter or threshold on it (docs/explain.md). Both methods
explain the chosen class's logit, not its softmax probability: a logit is one class's own
evidence, while a probability also moves with every other class's score and saturates near 1,
which squeezes a confident prediction's attributions towards 0. SHAP's additivity and LRP's
conservation are then stated for the same number.
Writes reports/explain/<model>.json, a deletion-curve CSV (for `dvc plots`) and five figures,
and logs all of it into the model's training run in MLflow.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.attribution.checks import CONTROLS
from fashion_mlp.attribution.randomization import JUDGED_ON
from fashion_mlp.config import add_section_flags, section_from_args, validate_section
from fashion_mlp.data import IMAGE_SHAPE, NUM_CLASSES
from fashion_mlp.io import atomic_output, write_json
from fashion_mlp.models import kinds
from fashion_mlp.stages.common import add_flags

FEATURES = math.prod(IMAGE_SHAPE)


class ExplainError(PipelineError):
    """A bad model file or sample for `explain`; the message names the file."""


# --- inputs -------------------------------------------------------------------------


def load_model_checked(path: Path):
    """The Keras model at `path` and its kind (models/kinds.py), refused with a message naming the file
    unless it takes 784 features, is of a known kind and, where the kind says LRP covers it, is made
    of layers LRP covers."""
    import keras

    from fashion_mlp.attribution.lrp import UnsupportedLayer, layer_steps

    if not Path(path).is_file():
        raise ExplainError(f"{path}: model file not found")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, zipfile and h5py errors alike
        raise ExplainError(f"{path}: not a Keras model ({type(exc).__name__}: {exc})") from None
    try:
        kind = kinds.of_saved(path)
    except kinds.KindError as exc:
        raise ExplainError(str(exc)) from None
    shape = getattr(model, "input_shape", None)
    if not isinstance(shape, tuple) or None in shape[1:] or math.prod(shape[1:]) != FEATURES:
        raise ExplainError(f"{path}: the model's input shape is {shape}, expected {FEATURES} features (28 x 28)")
    try:
        if kind.lrp:
            layer_steps(model)
    except UnsupportedLayer as exc:
        raise ExplainError(f"{path}: {exc}") from None
    if model.output_shape[-1] != NUM_CLASSES:
        raise ExplainError(f"{path}: the model has {model.output_shape[-1]} outputs, expected {NUM_CLASSES}")
    return model, kind


def load_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """x_<split> as float32 (N, 28, 28) and y_<split>, refused with a message naming the file if empty or misshapen."""
    import zipfile

    x_key, y_key = f"x_{split}", f"y_{split}"
    if not Path(path).is_file():
        raise ExplainError(f"{path}: file not found; run the prepare stage first")
    try:  # only the two arrays needed: train.npz also holds the validation split
        with np.load(path, allow_pickle=False) as npz:
            if x_key not in npz.files or y_key not in npz.files:
                raise ExplainError(f"{path}: has no {x_key} and {y_key} arrays (found: {', '.join(sorted(npz.files))})")
            arrays = {x_key: npz[x_key], y_key: npz[y_key]}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ExplainError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    images, labels = arrays[x_key], arrays[y_key]
    check_images(images, f"{path} ({x_key})")
    if labels.shape != (len(images),):
        raise ExplainError(f"{path}: {y_key} has shape {labels.shape}, expected ({len(images)},)")
    return images.reshape(len(images), *IMAGE_SHAPE).astype(np.float32), labels.astype(np.int64)


def check_images(images: np.ndarray, name: str) -> None:
    """An image sample must hold at least one image of 784 pixels."""
    if images.ndim >= 1 and len(images) == 0:
        raise ExplainError(f"{name}: the sample is empty (shape {images.shape}); it needs at least one image")
    if images.ndim < 2 or math.prod(images.shape[1:]) != FEATURES:
        raise ExplainError(f"{name}: images have shape {images.shape[1:]}, expected {IMAGE_SHAPE} ({FEATURES} pixels)")


# --- the stage ----------------------------------------------------------------------


# dvc.yaml's deletion plots read these columns from every model's CSV: the deletion curves, then the insertion ones.
DELETION_COLUMNS = ("shap", "lrp", *CONTROLS)
INSERTION_PREFIX = "insertion_"


def write_deletion_csv(path: Path, fractions: np.ndarray, deletion: dict, insertion: dict) -> None:
    """One column per ordering and curve; a method not run for the model's kind (LRP) is an empty column."""
    curves = deletion | {INSERTION_PREFIX + key: values for key, values in insertion.items()}
    columns = [*DELETION_COLUMNS, *(INSERTION_PREFIX + key for key in DELETION_COLUMNS)]
    columns += [key for key in curves if key not in columns]
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["fraction", *columns])
        for i, fraction in enumerate(fractions):
            writer.writerow([f"{fraction:.4g}", *(f"{curves[key][i]:.6g}" if key in curves else "" for key in columns)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp explain", description=__doc__.splitlines()[0])
    add_section_flags(parser, "explain")
    add_flags(parser, "model", "seed", "threads", "experiment")
    parser.add_argument("--model_path", type=Path, required=True)
    parser.add_argument("--train_data", type=Path, required=True, help="train.npz: the background sample")
    parser.add_argument("--test_data", type=Path, required=True, help="test.npz: the explained images")
    parser.add_argument("--json_out", type=Path, required=True, help="reports/explain/<model>.json")
    parser.add_argument("--deletion_out", type=Path, required=True, help="deletion curves CSV")
    parser.add_argument("--classes_png", type=Path, required=True)
    parser.add_argument("--examples_png", type=Path, required=True)
    parser.add_argument("--deletion_png", type=Path, required=True)
    parser.add_argument("--cascade_png", type=Path, required=True, help="similarity as layers are re-initialized")
    parser.add_argument("--randomized_png", type=Path, required=True, help="one image's maps, layer after layer")
    return parser


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    opts = section_from_args(args, "explain")
    validate_section("explain", opts)

    from fashion_mlp.runtime import configure_tensorflow

    configure_tensorflow(args.threads, args.seed)
    from fashion_mlp.attribution import figures, model_report

    model, kind = load_model_checked(args.model_path)
    x_train, y_train = load_split(args.train_data, "train")
    size = opts["background_size"]
    per_class = [size // NUM_CLASSES + (cls < size % NUM_CLASSES) for cls in range(NUM_CLASSES)]
    background = x_train[model_report.stratified_sample(y_train, per_class, args.seed)]
    check_images(background, f"{args.train_data} (background sample)")
    kept = model_report.stratified_sample(y_train, opts["data_randomization_images"] // NUM_CLASSES, args.seed)
    training = (x_train[kept], y_train[kept])  # the data randomization's images; their labels get permuted
    del x_train, y_train  # 170 MB that nothing else reads
    x_test, y_test = load_split(args.test_data, "test")
    shape = (-1, *model.input_shape[1:])
    seconds = {"set-up": time.perf_counter() - started}
    result = model_report.explain_model(
        model, background.reshape(shape), x_test.reshape(shape), y_test, opts, args.seed, kind.lrp, training
    )

    seconds["attributions and checks"] = time.perf_counter() - started - sum(seconds.values())
    report = {"model": args.model, **result["report"]}
    title = args.model
    write_json(args.json_out, report)
    write_deletion_csv(args.deletion_out, *result["deletion"][:2], result["insertion"][1])
    figures.plot_class_maps(*result["sample"], args.classes_png, title)
    figures.plot_examples(*result["examples"], args.examples_png, title)
    figures.plot_deletion(result["deletion"], result["insertion"], args.deletion_png, title)
    figures.plot_cascade(result["cascade"][0], args.cascade_png, title)
    figures.plot_randomized(*result["cascade"][1:], args.randomized_png, title)
    seconds["outputs"] = time.perf_counter() - started - sum(seconds.values())
    # Wall times go to the log and MLflow only: the JSON stays the same from run to run.
    run_id = log_to_mlflow(args, report, time.perf_counter() - started)
    seconds["mlflow"] = time.perf_counter() - started - sum(seconds.values())
    print("explain: seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    checks = [
        f"{name} randomization rho of |maps| on the garment {report[key]['randomization'][JUDGED_ON]:.3f} "
        f"against {report[key]['randomization']['noise_reference'][JUDGED_ON]:.3f} for noise maps "
        f"({report[key]['randomization']['verdict']}), deletion area {report[key]['deletion_area']:.3f}, insertion "
        f"area {report[key]['insertion_area']:.3f} ({report[key]['faithfulness_verdict']})"
        for key, name in (("shap", "SHAP"), ("lrp", "LRP"))
        if report[key] is not None
    ]
    print(
        f"explain: {args.model}: SHAP additivity gap {report['shap']['additivity_max_abs_gap']:.2g}; "
        + "; ".join(checks)
        + "; controls' deletion / insertion areas "
        + ", ".join(
            f"{c} {report['deletion'][f'{c}_area']:.3f} / {report['insertion'][f'{c}_area']:.3f}" for c in CONTROLS
        )
        + f"; MLflow run {run_id}"
    )


def metrics_of(report: dict) -> dict[str, float]:
    """The report's numbers as flat MLflow metric names, explain_<method>_<figure>."""
    out = {}
    parts = {method: report[method] for method in ("shap", "lrp")} | report.get("reference_methods", {})
    for method, part in parts.items():
        if part is None:  # LRP does not cover the model's kind
            continue
        out[f"explain_{method}_deletion_area"] = part["deletion_area"]
        out[f"explain_{method}_insertion_area"] = part["insertion_area"]
        out[f"explain_{method}_randomization_spearman"] = part["randomization"]["spearman"]
        out[f"explain_{method}_randomization_spearman_abs"] = part["randomization"]["spearman_abs"]
        out[f"explain_{method}_randomization_spearman_abs_on_garment"] = part["randomization"][JUDGED_ON]
        out[f"explain_{method}_randomization_noise_reference"] = part["randomization"]["noise_reference"][JUDGED_ON]
    out["explain_shap_additivity_max_abs_gap"] = report["shap"]["additivity_max_abs_gap"]
    if report["lrp"] is not None:
        out["explain_lrp_conservation_relative_gap"] = report["lrp"]["conservation"]["mean_abs_gap_relative"]
    for method, steps in report["cascade"]["cascading"].items():  # every layer re-initialized; two random models
        out[f"explain_{method}_cascade_all_layers"] = steps[-1]["mean"]
        out[f"explain_{method}_two_random_inits"] = report["cascade"]["two_random_inits"][method]["mean"]
        if "permuted_labels" in report["cascade"]:
            out[f"explain_{method}_permuted_labels"] = report["cascade"]["permuted_labels"][method]["mean"]
    for control in CONTROLS:
        out[f"explain_{control}_deletion_area"] = report["deletion"][f"{control}_area"]
        out[f"explain_{control}_insertion_area"] = report["insertion"][f"{control}_area"]
    return {k: v for k, v in out.items() if math.isfinite(v)}


def log_to_mlflow(args: argparse.Namespace, report: dict, seconds: float) -> str:
    """Add the explanation figures, JSON and numbers to the run that trained this exact model file."""
    import mlflow

    from fashion_mlp import tracking

    experiment_id = tracking.init(args.experiment)
    with tracking.model_run(experiment_id, args.model_path, args.model, "explain", args.test_data) as active:
        tracking.with_retry(mlflow.log_metrics, metrics_of(report) | {"explain_seconds": seconds})
        tracking.with_retry(mlflow.set_tags, {"explain_engine": tracking.engine()})
        mlflow.log_artifact(str(args.json_out), artifact_path="explain")
        mlflow.log_artifact(str(args.deletion_out), artifact_path="explain/deletion")
        for path in (args.classes_png, args.examples_png, args.deletion_png, args.cascade_png, args.randomized_png):
            mlflow.log_artifact(str(path), artifact_path="figures")
        return active.info.run_id


if __name__ == "__main__":
    main()
