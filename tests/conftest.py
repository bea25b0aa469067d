"""Shared test helpers (tests/ and its folders are on sys.path, so test files `from conftest import ...`).

- the repository, the virtualenv's commands and a clean environment for subprocesses;
- a throw-away copy of the repository with smoke-sized params (smoke_params.py; the e2e tests);
- PNG checks and a synthetic `predictions` fixture (evaluate and report);
- skip-or-fail for missing system services, free loopback ports;
- a new MLflow SQLite store without MLflow's migrations (`mlflow_store`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

# One OpenBLAS and one TensorFlow thread per test process, set before NumPy or TensorFlow loads. The
# xdist workers already fill the cores; each with two BLAS threads, which spin while they wait, a small
# scikit-learn fit took 29 s instead of 3 s beside a busy core. (The `lesson` stage computes under one
# BLAS thread too; the stages set TensorFlow's threads themselves.) Subprocesses get the user's own
# settings back (user_threads).
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
USER_THREADS = {name: os.environ.get(name) for name in THREAD_VARS}
os.environ.update(dict.fromkeys(THREAD_VARS, "1"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from fashion_mlp.io import TMP_MARK  # noqa: E402
from smoke_params import DEBIAN_DATA, DROP, SMOKE  # noqa: E402  (re-exported to the tests)

# The tests live in a folder per role (stages/, engines/, ...), and some import another's helpers by
# module name (`from test_images import fashion_like`); pytest puts a test's own folder on sys.path only
# when it collects that file, so every folder goes there now, before any test module is imported.
TESTS = Path(__file__).resolve().parent
sys.path[1:1] = [
    str(room) for room in sorted(TESTS.iterdir()) if room.is_dir() and not room.name.startswith((".", "_"))
]

# The smoke pipelines' background runs and their fixtures (snakemake_first, dvc_first, ...).
pytest_plugins = ["smoke_runs"]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv running pytest holds fashion-mlp, snakemake, dvc
CLI = BIN / "fashion-mlp"
SUBPROCESS_TIMEOUT = 180
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A Hyperband trial's values as KerasTuner records them: 2 active layers of 3 declared, bookkeeping keys.
TRIAL = {
    "layers": 2,
    "units_0": 512,
    "units_1": 256,
    "units_2": 32,
    "dropout": 0.3,
    "l2": 1e-05,
    "learning_rate": 0.001,
    "batchnorm": 1,
    "tuner/epochs": 10,
    "tuner/bracket": 0,
    "tuner/round": 0,
}


def user_threads(env: dict[str, str]) -> dict[str, str]:
    """`env` with the thread counts as the user had them, not as this file sets them for the tests."""
    env = {k: v for k, v in env.items() if k not in THREAD_VARS}
    return env | {name: value for name, value in USER_THREADS.items() if value is not None}


def engine_env() -> dict[str, str]:
    """The environment a user's shell would give the engines: venv first, no inherited overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "FASHION_MLP_", "SNAKEMAKE_"))}
    env = user_threads(env)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.invalid"
    return env


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment minus anything that would steer runs into the repo's store or tag them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "MLFLOW_TRACKING_URI",
            "FASHION_MLP_ROOT",
            "FASHION_MLP_ENGINE",
            "DVC_ROOT",
            "DVC_STAGE",
            "DVC_EXP_NAME",
            "FASHION_MLP_INVOCATION",
            "FASHION_MLP_TUNE_WORKERS",
            "FASHION_MLP_FORKSERVER",
            "FASHION_MLP_PROFILE_DIR",
            "OMP_NUM_THREADS",
        )
    }
    env = user_threads(env)
    env.update(TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0", **extra)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=engine_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode})\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def dvc_render(workdir: Path, sections: list[dict]) -> list[str]:
    """How DVC itself renders each section as `${section}` in a stage's command: `dvc repro --dry` on a
    tiny repository in `workdir`, one stage per section (DVC's public behaviour, not its internals)."""
    repo = workdir / "dvc-render"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "params.yaml").write_text(yaml.safe_dump({f"s{i}": s for i, s in enumerate(sections)}, sort_keys=False))
    stages = {f"r{i}": {"cmd": f"echo ${{s{i}}}", "params": [f"s{i}"]} for i in range(len(sections))}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    out = run(["dvc", "repro", "--dry", *stages], repo).stdout
    rendered = dict(re.findall(r"^Running stage 'r(\d+)':\n> echo ?(.*)$", out, flags=re.M))
    assert sorted(map(int, rendered)) == list(range(len(sections))), out
    return [rendered[str(i)] for i in range(len(sections))]


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `fashion-mlp ARGS` as an engine would, with extra environment variables."""
    return subprocess.run(
        [str(CLI), *args], cwd=cwd, env=engine_env() | env, capture_output=True, text=True, timeout=120
    )


def set_param(params: dict, dotted: str, value) -> None:
    """Set `a.b.c` in a params dict (remove it if `value` is DROP); `*` matches every key at that level."""
    head, _, rest = dotted.partition(".")
    keys = list(params) if head == "*" else [head]
    for key in keys:
        if rest:
            set_param(params[key], rest, value)
        elif value is DROP:
            del params[key]
        else:
            params[key] = value


def edit_params(repo: Path, changes: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        set_param(params, dotted, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repo(dest: Path) -> Path:
    """Copy the working tree as git sees it (tracked and untracked, minus ignored files)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def smoke_copy(dest: Path) -> Path:
    """A fresh git clone-alike of the project in `dest`, with smoke params, committed, ready to run."""
    require_debian_data()
    repo = copy_repo(dest)
    edit_params(repo, SMOKE)
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "smoke copy"], repo)
    return repo


