"""KerasTuner's distributed mode for stage `tune`: the chief, its workers and the handshake between them.

- The chief (`--role chief`) serves Hyperband's oracle over gRPC on loopback and owns the search's
  MLflow run; it trains nothing.
- Each worker (`--role worker`) asks the chief for trials and runs them, logging each under the
  search's run.
- The chief file is their handshake: the chief writes its process tags into it at once, then its
  address, then the search's result once every trial has ended (read_chief_file).
- Each side watches the other: the chief its workers (WorkerWatch), each worker its chief
  (watch_chief), so that a search whose partner died fails within seconds instead of hanging.
- run_processes starts a chief and its workers as processes, for `--role all` (tune.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

from fashion_mlp import PipelineError, tracking
from fashion_mlp.io import read_json, write_json
from fashion_mlp.profiling import marks
from fashion_mlp.runtime import configure_tensorflow
from fashion_mlp.tuning.hyperband import log_search_result, make_tuner, search_data, search_run, tuner_dir

CHIEF_HOST = "127.0.0.1"  # Snakemake runs a service job on its consumers' node
CHIEF_START_TIMEOUT = 600  # seconds a worker waits for the chief's address, and the chief for a first worker
FAILURE_GRACE = 60  # seconds run_processes gives the others to report a failure before it stops them
# How often the roles look for each other's files and exits: the search's start and end wait on these
# (0.5 s cost up to half a second of both cores at each end); a look is a stat or a kill(pid, 0).
POLL = 0.05


# --- the chief: Hyperband's oracle, served to the workers -------------------------------


def run_chief(args: argparse.Namespace, section: dict) -> None:
    """Serve the oracle on a free loopback port until every trial has ended, then publish the result.

    The address goes to --chief_file, for the workers; when the search is over the same
    file gets the search's summary, after the MLflow run is closed, so that a worker
    which has seen it can exit (and Snakemake stop this service job) without losing anything.
    """
    # Snakemake starts the workers once this file exists: say at once that the chief is
    # starting (TensorFlow takes seconds to load); the address follows.
    write_json(args.chief_file, {"starting": True} | tracking.process_tags())
    configure_tensorflow(1, args.seed)  # the chief builds the space but trains nothing

    import grpc

    # KerasTuner's own servicer and exit test; its start_server() would need the port chosen
    # beforehand and notices the end of the search only every 20 s.
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    tracking.init(args.experiment)
    tags = tracking.base_tags("tune", args.data)
    directory = tuner_dir(args.work_dir, section, args.seed, args.data)
    tuner = make_tuner(section, args.seed, directory, tags, None, overwrite=True)  # never resume another search
    with search_run(section, args.seed, tags) as run:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        servicer = OracleServicer(tuner.oracle)
        protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
        port = server.add_insecure_port(f"{CHIEF_HOST}:0")
        server.start()
        address = {
            "host": CHIEF_HOST,
            "port": port,
            "parent_run_id": run.info.run_id,
            "tuner_dir": str(directory),
        } | tracking.process_tags()
        write_json(args.chief_file, address)
        marks.mark("address published")
        print(f"tune chief: oracle at {CHIEF_HOST}:{port}, search run {run.info.run_id}", flush=True)
        started = time.perf_counter()
        watch = WorkerWatch(directory, tuner.oracle)
        while not (servicer.stop_triggered and exit_chief(tuner.oracle)):
            time.sleep(POLL)
            watch.check()
        seconds = time.perf_counter() - started
        server.stop(grace=5)
        search = log_search_result(tuner.oracle, seconds, run.info.run_id)
    write_json(args.chief_file, address | {"search": search})


class WorkerWatch:
    """The chief's check that its workers are alive: a search whose worker died can never end.

    Each worker leaves its process tags in the tuner directory when it starts. The chief
    fails (and with it the search run) when a worker's process is gone before the oracle
    told it to stop, or when no worker has turned up in CHIEF_START_TIMEOUT seconds.
    """

    def __init__(self, directory: Path, oracle):
        self.directory, self.oracle = directory, oracle
        self.started = time.monotonic()
        self.connected: set[str] = set()
        self.last_check = 0.0

    def check(self) -> None:
        self.connected |= set(self.oracle.tuner_ids)
        if time.monotonic() - self.last_check < 2:
            return
        self.last_check = time.monotonic()
        workers = {
            path.stem.removeprefix("process-"): read_json(path) for path in self.directory.glob("process-worker*.json")
        }
        if not workers and time.monotonic() - self.started > CHIEF_START_TIMEOUT:
            raise PipelineError(f"no tuning worker started within {CHIEF_START_TIMEOUT} s")
        for name, tags in sorted(workers.items()):
            stopped = name in self.connected and name not in self.oracle.tuner_ids
            if not stopped and not tracking.process_alive(int(tags["pid"]), tags["pid_started"]):
                raise PipelineError(f"tuning {name} (pid {tags['pid']}) died before the search ended; see its log")


# --- the handshake: the chief file -------------------------------------------------------


def read_chief_file(path: Path, wants_search: bool, timeout: float) -> dict:
    """Wait for the chief's address (or, with wants_search, its final summary) in `path`.

    Both engines remove an earlier search's file before the chief starts, so a file
    whose chief process is gone means that the chief failed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            address = read_json(path)
        except (OSError, ValueError):  # not there yet (it is written atomically)
            address = None
        if address and "search" in address:
            return address
        if address:
            if not tracking.process_alive(int(address["pid"]), address["pid_started"]):
                # It may have published its result, then ended, since the read; a dead chief's address serves no one.
                with contextlib.suppress(OSError, ValueError):
                    if "search" in (final := read_json(path)):
                        return final
                raise PipelineError(
                    f"the tuning chief (pid {address['pid']}) ended before publishing "
                    f"{'the result' if wants_search else 'its address'} in {path}; see its log"
                )
            if not wants_search and "port" in address:
                return address
        time.sleep(POLL)
    raise PipelineError(
        f"no tuning chief published its {'result' if wants_search else 'address'} in {path} within {timeout:.0f} s"
    )


