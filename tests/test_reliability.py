"""Reliability without a whole pipeline run: real processes, real SIGKILLs, a real SQLite store.

- a SIGKILL in the middle of an atomic write leaves the old file, never half a file; so does one in the
  middle of a real stage's writes (`fashion-mlp report`), and its rerun leaves no temporary;
- bad data, bad params and a model of no known kind stop a stage's command with a one-line error naming
  the file or key, before it writes anything, and a later good mirror is used;
- the Snakemake profile is where Snakemake 9 finds it, with what a killed run needs;
- nothing loads pickles or unsafe Keras models, and the real `make ui` answers on 127.0.0.1 and on no
  other address of the machine.

The whole-pipeline properties (bit-identical reruns, parallel jobs, kill and resume under each
engine, a reverted bad edit, push/pull) are in test_e2e.py, which shares its expensive runs;
a run whose process was SIGKILLed is marked KILLED by the next stage: test_tracking.py.
"""

from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import BIN, CLI, DEBIAN_DATA, IN_CI, REPO, clean_env, cli, engine_env, require_debian_data
from fashion_mlp.config import cli_flags
from fashion_mlp.data import RAW_FILES, sha256_gunzipped
from fashion_mlp.io import TMP_MARK, remove_stale_temporaries, write_text
from fashion_mlp.stages.download import download_all

TIMEOUT = 120


