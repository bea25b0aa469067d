# Shared set-up: validate params.yaml before any job, and the helpers the rules use.
import fcntl
import os
import shutil
import subprocess
import sys
import uuid

from snakemake.exceptions import WorkflowError

# The pipeline's package, importable even without `pip install -e .`.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))
from fashion_mlp.cli import COMMANDS  # noqa: E402
from fashion_mlp.code_deps import stage_code  # noqa: E402
from fashion_mlp.config import ParamsError, cli_flags, validate  # noqa: E402
from fashion_mlp.data import RAW_FILES  # noqa: E402
from fashion_mlp.forkserver import SNAKEMAKE_THREAD_VARIABLES  # noqa: E402
from fashion_mlp.models import kinds  # noqa: E402

try:
    validate(config, source="params.yaml")
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None

# Jobs inherit these: the MLflow store resolves against this root whatever a
# job's working directory, and runs are tagged engine=snakemake.
os.environ.update(FASHION_MLP_ROOT=workflow.basedir, FASHION_MLP_ENGINE="snakemake")
# One id per `snakemake` invocation, tagged on every MLflow run it makes (tracking.invocation_id).
# Local jobs inherit it; `envvars:` passes it to cluster jobs, whose Snakemake keeps it. Only in
# the environment: in no command or output, so reruns stay byte-identical.
if workflow.is_main_process or not os.environ.get("FASHION_MLP_INVOCATION"):
    os.environ["FASHION_MLP_INVOCATION"] = str(uuid.uuid4())


envvars:
    "FASHION_MLP_INVOCATION",


STUDENTS = list(config["distill"])  # trained by `train` too, on their teacher's outputs
MODELS = list(config["train"]) + STUDENTS  # trained from their params block by `train`
EVALUATED = MODELS + ["tuned"]  # `tune` retrains its best trial as `tuned`
FIGURE_KINDS = ["confusion", "curves", "predictions", "reliability"]  # evaluate's PNGs, per model
# explain's PNGs, per model
EXPLAIN_FIGURE_KINDS = [
    "explain_classes",
    "explain_examples",
    "explain_deletion",
    "explain_cascade",
    "explain_randomized",
]
RAW = expand("data/raw/{name}", name=list(RAW_FILES))
MODEL_LESSONS = list(config["model_lessons"])  # lessons that read the trained models: after train and tune
LESSONS = list(config["lessons"]) + MODEL_LESSONS  # the tutorial's claims, a job each (lessons.smk)


wildcard_constraints:
    model="|".join(EVALUATED),
    lesson="|".join(LESSONS) or "^$",


def code(command):
    """The source files a stage's outputs depend on: its module's import closure (fashion_mlp/code_deps.py)."""
    return stage_code(COMMANDS[command][0])


def block_section(model):
    """Where a model's params block is: "train", or "distill" for a student."""
    return "distill" if model in STUDENTS else "train"


def kind_priority(wildcards):
    """A model's kind's priority in the kinds' registry, which its train (+1), explain and evaluate (-1)
    jobs start from: the longest jobs first, the short ones fill the gaps at the end (a CNN takes several
    times an MLP's time). `tuned`, the search's retrain, is an MLP."""
    block = {} if wildcards.model == "tuned" else config[block_section(wildcards.model)][wildcards.model]
    return kinds.of_block(block).priority


def teacher_model(wildcards):
    """A student's teacher's file (train's output), which its job waits for; nothing for other models."""
    if wildcards.model not in STUDENTS:
        return []
    return f"models/{config['distill'][wildcards.model]['teacher']['model']}.keras"


def section_flags(*keys):
    """params.yaml section -> `--key value` flags, rendered exactly as DVC renders ${section}."""
    node = config
    for key in keys:
        node = node[key]
    return cli_flags(node)


def tune_cored_workers():
    """How many of the tune.workers Hyperband workers reserve a core: no more than --cores, at least 1.

    The chief and its workers start together. A worker keeps about three quarters of its core busy
    (it waits between trials and for its own data pipeline), so workers beyond --cores run too,
    reserving no core, in the time the others leave idle: 3 workers on 2 cores searched in 109 s,
    2 in 117 s (docs/speed.md). The search's result is the same for any number. On a cluster
    (--jobs) every worker reserves its core. The main Snakemake decides and exports the number; the
    Snakemake of a cluster job or a group reads it back (`envvars:`), so every process builds the
    same jobs.
    """
    workers = config["tune"]["workers"]
    if not workflow.is_main_process and os.environ.get("FASHION_MLP_TUNE_CORED_WORKERS", "").isdigit():
        return int(os.environ["FASHION_MLP_TUNE_CORED_WORKERS"])
    cores = workflow.resource_settings.cores
    cored = workers
    if workflow.resource_settings.nodes is None and isinstance(cores, int) and cores < workers:
        cored = max(1, cores)
        logger.info(
            f"tune: --cores {cores}: {cored} of the tune.workers {workers} Hyperband workers reserve a core, "
            "the rest share them (the search's result is the same)"
        )
    os.environ["FASHION_MLP_TUNE_CORED_WORKERS"] = str(cored)
    return cored


