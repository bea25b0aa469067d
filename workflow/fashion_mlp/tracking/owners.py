"""Runs whose process is gone: every run is tagged with the host and process that own it, so that the
next stage can mark KILLED the runs a SIGKILL, an OOM kill or a power cut left RUNNING."""

from __future__ import annotations

import os
import socket
import sys

from fashion_mlp.tracking.store import with_retry


def process_tags() -> dict[str, str]:
    """The host and process that own a run; `pid_started` tells a reused pid from the original."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "pid_started": f"{psutil.Process().create_time():.2f}",
    }


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether the process that tagged a run still runs on this host."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, only waiting for its parent to reap it
        # Another process that got the same pid later is not the run's owner.
        return started is None or abs(process.create_time() - float(started)) < 1.0
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, ValueError):
        return True  # cannot tell: leave the run alone


def close_orphaned_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs that a process of this host left RUNNING and that no longer exists.

    A SIGKILL, an OOM kill or a power cut ends a stage before MLflow's end_run, so
    its run would show RUNNING forever. Every stage calls this through init(), and
    the Snakefile before its jobs start. Runs tagged with another host are left
    alone: from here we cannot tell whether their process still runs, and closing a
    live run (a colleague's, on a shared server) would be worse than leaving a dead
    one open. Runs without a `pid` tag (older ones) are left alone too. Nested runs
    (Hyperband trials) live in their parent's process and are closed with it.
    Returns the ids of the runs it closed.
    """
    import mlflow

    client = mlflow.MlflowClient()
    running = with_retry(client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'")
    host = socket.gethostname()
    gone = {
        run.info.run_id
        for run in running
        if run.data.tags.get("host") == host
        and run.data.tags.get("pid", "").isdigit()
        and not process_alive(int(run.data.tags["pid"]), run.data.tags.get("pid_started"))
    }
    gone |= {run.info.run_id for run in running if run.data.tags.get("mlflow.parentRunId") in gone}
    # Read again now that the owners are known gone: one that ended its run and exited after the search
    # above left it FINISHED, which KILLED must not overwrite (seen in CI: a run listed RUNNING while its
    # job was ending). A gone process writes nothing more, so what is RUNNING now stays an orphan.
    orphans = {run_id for run_id in gone if with_retry(client.get_run, run_id).info.status == "RUNNING"}
    for run_id in sorted(orphans):
        with_retry(client.set_terminated, run_id, status="KILLED")
        print(f"tracking: run {run_id} was left RUNNING by a process that is gone; marked KILLED", file=sys.stderr)
    return sorted(orphans)
