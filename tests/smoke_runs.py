"""The smoke pipelines that the end-to-end tests inspect, started in the background at the session's start.

A smoke run takes minutes, much of it on one core: DVC runs one stage at a time, and each job
spends seconds importing TensorFlow. So, once pytest knows which runs the selected tests need, it
copies the repository once per run and starts them all side by side, orders the tests so that the
others run meanwhile, and (under pytest-xdist, as `make test` runs) groups them so that the tests of
one copy share a worker (docs/testing.md). A test gets a run through its fixture (`snakemake_first`,
`dvc_first`, `cluster_first`, or `snakemake_repo` / `dvc_repo` for the copy), which waits for that run
and captures what it left (a Snapshot) before any test touches the copy.

The runs are fresh clones of one state of the working tree, made together, so that an edit to the
tree while the tests run cannot make the engines' inputs differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DEBIAN_DATA, engine_env, require_debian_data, smoke_copy
from fashion_mlp.io import file_lock
from snapshots import MODELS, Snapshot, snapshot

RUN_TIMEOUT = 1200  # seconds; three runs share two cores

# One fresh copy per run. 4 cores for Snakemake: two 2-thread jobs at a time (trainings, search,
# evaluations) plus the 1-thread ones, all on one SQLite store. The cluster-generic profile hands
# every job to workflow/scripts/cluster/submit.py, detached, with a login-like environment.
# The cluster run makes the search's model only: the jobs that matter on a batch system (a pipe group
# of chief and workers, 1- and 2-thread jobs, detached processes logging to one store) at half the
# cost of a whole run; that every output is the same under any engine is checked by the other two.
CLUSTER_TARGET = "reports/predictions/tuned.csv"  # not in git: a clone lacks it, so the jobs run
COMMANDS = {
    "snakemake": ["snakemake", "--cores", "4"],
    # make repro: the stages forked from a server, as the Snakemake run's are (about 5 s less per stage on the
    # suite's critical path); the later DVC tests run `dvc repro` in plain processes.
    "dvc": [sys.executable, "-m", "fashion_mlp.forkserver", "--", "dvc", "repro"],
    "cluster": ["snakemake", "--profile", "profiles/cluster-generic", CLUSTER_TARGET],
}
MODELS_OF = {"cluster": ("tuned",)}  # the models a run makes, if not all of MODELS
# DVC runs one stage at a time, and the tests that need its run take longest after it (about 5 min,
# against 2.5 for Snakemake's): the other runs yield the CPU to it (nice), Snakemake's just enough
# that both chains end together (measured: at 5 it ended 260 s after DVC's and set the suite's time).
NICENESS = {"snakemake": 2, "cluster": 10}
WORKER_NICENESS = 5  # pytest-xdist's workers, from their first test outside the DVC run's group
FIXTURES = {"snakemake_first": "snakemake", "dvc_first": "dvc", "cluster_first": "cluster"}


COPIED = ("dvc",)  # the runs that get a second copy when they end (the dvc_copy fixture)


def copy_finished_run(repo: Path, dest: Path) -> None:
    """`repo` after its run, copied to `dest`: git, DVC's cache and the MLflow store, whose absolute
    artifact locations are moved to the copy's own mlartifacts/ (new runs would write into `repo`'s)."""
    import sqlite3

    shutil.copytree(repo, dest, symlinks=True)
    old, new = (repo / "mlartifacts").as_uri(), (dest / "mlartifacts").as_uri()
    with contextlib.closing(sqlite3.connect(dest / "mlflow.db")) as db, db:
        columns = {
            table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        for table, names in columns.items():
            for column in {"artifact_location", "artifact_uri", "source", "storage_location"} & set(names):
                db.execute(f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (old, new))


# --- the background runs -------------------------------------------------------------------

# Under pytest-xdist (make test: a worker per core, plus one) every worker collects the same tests,
# so each knows which runs are needed; the first to get the lock starts them and the others attach.
# The root directory comes from the controller (or the one process without xdist) through the
# environment, which the workers inherit. A run's snapshot is taken once, by the first test that needs
# it and before any test can touch the copy, and pickled for the other workers: the tests that change
# a copy share a worker.
ROOT_VAR = "FASHION_MLP_TEST_SMOKE_ROOT"
# The first that matches: a test of both runs (which reads their snapshots only) goes with Snakemake's,
# the shorter chain, so that the DVC tests never wait for the Snakemake run. The DVC run's tests are two
# chains: those of its copy, and those of a second copy taken when the run ends (dvc_copy), each on a
# worker of its own, side by side.
GROUPS = {"snakemake_first": "smoke-snakemake", "dvc_copy": "smoke-dvc-copy", "dvc_first": "smoke-dvc"}
DVC_GROUPS = (GROUPS["dvc_first"], GROUPS["dvc_copy"])  # the suite's critical path: first, and never niced


def keep_niceness(pid: int, niceness: int) -> None:
    """Give the session that `pid` leads the niceness its processes have (best effort).

    With the kernel's autogroups (/proc/sys/kernel/sched_autogroup_enabled), a process's nice value
    counts only against the processes of its own session, and a new session starts at 0: without
    this, `nice` on a run in its own session would not make it yield to the DVC run at all."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))