@pytest.fixture
def smoke_repo(tmp_path: Path) -> Path:
    """A smoke copy for one test; module-scoped ones come from smoke_copy(tmp_path_factory.mktemp(...))."""
    return smoke_copy(tmp_path / "repo")


@pytest.fixture(autouse=True)
def absl_logs_to_the_real_stderr():
    """After each test, point absl's log handler (made when TensorFlow is first imported, bound to the
    stream that was sys.stderr then: a test's captured stream) at the process's real stderr. Otherwise
    a later logging reset on the same worker (DVC's Repo.artifacts.read() does one) closes that
    handler, and absl closes the captured stream it holds: every later test of the worker then
    errors with "I/O operation on closed file"."""
    yield
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture(scope="module")
def real_params() -> dict:
    """The repository's params.yaml, as it is (test_config*.py)."""
    with open(REPO / "params.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def params(real_params) -> dict:
    """A copy of params.yaml that a test may change."""
    import copy

    return copy.deepcopy(real_params)


@pytest.fixture(scope="module")
def keras():
    """Keras, imported when a test asks for it (test_models.py, test_model_kinds.py)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


@pytest.fixture(scope="module")
def models(keras):
    """fashion_mlp.models' functions in one namespace, imported after the `keras` fixture quiets TensorFlow's log."""
    import types

    from fashion_mlp.models import architectures, fitting, kinds, saving

    return types.SimpleNamespace(
        **{name: getattr(module, name) for module in (architectures, fitting, saving) for name in dir(module)},
        build_model=lambda block, name="model": kinds.build(block, name),
    )


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store with its tables made, once per worker: MLflow's migrations take 2-4 s
    for each new store, a copy of this file 0.1 s."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


@pytest.fixture
def mlflow_store(tmp_path: Path, mlflow_store_template: Path) -> str:
    """The URI of a new, empty MLflow SQLite store in the test's tmp_path (a copy of the template)."""
    shutil.copyfile(mlflow_store_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_debian_data() -> None:
    """The real data, for the tests that read it: skipped on a workstation without it, a failure in CI."""
    if not DEBIAN_DATA.is_dir():
        missing_service(f"{DEBIAN_DATA} missing", "apt-get install dataset-fashion-mnist (make test does)")


def missing_service(reason: str, install: str) -> None:
    """A system service a test needs is missing: skip on a workstation, fail in CI (.ci/run installs it)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run must install it: {install})")
    pytest.skip(f"{reason}: {install}")


def free_ports(count: int = 1) -> list[int]:
    """Distinct free loopback ports (bound all at once, so the kernel cannot hand one out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --- figures and synthetic predictions (test_evaluate.py, test_report*.py) -----------------


def ink_bands(ink: np.ndarray, axis: int, min_pixels: int = 60) -> int:
    """How many bands of ink at least `min_pixels` tall (axis 0) or wide (axis 1) blank lines separate along
    `axis`: the rows (0) or columns (1) of a grid of subplots with gaps between them. Titles are narrower
    than a panel; tick labels and legends between panels can join bands: count only grids that leave gaps."""
    lines = ink.any(axis=1 - axis)
    edges = np.diff(np.concatenate([[0], lines.astype(np.int8), [0]]))
    widths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int((widths >= min_pixels).sum())


def assert_png(path: Path, panels: tuple[int | None, int | None] | None = None) -> np.ndarray:
    """A figure with something drawn in it, not only a PNG header: it decodes, its size is plausible, it is
    not blank (its pixels vary, 2 % or more of them are ink), it has colour (every figure here draws its data
    in colour: without it, the axes are there but not the data), and `panels` = (rows, columns) of subplots,
    either None for "not counted", are the bands of ink blank lines separate (ink_bands). Returns the RGB
    pixels (uint8: widen them before subtracting one channel from another)."""
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path}: not a PNG"
    try:
        with Image.open(path) as image:
            rgba = image.convert("RGBA")  # decodes every row: a truncated file raises here
    except OSError as error:
        raise AssertionError(f"{path}: does not decode as a PNG ({error})") from error
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    rgb = np.asarray(on_white.convert("RGB"))
    height, width = rgb.shape[:2]
    assert 100 <= width <= 4000 and 100 <= height <= 4000, f"{path}: {width}x{height} pixels, not a figure's size"
    spread = np.asarray(on_white.convert("L")).std()
    assert spread > 10, f"{path}: blank (pixel standard deviation {spread:.1f})"
    darkest, brightest = rgb.min(axis=2), rgb.max(axis=2)
    ink = darkest < 239
    assert ink.mean() > 0.02, f"{path}: almost nothing drawn ({ink.mean():.1%} of the pixels are not white)"
    chromatic = ((brightest - darkest) > 40).mean()  # uint8: brightest >= darkest
    assert chromatic > 0.001, f"{path}: no colour ({chromatic:.2%} of the pixels): is the data drawn?"
    if panels is not None:
        found = (ink_bands(ink, 0), ink_bands(ink, 1))
        want = tuple(f if p is None else p for p, f in zip(panels, found, strict=True))
        assert found == want, f"{path}: {found[0]} x {found[1]} panels (rows x columns), expected {panels}"
    return rgb


def no_temporaries(directory: Path) -> bool:
    return not list(directory.glob(f".*{TMP_MARK}*"))


@pytest.fixture
def predictions():
    """40 test images, 4 per class. Class c is predicted correctly except:
    - the first image of classes 0..4 is predicted as class (c + 1);
    - class 9 is never predicted (its images go to 8), so its precision is 0 by convention.
    """
    y_true = np.repeat(np.arange(10), 4)
    y_pred = y_true.copy()
    for c in range(5):
        y_pred[4 * c] = c + 1
    y_pred[y_true == 9] = 8
    rng = np.random.default_rng(3)
    probabilities = rng.random((40, 10)) * 0.1
    probabilities[np.arange(40), y_pred] += 1.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return y_true, y_pred, probabilities.astype(np.float32)


def metrics_record(model: str, accuracy: float, predictions) -> dict:
    """A metrics file's record as evaluate writes it, for the `predictions` fixture's images."""
    from fashion_mlp.stages import evaluate

    y_true, _, probabilities = predictions
    return {
        "model": model,
        **evaluate.compute_metrics(y_true, probabilities),
        "accuracy": accuracy,
        "val_accuracy": accuracy + 0.01,
        "params": 101_770,
        "epochs_run": 10,
    }


@pytest.fixture
def two_models(predictions):
    """Two MLPs' records (test_report*.py)."""
    return [metrics_record("baseline", 0.8812, predictions), metrics_record("regularized", 0.8851, predictions)]
