"""A fork server for the pipeline's jobs: the heavy libraries imported once, each job a fork of them.

Every `fashion-mlp` job spent seconds importing TensorFlow, Keras, MLflow and the rest and faulting
their memory in (docs/speed.md#measured-dated). The Snakefile's onstart starts this server
(`python -m fashion_mlp.forkserver --socket PATH`), which imports them and waits on a Unix socket.
A job's CLI (cli.main) hands it the job's arguments, working directory, environment and standard
streams; the server forks a child that runs the command there, as the job's own process would, and
the job's process waits, passes SIGTERM/SIGINT/SIGHUP on to the child and exits with its status. If
the job's process dies, the server kills the child; when Snakemake (`--parent`) is gone, or sends it
SIGTERM (the Snakefile's onsuccess and onerror), the server kills what jobs are left, removes its socket and exits.
Under DVC, `python -m fashion_mlp.forkserver -- dvc repro` (make repro) runs DVC with a server of its own.

A job that starts while the server still imports waits a while for it (START_WAIT). It runs
as before (no server, or not served) unless all of these hold: served() takes its command,
and every variable read at import time (IMPORT_TIME_ENV: thread counts, TensorFlow's and Python's
flags) is what the server started with. Only third-party libraries are preloaded; the pipeline's own
modules load in the child, from the disk. No TensorFlow op runs in the server, so each child sets up
TensorFlow's threads and seeds afresh: the same bytes as a job's own process (tests/libraries/test_forkserver.py).

This module is the job's side, which every `fashion-mlp` command imports: light, no heavy library. The
server's side is server.py; `python -m fashion_mlp.forkserver` (__main__.py) starts a server.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import itertools
import json
import os
import signal
import socket
import struct
import sys
import time

ENV = "FASHION_MLP_FORKSERVER"  # the socket's path, for the jobs (the Snakefile sets it)
# The commands a server runs: the pipeline's jobs, less those people run by hand. Of `tune`, the
# roles Snakemake runs are served (TUNE_ROLES): the server never imports gRPC, which does not
# survive a fork, so the chief's and the workers' children import their own. The whole search in
# one process (`--role all`, DVC's) is not: it starts its chief and workers itself.
SERVED = frozenset(
    {"download", "prepare", "train", "evaluate", "explain", "register", "card", "report", "demos", "lesson"}
)
TUNE_ROLES = frozenset({"chief", "worker", "finish"})
PRELOAD = (
    *("numpy", "pandas", "scipy.stats", "sklearn.metrics", "sklearn.model_selection", "matplotlib", "seaborn"),
    *("yaml", "jsonschema", "tensorflow", "keras", "mlflow", "shap"),
    # MLflow's SQL store (SQLAlchemy, Alembic): every job opened it, 0.5 s of imports each.
    *("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"),
)
PID_ENV = "FASHION_MLP_FORKSERVER_PID"  # the server's pid: a job may wait while it starts
# Seconds a job waits for a starting server before it runs on its own (start_wait). The jobs that import
# none of the above start at once. The search's chief, a service job, must write its file within
# Snakemake's --latency-wait (5 s by default, 60 in profiles/default) or its workers fail: it waits briefly.
START_WAIT = {"download": 0.0, "prepare": 0.0, "chief": 2.0}
START_TIMEOUT = 120.0
# Read when a library loads, so a child keeps the server's values: a job must have the same ones.
IMPORT_TIME_ENV = ("OMP_", "MKL_", "OPENBLAS_", "GOTO_", "VECLIB_", "NUMEXPR_", "TF_", "KERAS_", "PYTHON", "LD_", "MPL")
HEADER = struct.Struct("!I")
# The Snakefile's sockets (new_socket_path). A server killed with SIGKILL (an engine's whole process
# group, a power cut) leaves its file behind; the next server removes those no one listens on.
SOCKETS = "fashion-mlp-forkserver-*.sock"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # what a job's process passes on to its fork
# What Snakemake sets to a job's `threads` (snakemake/shell.py): the server starts with a 1-thread job's.
SNAKEMAKE_THREAD_VARIABLES = (
    *("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS"),
    *("MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"),
)


def served(argv: list[str]) -> bool:
    """Whether a server runs `fashion-mlp <argv>`: a command of SERVED, or `tune` in a role of TUNE_ROLES."""
    if not argv:
        return False
    if argv[0] in SERVED:
        return True
    named = roles(argv)
    return argv[0] == "tune" and len(named) == 1 and named[0] in TUNE_ROLES


def roles(argv: list[str]) -> list[str]:
    """The values of --role in `argv`."""
    return [b for a, b in itertools.pairwise(argv) if a == "--role"] + [
        a.removeprefix("--role=") for a in argv if a.startswith("--role=")
    ]


# Google's tcmalloc (Debian's libtcmalloc-minimal4): TensorFlow's many small allocations cost less, and
# the floats stay the same (docs/speed.md). LD_PRELOAD takes the library's soname.
TCMALLOC = "tcmalloc_minimal"


def with_tcmalloc(env: dict[str, str]) -> dict[str, str]:
    """`env` with tcmalloc preloaded where it is installed; a LD_PRELOAD already set is left alone."""
    if "LD_PRELOAD" in env or (soname := ctypes.util.find_library(TCMALLOC)) is None:
        return env
    return env | {"LD_PRELOAD": soname}


def one_thread_env(env: dict[str, str]) -> dict[str, str]:
    """`env` as Snakemake passes it to a 1-thread job, which is what the server serves."""
    return env | dict.fromkeys(SNAKEMAKE_THREAD_VARIABLES, "1")


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


def request_job(argv: list[str]) -> int | None:
    """Run `fashion-mlp <argv>` as a fork of the server named by $FASHION_MLP_FORKSERVER and return its
    exit status; None when there is no server or it does not serve this job (then run it here)."""
    path = os.environ.get(ENV)
    if not path or not served(argv):
        return None
    client = connect(path, wait=start_wait(argv))
    if client is None:  # not started, or gone: run as before
        return None
    pin_invocation()
    # A signal between the fork and forward() below would kill this process alone (CI, stop 44): hold
    # them until they can be passed on; a declined job then hears them itself.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    with client:
        try:
            pid = send_request(client, argv)
            if pid is None:
                return None  # "declined": an import-time setting differs

            def forward(number, _frame):
                with contextlib.suppress(ProcessLookupError):  # it has just ended: its status follows
                    os.kill(pid, number)

            for sig in FORWARDED:
                signal.signal(sig, forward)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        status = read_line(client)
    if not status:
        sys.exit(f"fashion-mlp {argv[0]}: the fork server went away while the job ran (pid {pid})")
    code = int(status)
    if code < 0:  # killed by a signal: die of the same one, as the job's own process would have
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def pin_invocation() -> None:
    """Under DVC, settle the invocation's id here, in the job's own process, before the fork takes its
    environment: DVC sets none, so tracking derives it from the `dvc` process among the job's ancestors,
    and a fork of the server has no such ancestor (each stage would get an id of its own)."""
    if os.environ.get("DVC_STAGE"):
        from fashion_mlp.tracking import lineage

        lineage.invocation_id()


def send_request(client: socket.socket, argv: list[str]) -> int | None:
    """Ask the server to run `fashion-mlp <argv>` with this process's directory, environment and streams;
    the fork's pid, or None when the server declines (or is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    socket.send_fds(client, [request_bytes(argv, os.getcwd(), dict(os.environ))], [0, 1, 2])
    if read_line(client) != "forked":
        return None
    return int(read_line(client))


