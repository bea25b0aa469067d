"""`fashion-mlp <command> [flags]`: one command per pipeline stage.

Only the chosen command's module is imported, so `fashion-mlp --help` and
argument errors come back at once and TensorFlow loads only for the stages
that need it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading

from fashion_mlp import PipelineError, forkserver
from fashion_mlp.profiling import marks

COMMANDS = {
    "check": (
        "fashion_mlp.stages.check",
        "params.yaml against its schema, DVC's first stage: a bad edit costs nothing",
    ),
    "download": ("fashion_mlp.stages.download", "fetch and verify the four Fashion-MNIST archives"),
    "prepare": ("fashion_mlp.stages.prepare", "parse, scale once, split train/val; keep test apart"),
    "train": ("fashion_mlp.stages.train", "train one model (of any kind in the registry) from its train: entry"),
    "tune": ("fashion_mlp.stages.tune", "Hyperband search on the validation split, then retrain the best"),
    "evaluate": ("fashion_mlp.stages.evaluate", "test-set metrics and figures for one model"),
    "explain": ("fashion_mlp.stages.explain", "SHAP and LRP maps of one model, with sanity and deletion checks"),
    "register": (
        "fashion_mlp.stages.register",
        "register the best model by validation accuracy as champion, through the promotion gate",
    ),
    "card": ("fashion_mlp.stages.card", "the model card of the champion (and the best MLP): file and registry"),
    "compare": (
        "fashion_mlp.experiments.compare",
        "did a params edit help? two revisions or experiments, model by model, with paired tests",
    ),
    "predict": ("fashion_mlp.stages.predict", "classify pictures (files, directories, globs) with the champion"),
    "report": ("fashion_mlp.stages.report", "reports/summary.md comparing every model"),
    "preset": (
        "fashion_mlp.experiments.preset",
        "run a recipe too long for the default run as a DVC experiment; record it",
    ),
    "probe": (
        "fashion_mlp.experiments.probe",
        "train one variant of a preset's model, score it on validation only, record it",
    ),
    "demos": ("fashion_mlp.stages.demos", "the tutorial's XOR and activation-function lessons"),
    "lesson": ("fashion_mlp.stages.lesson", "one of the tutorial's claims, shown and checked (lesson <name>)"),
    "init-tracking": ("fashion_mlp.tracking", "create the MLflow store and experiment"),
    "profile": ("fashion_mlp.profiling.draw", "the last Snakemake run's jobs, CPU and fixed costs over time"),
}


def usage() -> str:
    lines = ["usage: fashion-mlp <command> [flags]   (fashion-mlp <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<14} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run `fashion-mlp <argv>`. Called as the program (no argv), the process then leaves at once (leave())."""
    if argv is not None:
        run(argv)
        return
    try:
        run(sys.argv[1:])
    except SystemExit as exc:
        leave(exc.code)
    leave(0)


def run(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0] not in COMMANDS:
        sys.exit(f"fashion-mlp: unknown command {argv[0]!r}\n\n{usage()}")
    served = forkserver.request_job(argv)  # a fork of the server, if the Snakefile started one
    if served is not None:
        sys.exit(served)
    marks.start(argv[0], argv[1:])  # this job's record, when the Snakefile profiles the run
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        module.main(argv[1:])
    except PipelineError as exc:
        # Expected failures (bad params, bad data, no mirror): a message, not a traceback.
        sys.exit(f"fashion-mlp {argv[0]}: error: {exc}")


def leave(code: int | str | None) -> None:
    """End the process as Python's own exit would, without tearing the interpreter down.

    A job's process holds TensorFlow, Keras and MLflow, and freeing them at exit (every module's
    objects, TensorFlow's thread pools and C++ destructors) took 1.3 s of CPU and 0.5 s of wall
    time per job, after its work was done (docs/speed.md). What an exit must still do is done here,
    in Python's order: the other threads joined, the atexit handlers run (logging's flush, MLflow's,
    the job's profile record), the streams flushed. Then os._exit with sys.exit's status."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    # What Python's exit does first: threading's exit hooks (concurrent.futures stops its workers
    # there, or joining them would wait forever), then every non-daemon thread joined.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
