"""`fashion-mlp predict FILES|DIRS|GLOBS`: classify pictures with the champion (or any .keras or .onnx model).

Each picture goes through fashion_mlp.images: grayscale, trimmed, fitted into 28x28 and centred,
inverted when its background is light, scaled as `prepare` scales (docs/serving.md). A picture
that cannot be read gets an error naming it and the others go on; the exit code is 1 if any failed.
The default model is `models:/<mlflow.registered_model>@champion` in the pipeline's MLflow store
(MLFLOW_TRACKING_URI overrides it, as for every stage). A registered version carries its checked
ONNX export, which runs through ONNX Runtime without importing TensorFlow (onnx_model.py); a .keras
file, or a version registered before exports, runs through Keras.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fashion_mlp import PipelineError
from fashion_mlp.data import CLASS_NAMES
from fashion_mlp.images import ImageError, load
from fashion_mlp.inference import probabilities
from fashion_mlp.registry import CHAMPION_ALIAS

DEFAULT_REGISTERED_MODEL = "fashion-mnist-classifier"
CHUNK = 1024  # pictures decoded and predicted at a time: bounded memory for big directories
GLOB_CHARS = set("*?[")
CLASS_WIDTH = max(len(name) for name in CLASS_NAMES)


def default_model() -> str:
    """models:/<mlflow.registered_model>@champion, the name read from params.yaml when there is one."""
    name = DEFAULT_REGISTERED_MODEL
    try:
        from fashion_mlp.config import load_params, project_root

        name = load_params(project_root() / "params.yaml")["mlflow"]["registered_model"]
    except (PipelineError, OSError, KeyError):
        pass  # outside a checkout: the pipeline's default name
    return f"models:/{name}@{CHAMPION_ALIAS}"


def image_suffixes() -> set[str]:
    from PIL import Image

    return set(Image.registered_extensions())


def expand(inputs: list[str]) -> Iterator[tuple[str, str | None]]:
    """(path, error) for every picture the arguments name: files, directories (their image files,
    sorted, not recursing), globs. Explicit files are always tried, whatever their suffix."""
    seen: set[str] = set()

    def directory(path: Path) -> Iterator[tuple[str, str | None]]:
        suffixes = image_suffixes()
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not found:
            yield str(path), f"{path}: directory holds no image files"
        for p in found:
            yield str(p), None

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pairs = directory(path)
        elif path.exists() or not GLOB_CHARS & set(item):
            pairs = iter([(item, None)])  # a missing file fails when it is read, with its name
        else:
            matches = sorted(glob.glob(item, recursive=True))
            pairs = iter([(item, f"{item}: no file matches this pattern")]) if not matches else None
            if matches:
                pairs = (pair for m in matches for pair in (directory(Path(m)) if Path(m).is_dir() else [(m, None)]))
        for name, error in pairs:
            if name not in seen:
                seen.add(name)
                yield name, error


def open_model(uri: str):
    """A model from a .onnx or .keras file or an MLflow model URI (the image pyfunc, or a Keras-flavour model).

    From MLflow, the model's files are downloaded and its ONNX export loaded, or else its one .keras
    file in safe mode: the pyfunc wrapper is not run (it is code since the serving change, and older
    versions hold a pickle), and nothing here unpickles.
    """
    if uri.endswith(".onnx"):
        return _onnx_file(uri)
    if Path(uri).exists() or uri.endswith(".keras"):
        return _keras_file(uri)
    import mlflow

    from fashion_mlp import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp()))
    except mlflow.exceptions.MlflowException as exc:
        raise PipelineError(
            f"cannot load {uri} from the MLflow store {tracking.tracking_uri()} ({exc.message}); "
            "run the pipeline first (make run), set MLFLOW_TRACKING_URI, or pass --model path/to/model.keras"
        ) from None
    try:
        exported = sorted(local.rglob("*.onnx"))
        if len(exported) == 1:
            return _onnx_file(exported[0])  # ONNX Runtime reads the whole file when it loads
        found = sorted(local.rglob("*.keras"))
        if len(found) != 1:
            raise PipelineError(f"{uri}: expected one .keras file in the MLflow model, found {len(found)}")
        return _keras_file(found[0])
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _onnx_file(path) -> object:
    from fashion_mlp.onnx_model import OnnxModel
    from fashion_mlp.runtime import default_threads

    return OnnxModel(path, threads=default_threads())


def _keras_file(path) -> object:
    import keras

    from fashion_mlp.runtime import configure_tensorflow, default_threads

    # As evaluate does (the same floats); a process where TensorFlow runs already (tests) keeps its settings.
    with contextlib.suppress(RuntimeError):
        configure_tensorflow(default_threads(), seed=0)
    keras.config.disable_interactive_logging()
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: cannot load this Keras model ({exc})") from None


def top_k(probs: np.ndarray, k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [(CLASS_NAMES[i], float(probs[i])) for i in order]


def format_row(name: str, ranked: list[tuple[str, float]], width: int) -> str:
    return f"{name:<{width}}  " + "  ".join(f"{cls:<{CLASS_WIDTH}} {p:.3f}" for cls, p in ranked)


def predict_files(model, pairs: list[tuple[str, str | None]], k: int, as_json: bool, out=None) -> int:
    """Print one answer per picture, in order (to `out`, default stdout); return how many failed."""
    out = out or sys.stdout
    failed = 0
    width = min(60, max((len(name) for name, _ in pairs), default=4))
    if not as_json and pairs:
        print(f"{'file':<{width}}  top {k} (class probability)", file=out)
    for start in range(0, len(pairs), CHUNK):
        rows: list[tuple[str, np.ndarray | str]] = []
        for name, error in pairs[start : start + CHUNK]:
            if error is None:
                try:
                    rows.append((name, load(name)))
                    continue
                except ImageError as exc:
                    error = str(exc)
            rows.append((name, error))
        good = [x for _, x in rows if isinstance(x, np.ndarray)]
        probs = iter(probabilities(model, np.stack(good)) if good else [])
        for name, x in rows:
            if isinstance(x, str):
                failed += 1
                print(f"fashion-mlp predict: error: {x}", file=sys.stderr)
                if as_json:
                    print(json.dumps({"file": name, "error": x}), file=out)
                continue
            ranked = top_k(next(probs), k)
            if as_json:
                answer = [{"class": cls, "probability": round(p, 6)} for cls, p in ranked]
                print(json.dumps({"file": name, "predictions": answer}), file=out)
            else:
                print(format_row(name, ranked, width), file=out)
    return failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fashion-mlp predict", description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", metavar="FILE|DIR|GLOB", help="pictures, directories of them, globs")
    parser.add_argument(
        "--model", default=None, help="a .keras or .onnx file or an MLflow model URI (default: models:/NAME@champion)"
    )
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per picture (1-10; default 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 1 <= args.top <= len(CLASS_NAMES):
        parser.error(f"--top must be between 1 and {len(CLASS_NAMES)}, got {args.top}")
    pairs = list(expand(args.inputs))
    model = open_model(args.model or default_model())
    failed = predict_files(model, pairs, args.top, args.json)
    sys.stdout.flush()
    if failed:
        raise PipelineError(f"{failed} of {len(pairs)} pictures failed (see the errors above)")


if __name__ == "__main__":
    main()