def assert_clear_error(result: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    """A failed stage: exit status 1 and one `fashion-mlp CMD: error:` message naming what is wrong."""
    assert result.returncode == 1, result.stderr
    assert f"fashion-mlp {command}: error: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def leftovers(directory: Path) -> list[str]:
    """Temporaries of atomic_output left in a directory."""
    return sorted(p.name for p in directory.glob(f".*{TMP_MARK}*")) if directory.is_dir() else []


# --- atomic writes under SIGKILL ---------------------------------------------------------

# Writes through atomic_output, says so, then waits to be killed with the file half written.
DIE_WHILE_WRITING = """
import sys, time
from fashion_mlp.io import atomic_output

with atomic_output(sys.argv[1]) as tmp, open(tmp, "wb") as fh:
    fh.write(b"half of the new content")
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("existing", [b"the previous, complete content", None], ids=["old-file", "no-file"])
def test_sigkill_during_an_atomic_write_leaves_the_old_file_or_none(tmp_path, existing):
    target = tmp_path / "models" / "baseline.keras"
    target.parent.mkdir()
    if existing is not None:
        target.write_bytes(existing)
    writer = subprocess.Popen(
        [sys.executable, "-c", DIE_WHILE_WRITING, str(target)], env=engine_env(), stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()  # SIGKILL: no cleanup code runs
    writer.wait(timeout=TIMEOUT)
    writer.stdout.close()

    if existing is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == existing
    assert len(leftovers(target.parent)) == 1  # the half-written temporary, under a hidden name
    neighbour = target.with_name("baseline_curves.keras")  # another target's write leaves it alone
    write_text(neighbour, "other")
    assert len(leftovers(target.parent)) == 1
    write_text(target, "rerun")  # the next write of the same file (the stage's rerun) removes it
    assert leftovers(target.parent) == [] and target.read_text() == "rerun"
    (target.parent / ".stray.tmp-x.keras").touch()
    remove_stale_temporaries(target.parent)  # what download does to data/raw before it starts
    assert leftovers(target.parent) == []


# A real stage killed while it writes: `fashion-mlp report` (no TensorFlow, well under a second) on
# synthetic inputs. Its outputs, relative to its working directory; every one goes through atomic_output.
REPORT_OUTPUTS = ("reports/summary.md", "reports/figures/model_comparison.png")
REPORT_ARGS = [
    *("--metrics", "in/metrics/baseline.json", "in/metrics/regularized.json", "--data_stats", "in/data_stats.json"),
    *("--figures_dir", "reports/figures", "--chart_out", REPORT_OUTPUTS[1], "--out", REPORT_OUTPUTS[0]),
]


def report_inputs(directory: Path, predictions, accuracy: float) -> None:
    """Two models' metrics (the second one's test accuracy is `accuracy`) and the split counts, under in/."""
    from fashion_mlp.stages.evaluate import compute_metrics

    y_true, _, probabilities = predictions
    (directory / "in" / "metrics").mkdir(parents=True, exist_ok=True)
    for model, value in (("baseline", 0.8812), ("regularized", accuracy)):
        metrics = compute_metrics(y_true, probabilities) | {"model": model, "accuracy": value}
        metrics |= {"val_accuracy": value + 0.01, "params": 101_770, "epochs_run": 10}
        (directory / "in" / "metrics" / f"{model}.json").write_text(json.dumps(metrics))
    counts = {"seed": 1, "counts": {"train": 1800, "val": 200, "test": 40}}
    (directory / "in" / "data_stats.json").write_text(json.dumps(counts))


def start_report(directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CLI), "report", *REPORT_ARGS], cwd=directory, env=engine_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def run_report(directory: Path) -> None:
    report = start_report(directory)
    _, stderr = report.communicate(timeout=TIMEOUT)
    assert report.returncode == 0, stderr[-3000:]


def report_outputs(directory: Path) -> dict[str, bytes | None]:
    return {name: (directory / name).read_bytes() if (directory / name).exists() else None for name in REPORT_OUTPUTS}


def report_leftovers(directory: Path) -> list[str]:
    return leftovers(directory / "reports") + leftovers(directory / "reports" / "figures")


def files_state(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under `directory` (folders left out): (inode, size, mtime), so a creation, write or rename shows."""
    state = {}
    for path in directory.rglob("*") if directory.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):  # a temporary renamed away while we look
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                state[str(path)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return state


def kill_report_at_its_first_write(directory: Path) -> None:
    """Start `fashion-mlp report` and SIGKILL it the moment anything under reports/ changes: a temporary
    created, a file truncated or written, a rename. Fails if it finished first (the kill proved nothing)."""
    before = files_state(directory / "reports")
    report = start_report(directory)
    while report.poll() is None and files_state(directory / "reports") == before:
        time.sleep(0.0005)
    report.kill()  # SIGKILL: no cleanup code runs
    _, stderr = report.communicate(timeout=TIMEOUT)
    assert report.returncode == -signal.SIGKILL, f"report finished before it was killed:\n{stderr[-3000:]}"


@pytest.mark.slow
def test_a_stage_killed_while_writing_leaves_each_output_whole_and_its_rerun_no_temporary(tmp_path, predictions):
    """SIGKILL a real stage at its first write and at random times: each output is the previous version byte for
    byte, or absent when there was none, or the whole new version; never a partial file. The next
    successful run writes the new version and leaves no temporary behind."""
    old_accuracy, new_accuracy = 0.8851, 0.8951
    reference = tmp_path / "reference"  # the new version, run without kills: same relative paths, same bytes
    report_inputs(reference, predictions, new_accuracy)
    run_report(reference)
    new = report_outputs(reference)
    work = tmp_path / "work"
    report_inputs(work, predictions, old_accuracy)

    # No previous version: killed at its first write (the figure's temporary), it leaves no output at all.
    kill_report_at_its_first_write(work)
    assert report_outputs(work) == dict.fromkeys(REPORT_OUTPUTS), "an output appeared from a killed run"
    assert report_leftovers(work), "no temporary left: the kill did not land in the middle of a write"

    started = time.monotonic()
    run_report(work)  # the previous version; it removes the temporary the killed run left
    duration = time.monotonic() - started  # only to spread the kills below over a run
    old = report_outputs(work)
    assert report_leftovers(work) == [] and None not in old.values()
    assert all(old[name] != new[name] for name in REPORT_OUTPUTS), "the two versions must differ to tell them apart"

    report_inputs(work, predictions, new_accuracy)
    kill_report_at_its_first_write(work)
    assert report_outputs(work) == old, "a killed write changed the previous version"
    assert report_leftovers(work), "no temporary left: the kill did not land in the middle of a write"

    rng = random.Random(0)
    for _ in range(8):  # killed at random points of a run: before, during or between the two writes
        report = start_report(work)
        time.sleep(rng.uniform(0, duration))
        report.kill()
        report.communicate(timeout=TIMEOUT)
        for name, content in report_outputs(work).items():
            assert content in (old[name], new[name]), f"{name}: neither the previous version nor the new one"

    run_report(work)
    assert report_outputs(work) == new
    assert report_leftovers(work) == [], "the rerun left temporaries of the killed runs"


# --- bad data: a clear error naming the file, nothing partial left -------------------------


def gz(payload: bytes) -> bytes:
    return gzip.compress(payload, compresslevel=1, mtime=0)


@pytest.fixture(scope="module")
def raw_copy(tmp_path_factory) -> Path:
    """The four real archives, copied once for the data-failure cases."""
    require_debian_data()
    directory = tmp_path_factory.mktemp("raw")
    for name in RAW_FILES:
        shutil.copyfile(DEBIAN_DATA / name, directory / name)
    return directory


def corrupt_labels(payload: bytes, case: str) -> bytes:
    """The train labels IDX file, broken in one way."""
    if case == "bad-magic":
        return struct.pack(">I", 0x00000803) + payload[4:]
    if case == "label-out-of-range":
        return payload[:8] + bytes([10]) + payload[9:]
    if case == "count-mismatch":  # one label fewer than there are images
        return payload[:4] + struct.pack(">I", 59_999) + payload[8:-1]
    raise ValueError(case)


@pytest.mark.parametrize(
    "case, needles",
    [
        ("bad-magic", ["train-labels-idx1-ubyte.gz", "bad IDX magic number 0x00000803, expected 0x00000801"]),
        ("label-out-of-range", ["train-labels-idx1-ubyte.gz", "label 10 is outside 0-9"]),
        ("count-mismatch", ["train-images-idx3-ubyte.gz has 60000 images", "train-labels-idx1-ubyte.gz has 59999"]),
        ("truncated-archive", ["train-images-idx3-ubyte.gz", "not a valid gzip file or truncated"]),
    ],
)
def test_prepare_stops_on_bad_data_with_the_file_named_and_writes_nothing(tmp_path, raw_copy, case, needles):
    raw = tmp_path / "raw"
    shutil.copytree(raw_copy, raw)
    if case == "truncated-archive":
        images = raw / "train-images-idx3-ubyte.gz"
        images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    else:
        labels = raw / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gz(corrupt_labels(gzip.decompress(labels.read_bytes()), case)))
    out = tmp_path / "prepared"
    result = cli(
        [
            "prepare",
            "--val_fraction",
            "0.1",
            "--limit_train",
            "1000",
            "--limit_test",
            "100",
            "--seed",
            "42",
            "--raw_dir",
            str(raw),
            "--train_out",
            str(out / "train.npz"),
            "--test_out",
            str(out / "test.npz"),
            "--stats_out",
            str(out / "stats.json"),
        ],
        tmp_path,
    )
    assert_clear_error(result, "prepare", *needles)
    assert not out.exists() or list(out.iterdir()) == [], "a failed prepare wrote something"