@dataclass
class BackgroundRun:
    """An engine started in its own session, its exit code written to a file that any worker can read."""

    name: str
    dir: Path  # <root>/<name>: repo/, engine.out, exit-code, run.json, snapshot.pickle

    @property
    def repo(self) -> Path:
        return self.dir / "repo"

    def start(self) -> None:
        out, code = self.dir / "engine.out", shlex.quote(str(self.dir / "exit-code"))
        # sh writes the exit code when the engine ends, through a rename, so a reader never sees half of it.
        script = f'"$@"; echo $? > {code}.tmp && mv {code}.tmp {code}'
        with open(out, "w") as sink:
            process = subprocess.Popen(
                ["nice", "-n", str(NICENESS.get(self.name, 0)), "sh", "-c", script, "sh", *COMMANDS[self.name]],
                cwd=self.repo,
                env=engine_env(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a test's killpg of its own engine cannot reach these
            )
        keep_niceness(process.pid, NICENESS.get(self.name, 0))
        (self.dir / "run.json").write_text(json.dumps({"pid": process.pid, "started": time.time()}))

    def exit_code(self) -> int | None:
        path = self.dir / "exit-code"
        return int(path.read_text()) if path.exists() else None

    def kill(self) -> None:
        if self.exit_code() is None and (self.dir / "run.json").exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(json.loads((self.dir / "run.json").read_text())["pid"], signal.SIGKILL)

    def wait(self) -> Snapshot:
        started = json.loads((self.dir / "run.json").read_text())["started"]
        while (code := self.exit_code()) is None:
            if time.time() > started + RUN_TIMEOUT:
                self.kill()
                raise AssertionError(f"the {self.name} smoke run took over {RUN_TIMEOUT} s")
            time.sleep(1)
        output = (self.dir / "engine.out").read_text(errors="replace")
        cmd = " ".join(COMMANDS[self.name])
        assert code == 0, f"{cmd} failed ({code}) in {self.repo}\n--- output\n{output[-8000:]}"
        return snapshot(self.repo, output, set(), MODELS_OF.get(self.name, MODELS))

    @property
    def copy(self) -> Path:
        """A second copy of the finished run (COPIED runs), for a second chain of tests."""
        return self.dir / "copy"

    def result(self) -> Snapshot:
        """The run's snapshot: taken by the first caller in any worker, read back by the others. The copy
        is taken with it, before any test can change the run's repo."""
        saved = self.dir / "snapshot.pickle"
        with file_lock(self.dir / "lock"):
            if not saved.exists():
                taken = self.wait()
                if self.name in COPIED:
                    copy_finished_run(self.repo, self.copy)
                saved.write_bytes(pickle.dumps(taken))
                return taken
            return pickle.loads(saved.read_bytes())


class SmokeRuns:
    """The runs the selected tests need, started together once per session (not once per worker)."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        self.runs = {name: BackgroundRun(name, root / name) for name in names}
        with file_lock(root / "lock"):
            if not (root / "started").exists():
                for run in self.runs.values():  # every copy before any run starts
                    smoke_copy(run.repo)
                for run in self.runs.values():
                    run.start()
                (root / "started").write_text("\n".join(names))
        self.snapshots: dict[str, Snapshot] = {}

    def result(self, name: str) -> Snapshot:
        if name not in self.runs:
            pytest.fail(f"the {name} smoke run was not started: its test was not seen at collection")
        if name not in self.snapshots:
            self.snapshots[name] = self.runs[name].result()
        return self.snapshots[name]


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


# --- pytest hooks and fixtures (registered by conftest.py) --------------------------------

_RUNS: SmokeRuns | None = None


KEPT_FOR = 24 * 3600  # seconds a failed session's copies stay in the temporary folder


def remove_stale_copies(folder: Path, now: float, kept_for: float = KEPT_FOR) -> list[Path]:
    """Remove the smoke copies that failed sessions kept more than `kept_for` seconds ago; return them.

    A failed session keeps its copies to look at (about 0.5 GB each), so on a machine that lives long
    they pile up. A running session's folder is younger than any session lasts, so it is never touched."""
    stale = [d for d in folder.glob("fashion-mlp-smoke-*") if d.is_dir() and now - d.stat().st_mtime > kept_for]
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return stale


def pytest_configure(config) -> None:
    if not is_worker(config):  # the xdist controller, or the only process
        remove_stale_copies(Path(tempfile.gettempdir()), time.time())
        os.environ[ROOT_VAR] = tempfile.mkdtemp(prefix="fashion-mlp-smoke-")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker turns the groups into node ids
def pytest_collection_modifyitems(config, items) -> None:
    """Order the tests, and group them for pytest-xdist (make test: --dist loadgroup).

    One process: the e2e tests go last, those that wait for a run after those that do not, so that
    the other tests run while the engines do. Under xdist (make test starts two workers more than there
    are cores), the first two workers take the tests of the DVC run and of its second copy (DVC_GROUPS)
    and wait for the run: DVC's run and its tests are the suite's longest chain, split in two. The next
    take the e2e tests that need no run (the PostgreSQL-backed pipeline, the SSH remote), which also run
    beside the engines; then the unit tests, and the Snakemake run's tests last. Each group runs on one
    worker, in order: the tests of one smoke copy, or of one module (so that its module-scoped fixtures,
    such as trainings, are made once, not once per worker)."""
    for item in items:
        run = next((g for fixture, g in GROUPS.items() if fixture in item.fixturenames), None)
        item.add_marker(pytest.mark.xdist_group(run or item.path.stem))
    if is_worker(config):
        items.sort(key=worker_rank)
    else:
        items.sort(key=rank)


def worker_rank(item) -> int:
    """Under xdist: the DVC run's two chains first (each group to its own worker), then the e2e tests of their
    own, the unit tests, and the other runs' tests."""
    return DVC_GROUPS.index(group(item)) if group(item) in DVC_GROUPS else (3, 2, 4)[rank(item)]


def rank(item) -> int:
    """0: a unit test, 1: an e2e test of its own, 2: an e2e test of a smoke run."""
    return 0 if item.get_closest_marker("e2e") is None else 1 if not uses_a_run(item) else 2


def group(item) -> str:
    return item.get_closest_marker("xdist_group").args[0]


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected: start the runs the selected tests need
def pytest_collection_finish(session) -> None:
    global _RUNS
    if getattr(session.config.option, "loadgroup", False):  # on xdist's workers, with --dist loadgroup
        grouped = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group")]
        if any("@" not in nodeid for nodeid in grouped):  # then two workers could change one copy at once
            raise pytest.UsageError("pytest-xdist did not group the tests: see pytest-dev/pytest-xdist#1386")
    needed = {FIXTURES[name] for item in session.items for name in item.fixturenames if name in FIXTURES}
    if needed and DEBIAN_DATA.is_dir() and not session.config.option.collectonly:
        _RUNS = SmokeRuns(Path(os.environ[ROOT_VAR]), [name for name in COMMANDS if name in needed])


_NICED = False


def pytest_runtest_setup(item) -> None:
    """A worker yields the CPU (nice) from its first test outside the DVC run's group, after the runs
    started: the DVC run and its tests, the longest chain, keep their priority over everything else."""
    global _NICED
    if not _NICED and is_worker(item.config) and group(item) not in DVC_GROUPS:
        os.nice(WORKER_NICENESS)
        _NICED = True


def uses_a_run(item) -> bool:
    return any(name in FIXTURES for name in item.fixturenames)


def pytest_sessionfinish(session, exitstatus) -> None:
    if is_worker(session.config):
        return  # the controller ends the runs, after every worker
    root = Path(os.environ.pop(ROOT_VAR))
    for name in COMMANDS:
        if (root / name).is_dir():
            BackgroundRun(name, root / name).kill()
    if exitstatus == 0 or not any(root.iterdir()):  # a failed session keeps the copies to look at
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\nthe smoke runs' copies are kept in {root} for a day (the next session after that removes them)")


def _result(name: str) -> Snapshot:
    require_debian_data()
    assert _RUNS is not None, "no smoke run was started"
    return _RUNS.result(name)


@pytest.fixture(scope="session")
def snakemake_first() -> Snapshot:
    return _result("snakemake")


@pytest.fixture(scope="session")
def dvc_first() -> Snapshot:
    return _result("dvc")


@pytest.fixture(scope="session")
def cluster_first() -> Snapshot:
    return _result("cluster")


@pytest.fixture(scope="session")
def snakemake_repo(snakemake_first: Snapshot) -> Path:
    return snakemake_first.repo


@pytest.fixture(scope="session")
def dvc_repo(dvc_first: Snapshot) -> Path:
    return dvc_first.repo


@pytest.fixture(scope="session")
def dvc_copy(dvc_first: Snapshot) -> Path:
    """A second copy of the DVC run's repo as the run left it, for tests that run beside those of dvc_repo."""
    return _RUNS.runs["dvc"].copy