# --- a worker: trials from the chief, run one after another -----------------------------


def run_worker(args: argparse.Namespace, section: dict, threads: int) -> None:
    """Run the trials the chief hands out (KerasTuner's distributed mode) until it says stop."""
    configure_tensorflow(threads, args.seed)
    tuner_id = f"worker{args.worker_id}"
    # What needs no chief comes first, while the chief itself starts: the store, the data, KerasTuner.
    tracking.init(args.experiment)
    x, y, validation = search_data(args.data, section["search_limit_train"], args.seed)
    tags = tracking.base_tags("tune", args.data)
    import keras_tuner  # noqa: F401  (and gRPC, 0.4 s)

    # KerasTuner runs a full garbage collection before every trial, and each walked all of
    # TensorFlow's and MLflow's objects (0.5 s a trial). Those live as long as the process:
    # freezing them leaves each collection only the trials' own objects.
    gc.freeze()
    marks.mark("ready for the chief")
    address = read_chief_file(args.chief_file, wants_search=False, timeout=CHIEF_START_TIMEOUT)
    marks.mark("chief's address read")
    if "search" in address:  # the chief has already finished: nothing left to run
        print(f"tune {tuner_id}: the search is already over", flush=True)
        search = address["search"]
        trials_run, seconds = [], 0.0
    else:
        write_json(Path(address["tuner_dir"]) / f"process-{tuner_id}.json", tracking.process_tags())  # for WorkerWatch
        search_over = watch_chief(address)
        os.environ.update(
            {
                "KERASTUNER_TUNER_ID": tuner_id,
                "KERASTUNER_ORACLE_IP": address["host"],
                "KERASTUNER_ORACLE_PORT": str(address["port"]),
            }
        )
        directory = tuner_dir(args.work_dir, section, args.seed, args.data)
        tuner = make_tuner(
            section,
            args.seed,
            directory,
            tags,
            address["parent_run_id"],
            overwrite=False,
        )
        wait_when_idle(tuner)
        marks.mark("tuner made")
        started = time.perf_counter()
        tuner.search(x, y, validation_data=validation, batch_size=section["batch_size"], verbose=2)
        seconds = time.perf_counter() - started
        search_over.set()  # the chief may now publish the result and exit
        trials_run = tuner.trials_run
        address = read_chief_file(args.chief_file, wants_search=True, timeout=CHIEF_START_TIMEOUT)
        search = address["search"]
        wait_for_exit(address)
    write_json(
        args.worker_out,
        {
            "worker": args.worker_id,
            "threads": threads,
            "trials_run": trials_run,
            "seconds": round(seconds, 1),
            "search": search,
        },
    )
    print(f"tune {tuner_id}: ran {len(trials_run)} trials in {seconds:.0f} s", flush=True)