def test_download_skips_truncated_and_unreachable_mirrors_then_uses_a_good_one(tmp_path, raw_copy):
    truncated = tmp_path / "truncated-mirror"
    truncated.mkdir()
    for name in RAW_FILES:
        data = (raw_copy / name).read_bytes()
        (truncated / name).write_bytes(data[: len(data) // 3])
    unreachable = closed_port_url()
    out = tmp_path / "data" / "raw"
    result = cli(
        ["download", "--mirrors", str(truncated), unreachable, str(raw_copy), "--timeout", "5", "--out_dir", str(out)],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for name, sha256 in RAW_FILES.items():
        assert sha256_gunzipped(out / name) == sha256
        assert f"{(truncated / name).as_uri()}: " in result.stderr and "truncated" in result.stderr
        assert f"download: {name} <- {(raw_copy / name).as_uri()}" in result.stderr
    assert "unreachable" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(RAW_FILES), "nothing but the four verified files"


def test_download_with_every_mirror_failing_names_file_and_mirrors_and_leaves_nothing(tmp_path, raw_copy):
    truncated = tmp_path / "truncated-mirror"
    truncated.mkdir()
    first = next(iter(RAW_FILES))
    (truncated / first).write_bytes((raw_copy / first).read_bytes()[:1000])
    unreachable = closed_port_url()
    out = tmp_path / "data" / "raw"
    result = cli(
        ["download", "--mirrors", unreachable, str(truncated), "--timeout", "5", "--out_dir", str(out)], tmp_path
    )
    assert_clear_error(
        result,
        "download",
        f"no mirror served a verified {first}",
        unreachable.rstrip("/"),
        (truncated / first).as_uri(),
        "unreachable",
        "truncated",
    )
    assert list(out.iterdir()) == [], "no partial or unverified file in data/raw"


class ShortBodyHandler(http.server.BaseHTTPRequestHandler):
    """Promises the whole file in Content-Length, sends half of it, then hangs up."""

    def do_GET(self):
        body = (self.server.directory / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):
        pass


@pytest.fixture
def short_body_mirror(raw_copy, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortBodyHandler)
    server.daemon_threads = True
    server.directory = raw_copy
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_download_cut_short_by_an_http_mirror_falls_back_and_leaves_no_partial_file(
    tmp_path, raw_copy, short_body_mirror, capsys
):
    first = "train-labels-idx1-ubyte.gz"
    out = tmp_path / "raw"
    sources = download_all([short_body_mirror, str(raw_copy)], out, 5.0, files={first: RAW_FILES[first]})
    assert sources == {first: (raw_copy / first).as_uri()}
    err = capsys.readouterr().err
    size = (raw_copy / first).stat().st_size
    cut = f"{first}: {short_body_mirror}{first}: received {size // 2} of {size} bytes; trying the next mirror"
    assert cut in err, err
    assert sorted(p.name for p in out.iterdir()) == [first]
    assert sha256_gunzipped(out / first) == RAW_FILES[first]


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


# --- bad params: each stage's command refuses them before doing anything --------------------


def test_train_command_rejects_a_bad_value_before_writing_or_tracking(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    flags = cli_flags(dict(params["train"]["baseline"], dropout=1.5)).split()
    result = cli(
        [
            "train",
            "--model",
            "baseline",
            *flags,
            "--seed",
            "42",
            "--experiment",
            "exp",
            "--data",
            str(tmp_path / "train.npz"),
            "--model_out",
            str(tmp_path / "m.keras"),
            "--history_out",
            str(tmp_path / "h.csv"),
        ],
        tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert_clear_error(result, "train", "train.baseline: 'train.dropout' = 1.5", "a number in [0, 1)")
    assert list(tmp_path.iterdir()) == [], "no model, history or MLflow store"


@pytest.mark.slow
def test_explain_refuses_a_model_of_no_known_kind_naming_its_file_and_writes_nothing(tmp_path, keras):
    """A saved model with a layer LRP does not cover (LayerNormalization), whose layers match no kind of the
    registry: `fashion-mlp explain` fails naming the file and the kinds, before any JSON, CSV, PNG, temporary
    or MLflow store is written."""
    import numpy as np

    model = keras.Sequential(
        [keras.Input(shape=(28, 28)), keras.layers.Flatten(), keras.layers.LayerNormalization(),
         keras.layers.Dense(10, activation="softmax")]
    )  # fmt: skip
    path = tmp_path / "models" / "layernorm.keras"
    path.parent.mkdir()
    model.save(path)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 40)):
        x, y = rng.random((n, 28, 28)).astype(np.float32), np.arange(n) % 10
        np.savez(tmp_path / f"{split}.npz", **{f"x_{split}": x, f"y_{split}": y})
    inputs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    section = yaml.safe_load((REPO / "params.yaml").read_text())["explain"]
    out = tmp_path / "reports"
    result = cli(
        [
            "explain", *cli_flags(section).split(), "--seed", "3", "--threads", "1", "--experiment", "explain-test",
            "--model", "layernorm", "--model_path", str(path), "--train_data", str(tmp_path / "train.npz"),
            "--test_data", str(tmp_path / "test.npz"), "--json_out", str(out / "explain" / "layernorm.json"),
            "--deletion_out", str(out / "deletion" / "layernorm.csv"),
            "--classes_png", str(out / "figures" / "classes.png"),
            "--examples_png", str(out / "figures" / "examples.png"),
            "--deletion_png", str(out / "figures" / "deletion.png"),
            "--cascade_png", str(out / "figures" / "cascade.png"),
            "--randomized_png", str(out / "figures" / "randomized.png"),
        ],
        tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )  # fmt: skip
    assert_clear_error(
        result,
        "explain",
        f"{path}: its layers (Dense, Flatten, InputLayer, LayerNormalization) match no model kind; the kinds are mlp: ",
        "; cnn: Conv2D among ",
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == inputs, "explain wrote something"


# --- the Snakemake profile --------------------------------------------------------------


@pytest.mark.slow
def test_snakemake_finds_the_default_profile_and_its_rerun_incomplete_and_nolock():
    """Snakemake 9 reads profiles/default beside the Snakefile; a profile elsewhere is silently ignored."""
    profile = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    # rerun-incomplete: redo the jobs a kill interrupted; nolock: Snakemake 9 never expires the
    # .snakemake/locks a SIGKILL leaves, so with them every later run would stop until `--unlock`.
    assert profile["rerun-incomplete"] is True and profile["nolock"] is True
    result = subprocess.run(
        ["snakemake", "--dry-run", "--cores", "2", "--quiet", "all"],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert "Using workflow specific profile profiles/default" in result.stderr


@pytest.mark.slow
def test_a_second_snakemake_in_the_same_checkout_is_refused_before_any_job(smoke_repo):
    """With Snakemake's own lock off (nolock), the Snakefile holds a kernel lock for the run's life:
    a second run is refused at once, and the lock dies with its holder, so a SIGKILL leaves none."""
    lock = smoke_repo / ".snakemake" / "run.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = subprocess.run(
            ["snakemake", "--cores", "2"],
            cwd=smoke_repo,
            env=engine_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert refused.returncode != 0
        assert "another Snakemake is running" in refused.stdout + refused.stderr
        assert not (smoke_repo / "data").exists(), "no job ran"
    finally:
        holder.kill()
        holder.wait()
    # The holder died without unlocking (as under SIGKILL): the lock is free again.
    free = subprocess.run(
        [sys.executable, "-c", HOLD_LOCK, str(lock)], capture_output=True, text=True, timeout=TIMEOUT, input=""
    )
    assert free.stdout.strip() == "locked"


HOLD_LOCK = """
import fcntl, sys
handle = open(sys.argv[1], "w")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()  # hold until killed (or until stdin closes)
"""


# --- nothing unsafe is loaded, nothing is served beyond this machine ------------------------

SOURCES = sorted(
    [*(REPO / "workflow/fashion_mlp").rglob("*.py"), *(REPO / "workflow/rules").glob("*.smk"), REPO / "Snakefile"]
)


def calls(name: str) -> list[tuple[Path, str]]:
    """Every call of `name(` in the pipeline's code, with its arguments (up to the closing line)."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for match in re.finditer(rf"\b{re.escape(name)}\(", text):
            found.append((path, text[match.start() : text.find(")", match.end()) + 1]))
    return found


def test_models_load_only_in_safe_mode():
    loads = calls("load_model")
    assert loads, "no load_model call found: the check would prove nothing"
    for path, call in loads:
        assert "safe_mode=True" in call, f"{path.name}: {call}"


def test_npz_files_load_without_pickles():
    """np.load refuses pickles only when told; data.read_aligned reads no pickle at all (test_data.py
    refuses an object array through it)."""
    loads = calls("np.load") + calls("numpy.load")
    assert loads, "no np.load call found: the check would prove nothing"
    for path, call in loads:
        assert "allow_pickle=False" in call, f"{path.name}: {call}"


def other_addresses() -> list[str]:
    """This machine's addresses other than 127.0.0.1: 127.0.0.2 (Linux routes all of 127/8 to lo, and a socket
    bound to 127.0.0.1 refuses it) and the addresses of the default IPv4 and IPv6 routes' interfaces, if any."""
    found = ["127.0.0.2"]
    for family, somewhere in ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8::1")):  # documentation
        with socket.socket(family, socket.SOCK_DGRAM) as sock:  # a UDP connect sends nothing: it picks a route
            try:
                sock.connect((somewhere, 9))
            except OSError:
                continue  # no route of that family
            address = sock.getsockname()[0]
            if address not in ("127.0.0.1", "::1"):
                found.append(address)
    return found


def assert_refused_elsewhere(port: int) -> None:
    """Nothing but 127.0.0.1 takes connections on `port`: every other address of the machine refuses them."""
    for address in other_addresses():
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
            sock.settimeout(10)
            try:
                sock.connect((address, port))
            except ConnectionRefusedError:
                continue
            raise AssertionError(f"{address}:{port} took a connection: the server listens beyond 127.0.0.1")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to a process started with start_new_session=True and its whole group, then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent (uvicorn's workers)
    process.wait(timeout=20)


UI_PORT = 5000  # make ui's, fixed in the Makefile


def port_taken(port: int) -> bool:
    """Whether any socket listens on `port`, on any address (SO_REUSEADDR: connections left in TIME_WAIT do not
    count, a listener does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
        return False


@pytest.mark.slow
def test_make_ui_answers_on_127_0_0_1_and_on_no_other_address(tmp_path):
    """The real `make ui`, from a directory of its own (-f: $(CURDIR)/mlflow.db is then a new store there, not
    the checkout's; -o install: the virtualenv running the tests); stopped by its process group. MLFLOW_WORKERS=1,
    mlflow's own setting, starts one uvicorn worker instead of 4 (7 s instead of 15 on 2 cores); the address it
    binds is the Makefile's --host either way."""
    if port_taken(UI_PORT):  # by something else: a probe of it would prove nothing about make ui
        reason = f"port {UI_PORT}, make ui's, is taken by another process"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: nothing else may listen there)")
        pytest.skip(reason)
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")  # the target reads the experiment's name
    venv = os.path.relpath(BIN.parent, tmp_path)
    command = ["make", "-f", str(REPO / "Makefile"), "-o", "install", "ui", f"VENV={venv}"]
    with tempfile.TemporaryFile() as log:
        ui = subprocess.Popen(
            command, cwd=tmp_path, env=clean_env(MLFLOW_WORKERS="1"), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        try:
            deadline = time.monotonic() + TIMEOUT  # only catches a UI that never comes up
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{UI_PORT}/health", timeout=2) as response:
                        assert response.status == 200
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):  # TimeoutError: up, not yet answering
                    if ui.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"make ui did not start:\n{output()[-4000:]}")
                    time.sleep(0.5)
            assert (tmp_path / "mlflow.db").is_file(), "make ui opened another store than $(CURDIR)/mlflow.db"
            assert_refused_elsewhere(UI_PORT)
        finally:
            stop_group(ui)
        assert "The runs: none yet (make run first)" in output(), output()[-4000:]  # the target's first line ran
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):  # nothing of make ui outlived its group
        sock.connect(("127.0.0.1", UI_PORT))


@pytest.mark.slow
def test_workers_beyond_the_cores_reserve_none(smoke_repo):
    """The chief's workers start together: with --cores below tune.workers, min(tune.workers, --cores)
    of them reserve a core and the others none (the result is the same), so `--cores 1` plans the whole
    pipeline, where it used to stop at Snakemake's pipe-group resource error."""
    workers = yaml.safe_load((smoke_repo / "params.yaml").read_text())["tune"]["workers"]
    assert workers >= 2, "the smoke params must ask for more workers than one core holds"
    result = subprocess.run(
        ["snakemake", "--dry-run", "--cores", "1"],
        cwd=smoke_repo,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    message = result.stdout + result.stderr
    assert result.returncode == 0, message[-2000:]
    assert f"tune: --cores 1: 1 of the tune.workers {workers} Hyperband workers reserve a core" in message
    stats = dict(re.findall(r"^(tune_\w+)\s+(\d+)$", message, re.M))
    assert stats == {"tune_chief": "1", "tune_worker": str(workers), "tune_finish": "1"}, message[-2000:]
    # Snakemake prints a job's threads unless they are 1: worker0 reserves the core, the others none
    jobs = re.findall(r"rule tune_worker:\n(.*?)\n\S", message, re.S)
    threads = {re.search(r"wildcards: worker=(\d+)", job)[1]: "threads: 0" not in job for job in jobs}
    assert threads == {str(i): i == 0 for i in range(workers)}, message[-2000:]
    assert "pipe group" not in message.lower()
