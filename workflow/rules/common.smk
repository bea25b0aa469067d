# Shared set-up: validate params.yaml before any job, and the helpers the rules use.
import fcntl
import os
import shutil
import subprocess
import sys

from snakemake.exceptions import WorkflowError

# The pipeline's package, importable even without `pip install -e .`.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))
from fashion_mlp.config import ParamsError, cli_flags, validate  # noqa: E402
from fashion_mlp.data import RAW_FILES  # noqa: E402

try:
    validate(config, source="params.yaml")
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None

# Jobs inherit these: the MLflow store resolves against this root whatever a
# job's working directory, and runs are tagged engine=snakemake.
os.environ.update(FASHION_MLP_ROOT=workflow.basedir, FASHION_MLP_ENGINE="snakemake")

MODELS = list(config["train"])  # trained from their params block by `train`
EVALUATED = MODELS + ["tuned"]  # `tune` retrains its best trial as `tuned`
FIGURE_KINDS = ["confusion", "curves", "predictions"]  # evaluate's PNGs, per model
EXPLAIN_FIGURE_KINDS = ["explain_classes", "explain_examples", "explain_deletion"]  # explain's PNGs, per model
RAW = expand("data/raw/{name}", name=list(RAW_FILES))


wildcard_constraints:
    model="|".join(EVALUATED),


def section_flags(*keys):
    """params.yaml section -> `--key value` flags, rendered exactly as DVC renders ${section}."""
    node = config
    for key in keys:
        node = node[key]
    return cli_flags(node)


def check_cores_for_tune_workers():
    """Refuse a local run whose --cores cannot hold the Hyperband workers, naming the fix.

    The chief and its workers start together, a core per worker; with fewer cores
    Snakemake would stop at the search with a message about pipe-group resources.
    """
    workers = config["tune"]["workers"]
    if workflow.resource_settings.nodes is not None:  # a cluster: limited by --jobs, not --cores
        return
    if workflow.cores >= workers or not any(job.rule.name == "tune_worker" for job in workflow.dag.needrun_jobs()):
        return
    raise WorkflowError(
        f"tune.workers is {workers} but --cores is {workflow.cores}: the Hyperband workers run side by side, "
        f"a core each. Give --cores {workers} or more, or set tune.workers to at most {workflow.cores} "
        "in params.yaml (the search's result is the same)."
    )


_RUN_LOCK = []  # the open lock file, held for the life of this Snakemake process


def hold_run_lock():
    """Refuse to run while another Snakemake runs in this checkout.

    The profile turns off Snakemake's own lock files (`nolock`), which outlive a
    SIGKILL. This lock is the kernel's: it goes when its process does, so a
    killed run never blocks the next one. Jobs do not inherit it.
    """
    path = os.path.join(workflow.basedir, ".snakemake", "run.lock")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise WorkflowError(
            f"another Snakemake is running in {workflow.basedir} (it holds {path}); " "wait for it to finish"
        ) from None
    _RUN_LOCK.append(handle)


def init_tracking():
    """Create the MLflow store and experiment once, before jobs run in parallel."""
    shell("fashion-mlp init-tracking --experiment '{config[mlflow][experiment]}'")


OUTPUT_DIRS = ("data", "models", "reports")


def commit_to_dvc():
    """Record what Snakemake built in dvc.lock and DVC's cache, so `dvc status` is clean.

    `dvc commit` rewrites the files it caches, which would make them look new to
    Snakemake's mtime check; their modification times are put back afterwards.
    """
    if not os.path.isdir(os.path.join(workflow.basedir, ".dvc")) or shutil.which("dvc") is None:
        return
    mtimes = {}
    for top in OUTPUT_DIRS:
        for folder, _, files in os.walk(os.path.join(workflow.basedir, top)):
            for name in files:
                path = os.path.join(folder, name)
                mtimes[path] = os.stat(path).st_mtime_ns
    result = subprocess.run(
        ["dvc", "commit", "--force", "--quiet"], cwd=workflow.basedir, capture_output=True, text=True
    )
    for path, mtime in mtimes.items():
        if os.path.exists(path):
            os.utime(path, ns=(mtime, mtime))
    if result.returncode != 0:
        logger.warning(f"dvc commit failed; run `dvc commit -f` by hand:\n{result.stderr}")