def watch_chief(address: dict) -> threading.Event:
    """A worker's check that its chief is alive while it searches; set the returned event when
    the search is over. KerasTuner's client would wait an hour for a chief that is gone; this
    ends the worker within seconds instead."""
    over = threading.Event()

    def watch() -> None:
        while not over.wait(2):
            if not tracking.process_alive(int(address["pid"]), address["pid_started"]):
                print(
                    f"tune worker: the chief (pid {address['pid']}) died mid-search; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(3)

    threading.Thread(target=watch, name="watch-chief", daemon=True).start()
    return over


def wait_when_idle(tuner) -> None:
    """KerasTuner's search loop asks again at once when the oracle says IDLE; pause instead,
    or a waiting worker would spin a core that the other worker's trial needs."""
    import keras_tuner as kt

    ask = tuner.oracle.create_trial

    def create_trial(tuner_id):
        trial = ask(tuner_id)
        if trial.status == kt.engine.trial.TrialStatus.IDLE:
            time.sleep(0.25)
        return trial

    tuner.oracle.create_trial = create_trial


def wait_for_exit(address: dict, timeout: float = 60) -> None:
    """Let the chief exit by itself (it is about to) before this worker ends and Snakemake
    stops the chief's service job."""
    deadline = time.monotonic() + timeout
    while tracking.process_alive(int(address["pid"]), address["pid_started"]) and time.monotonic() < deadline:
        time.sleep(POLL)


# --- all roles as processes, for an engine that runs one command per stage ----------------


def run_processes(command: list[str], threads: int, chief_file: Path, worker_outs: list[Path]) -> None:
    """Run `command` (`fashion-mlp tune` and the stage's flags) as a chief and one worker per file of
    `worker_outs`, sharing `threads` between the workers, until every process has ended.

    After a failure the others end by themselves within seconds (the chief watches its workers,
    the workers their chief), each saying why; past FAILURE_GRACE seconds they are stopped.
    """
    worker_threads = max(1, threads // len(worker_outs))
    procs = {"chief": subprocess.Popen([*command, "--role", "chief", "--chief_file", str(chief_file)])}
    for i, out in enumerate(worker_outs):
        procs[f"worker{i}"] = subprocess.Popen(
            [
                *command,
                "--role",
                "worker",
                "--worker_id",
                str(i),
                "--threads",
                str(worker_threads),
                "--chief_file",
                str(chief_file),
                "--worker_out",
                str(out),
            ]
        )
    try:
        first_failure = None
        while [p for p in procs.values() if p.poll() is None]:
            if first_failure is None and any(p.returncode not in (None, 0) for p in procs.values()):
                first_failure = time.monotonic()
            if first_failure is not None and time.monotonic() - first_failure > FAILURE_GRACE:
                break
            time.sleep(0.5)
        failed = [name for name, p in procs.items() if p.poll() != 0]
        if failed:
            raise PipelineError(f"tune: the {', '.join(failed)} process failed (see the output above)")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            p.wait()