TUNE_CORED_WORKERS = tune_cored_workers()
# What Snakemake's `threads` sets (forkserver.SNAKEMAKE_THREAD_VARIABLES), at 1: for the tune jobs that
# reserve no core (threads 0, where OpenMP refuses 0), and so that the fork server serves them too.
ONE_THREAD_ENV = " ".join(f"{name}=1" for name in SNAKEMAKE_THREAD_VARIABLES)


envvars:
    "FASHION_MLP_TUNE_CORED_WORKERS",


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


TRACKING = {}


def init_tracking():
    """Create the MLflow store and experiment beside the first jobs (download and prepare use no
    MLflow); a job that needs the store first waits for it (tracking.store_lock)."""
    TRACKING["init"] = subprocess.Popen(
        ["fashion-mlp", "init-tracking", "--experiment", config["mlflow"]["experiment"]],
        cwd=workflow.basedir,
    )


def tracking_initialized():
    """Wait for init_tracking's process; its failure is reported (a job that needed the store failed too)."""
    process = TRACKING.pop("init", None)
    if process is not None and process.wait() != 0:
        logger.warning("fashion-mlp init-tracking failed: see its message above")


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


PROFILE_RUNS = os.path.join(workflow.basedir, "reports", "timings", "runs")


def start_profile():
    """Each job records its own time, CPU and marks, and a thread samples the machine's CPU
    (fashion_mlp/profiling): the profile of this run, drawn when it succeeds."""
    from fashion_mlp.profiling import sampler

    sampler.start(PROFILE_RUNS)


def draw_profile():
    """Start drawing reports/timings/profile.png and profile.md from this run's records, beside
    `dvc commit`; return the function that waits for the drawing. A run that ran no job (a no-op
    rerun) keeps the last run's profile."""
    from fashion_mlp.profiling import sampler

    folder = sampler.stop()
    drawing = None
    if folder is not None and sampler.ran_jobs(folder):
        drawing = subprocess.Popen(
            ["fashion-mlp", "profile", "--run_dir", str(folder)],
            cwd=workflow.basedir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != sampler.ENV},  # the drawing is no job of the run
        )

    def drawn():
        if drawing is not None:
            _, stderr = drawing.communicate()
            if drawing.returncode != 0:
                logger.warning(f"the run's profile was not drawn:\n{stderr[-2000:]}")
        sampler.prune(PROFILE_RUNS)

    return drawn


FORKSERVER = {}


def start_forkserver():
    """One process imports TensorFlow, Keras, MLflow and the rest once, and the 1-thread jobs run as
    forks of it (fashion_mlp/forkserver/): the same bytes, seconds less each. Local runs only."""
    from fashion_mlp import forkserver

    if workflow.resource_settings.nodes is not None:  # a cluster's jobs run elsewhere
        return
    # The server and every job (they inherit this process's environment) allocate with tcmalloc.
    os.environ.update(forkserver.with_tcmalloc(dict(os.environ)))
    path = forkserver.new_socket_path()  # a name its successors' sweep recognises
    os.makedirs(os.path.join(workflow.basedir, "logs"), exist_ok=True)
    with open(os.path.join(workflow.basedir, "logs", "forkserver.log"), "w") as log:
        FORKSERVER["process"] = subprocess.Popen(
            [sys.executable, "-m", "fashion_mlp.forkserver", "--socket", path, "--parent", str(os.getpid())],
            cwd=workflow.basedir,
            env=forkserver.one_thread_env(dict(os.environ)),
            stdout=log,
            stderr=log,
        )
    os.environ[forkserver.ENV] = path  # the jobs ask it; until it listens, they wait (START_WAIT)
    os.environ[forkserver.PID_ENV] = str(FORKSERVER["process"].pid)


def stop_forkserver():
    from fashion_mlp import forkserver

    os.environ.pop(forkserver.ENV, None)
    os.environ.pop(forkserver.PID_ENV, None)
    process = FORKSERVER.pop("process", None)
    if process is not None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