def request_bytes(argv: list[str], cwd: str, env: dict[str, str]) -> bytes:
    """A request as read_request reads it: its length, then the job's arguments, directory and environment."""
    payload = json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode()
    return HEADER.pack(len(payload)) + payload


def read_line(client: socket.socket) -> str:
    """One line of the server's answer, read a byte at a time: nothing is read ahead of the line."""
    line = bytearray()
    while (byte := client.recv(1)) not in (b"", b"\n"):
        line += byte
    return line.decode()


def start_wait(argv: list[str]) -> float:
    """How long `fashion-mlp <argv>` waits for a starting server (START_WAIT, by command or tune role)."""
    role = "chief" if argv[0] == "tune" and "chief" in roles(argv) else argv[0]
    return START_WAIT.get(role, START_TIMEOUT)


def connect(path: str, wait: float) -> socket.socket | None:
    """A connection to the server at `path`. While the server ($FASHION_MLP_FORKSERVER_PID) is still
    importing, wait up to `wait` seconds for it: a fork when it is ready costs less than importing it all."""
    pid = int(os.environ.get(PID_ENV) or 0)
    deadline = time.monotonic() + wait
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
            return client
        except OSError:
            client.close()
        if not (pid and alive(pid) and time.monotonic() < deadline):
            return None
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no such process
        return False


def new_socket_path() -> str:
    """A fresh socket path in the temporary folder, named as SOCKETS matches (the Snakefile's server)."""
    import tempfile
    import uuid

    return os.path.join(tempfile.gettempdir(), SOCKETS.replace("*", uuid.uuid4().hex[:12]))
