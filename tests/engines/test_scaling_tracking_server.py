"""The team tracking server (`make mlflow-server`) against a real PostgreSQL.

workflow/scripts/mlflow_server.py starts Debian's PostgreSQL (postgres_cluster.py) in a scratch
directory and `mlflow server` in front of it, on free loopback ports. The unchanged smoke pipeline then
runs with MLFLOW_TRACKING_URI pointing at the server, and everything is checked from the
outside: runs, nested trials, artifacts and the champion alias through plain REST requests,
the rows in PostgreSQL with psycopg2, and nothing in the copy's default SQLite store.
Last, SIGTERM (as Ctrl-C) must stop the server and PostgreSQL.

Outside CI the module is skipped when PostgreSQL is not installed; in CI (CI=true, where
.ci/run installs it) that is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import REPO, edit_params, engine_env, free_ports, missing_service, smoke_copy
from fashion_mlp.config import load_params

pytestmark = pytest.mark.e2e
SCRIPT = REPO / "workflow/scripts/mlflow_server.py"
MODELS = ("baseline", "tuned")  # one train block and the search's model: every kind of run, at less cost
START_TIMEOUT = 180  # seconds for PostgreSQL and mlflow server to answer
PNG = b"\x89PNG"
PIPELINE_LOG = "pipeline.log"  # in the copy, beside its params.yaml


def load_script():
    spec = importlib.util.spec_from_file_location("mlflow_server_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


server = load_script()
import postgres_cluster as cluster  # noqa: E402  (beside the script, which put its folder on sys.path)


def require_postgres() -> None:
    try:
        cluster.pg_bin()
        cluster.as_pg_user()
    except cluster.ServerError as exc:
        missing_service(str(exc), "apt-get install postgresql")


# --- the REST API, with nothing but urllib ------------------------------------------------


def http(url: str, body: dict | None = None, timeout: float = 30) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"} if data else {},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def api(base: str, endpoint: str, body: dict | None = None, **query) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return json.loads(http(url, body) or b"{}")


def served_artifact(base: str, uri: str) -> bytes:
    """Download mlflow-artifacts:/<path> through the server's artifact proxy."""
    assert uri.startswith("mlflow-artifacts:/"), uri
    path = uri.removeprefix("mlflow-artifacts:").lstrip("/")
    return http(f"{base}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(path)}")


def search_runs(base: str, experiment_id: str) -> list[dict]:
    runs, token = [], None
    while True:
        body = {"experiment_ids": [experiment_id], "max_results": 1000, "run_view_type": "ALL"}
        if token:
            body["page_token"] = token
        page = api(base, "runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def metrics(run: dict) -> dict[str, float]:
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


# --- the server, started by the script as `make mlflow-server` starts it --------------------


@dataclass
class Server:
    settings: object  # mlflow_server.Settings
    process: subprocess.Popen
    log: Path
    uri: str
    children: list

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C in the terminal: the script stops mlflow server, then PostgreSQL."""
        if self.process.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.children = self.process_tree()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def process_tree(self) -> list:
        return psutil.Process(self.process.pid).children(recursive=True)

    def clean_up(self) -> None:
        """Whatever stop() left: processes, a running PostgreSQL, the state directory."""
        self.stop()
        for child in self.children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        try:
            cluster.stop_postgres(self.settings)
        finally:
            shutil.rmtree(self.settings.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory) -> Server:
    require_postgres()
    # Not under pytest's basetemp: under root, PostgreSQL runs as `postgres`, who cannot enter
    # /tmp/pytest-of-root (mode 0700). The script opens the state directory to it (0711).
    state = Path(tempfile.mkdtemp(prefix="fashion-mlp-tracking-"))
    pg_port, port = free_ports(2)
    args = ["--dir", str(state), "--pg-port", str(pg_port), "--port", str(port)]
    settings = server.parse_args(args)
    log = tmp_path_factory.mktemp("tracking-server") / "server.log"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            env=engine_env(),
            cwd=state,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Server(settings=settings, process=process, log=log, uri=f"http://127.0.0.1:{port}", children=[])
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, f"mlflow_server.py exited ({process.returncode}):\n{running.output()}"
            try:
                if http(f"{running.uri}/health", timeout=5).strip() == b"OK":
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"no answer within {START_TIMEOUT} s:\n{running.output()}"
            time.sleep(0.5)
        yield running
    finally:
        running.clean_up()


@pytest.fixture(scope="module")
def pipeline(tracking_server: Server, tmp_path_factory) -> Path:
    """The smoke pipeline up to the champion, its runs sent to the server by MLFLOW_TRACKING_URI alone, on
    one core (as on a one-core machine: the search then runs one Hyperband worker). Every stage that
    creates a run, a trial or a registered version runs; demos, explain and report (which only add to
    those runs) are left out, and `train:` keeps baseline alone (regularized and cnn make the same kind of
    run, which the engines' smoke runs check), to save CPU time."""
    repo = smoke_copy(tmp_path_factory.mktemp("tracked") / "repo")
    edit_params(repo, {"train": {"baseline": load_params(repo / "params.yaml")["train"]["baseline"]}})
    subprocess.run(["git", "commit", "-qam", "baseline alone"], cwd=repo, check=True, env=engine_env())
    env = engine_env() | {"MLFLOW_TRACKING_URI": tracking_server.uri}
    result = subprocess.run(
        ["snakemake", "--cores", "1", "reports/champion.json"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    # Kept for the tests' messages: a trial that raised is swallowed by KerasTuner, so only its log says why.
    (repo / PIPELINE_LOG).write_text(f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    assert result.returncode == 0, (
        f"snakemake failed ({result.returncode})\n--- stdout\n{result.stdout[-6000:]}"
        f"\n--- stderr\n{result.stderr[-6000:]}\n--- server\n{tracking_server.output()}"
    )
    return repo


def pipeline_output(repo: Path) -> str:
    """The pipeline's tracebacks (or its last lines when it printed none)."""
    text = (repo / PIPELINE_LOG).read_text(errors="replace")
    start = text.find("Traceback")
    return text[start : start + 6000] if start >= 0 else text[-6000:]


# --- the tests ----------------------------------------------------------------------------


def test_pipeline_logs_every_run_trial_artifact_and_the_champion_to_the_postgres_backed_server(
    tracking_server: Server, pipeline: Path
) -> None:
    base, repo = tracking_server.uri, pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())["mlflow"]

    experiment = api(base, "experiments/get-by-name", experiment_name=params["experiment"])["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:/"), (
        "the experiment's artifacts go through the server (--serve-artifacts)"
    )
    runs = search_runs(base, experiment["experiment_id"])
    by_id = {r["info"]["run_id"]: r for r in runs}
    unfinished = {
        r["info"]["run_name"]: (r["info"]["status"], tags(r)) for r in runs if r["info"]["status"] != "FINISHED"
    }
    assert not unfinished, f"{unfinished}\n{pipeline_output(repo)}\n--- server\n{tracking_server.output()}"

    # One run per model (train and evaluate together), one tune parent, its trials nested under it.
    model_runs = {tags(r).get("model"): r for r in runs if tags(r).get("model") in MODELS}
    assert sorted(model_runs) == sorted(MODELS)
    assert sum(tags(r).get("model") in MODELS for r in runs) == len(MODELS)
    for model, r in model_runs.items():
        assert tags(r)["stage"] == "train,evaluate" and tags(r)["engine"] == "snakemake", model
        assert "test_accuracy" in metrics(r), model
    parents = [r for r in runs if r["info"]["run_name"] == "tune" and tags(r).get("stage") == "tune"]
    assert len(parents) == 1
    parent_id = parents[0]["info"]["run_id"]
    trials = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent_id]
    assert len(trials) >= 2 and len(trials) == int(metrics(parents[0])["trials"])
    assert all(tags(t)["model"] == "trial" and "trial_id" in tags(t) for t in trials)
    assert tags(model_runs["tuned"])["tune_run_id"] == parent_id
    nested = [r for r in runs if "mlflow.parentRunId" in tags(r)]
    assert all(tags(r)["mlflow.parentRunId"] == parent_id for r in nested), "only trials are nested"
    assert len(runs) == len(MODELS) + 1 + len(trials), sorted(r["info"]["run_name"] for r in runs)

    # Artifacts went through the server into its artifact store: the figures and the logged models.
    for model, r in model_runs.items():
        listed = api(base, "artifacts/list", run_id=r["info"]["run_id"], path="figures").get("files", [])
        assert f"figures/{model}_confusion.png" in {f["path"] for f in listed}, model
        figure = served_artifact(base, f"{r['info']['artifact_uri']}/figures/{model}_confusion.png")
        assert figure[:4] == PNG
    logged = api(base, "logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})["models"]
    for model, r in model_runs.items():
        found = [m["info"] for m in logged if m["info"].get("source_run_id") == r["info"]["run_id"]]
        assert found, f"no logged model for {model}"
        artifact_uri = found[0]["artifact_uri"]
        assert b"flavors:" in served_artifact(base, f"{artifact_uri}/MLmodel")
        stored = tracking_server.settings.artifacts / artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
        assert (stored / "MLmodel").is_file(), f"{model}'s model is not in the server's artifact store"

    # The champion alias names a version of the run that trained the model register chose (by its hash).
    champion = json.loads((repo / "reports/champion.json").read_text())
    # --cores 1: worker0 reserved the core, the others shared it; together they ran every trial once.
    workers = json.loads((repo / "reports/timings/tune.json").read_text())["workers"]
    count = yaml.safe_load((repo / "params.yaml").read_text())["tune"]["workers"]
    assert sorted(workers) == [f"worker{i}" for i in range(count)] and sum(workers.values()) == len(trials), workers
    version = api(base, "registered-models/alias", name=params["registered_model"], alias="champion")["model_version"]
    assert version["run_id"] == model_runs[champion["champion"]]["info"]["run_id"]
    assert tags(by_id[version["run_id"]])["model_sha256"] == champion["model_sha256"]

    # The rows are in PostgreSQL.
    conn = cluster.connect(tracking_server.settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == len(runs)
            cur.execute(
                "SELECT count(*) FROM runs WHERE experiment_id = %s AND status = 'FINISHED'",
                (int(experiment["experiment_id"]),),
            )
            assert cur.fetchone()[0] == len(runs)
            cur.execute("SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId' AND value = %s", (parent_id,))
            assert cur.fetchone()[0] == len(trials)
            cur.execute(
                "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
                (params["registered_model"],),
            )
            assert cur.fetchone()[0] == int(version["version"])
    finally:
        conn.close()

    # And nothing in the copy's default SQLite store.
    for default in ("mlflow.db", "mlartifacts", "mlruns"):
        assert not (repo / default).exists(), f"{default} was written in the copy: the pipeline ignored the server"

    print(
        f"\ntracking server: {len(runs)} runs ({len(trials)} nested trials), "
        f"champion {champion['champion']} version {version['version']}"
    )


def test_sigterm_stops_the_server_and_postgres(tracking_server: Server) -> None:
    """What Ctrl-C on `make mlflow-server` does: the server, its workers and PostgreSQL all stop."""
    settings = tracking_server.settings
    assert cluster.running_port(settings) == settings.pg_port
    children = tracking_server.process_tree()
    assert children, "mlflow server runs under the script"
    assert tracking_server.stop() == 0, tracking_server.output()
    output = tracking_server.output()
    assert "mlflow-server: stopping mlflow server" in output and "mlflow-server: stopping PostgreSQL" in output
    assert cluster.running_port(settings) is None, "PostgreSQL still runs"
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    with pytest.raises(urllib.error.URLError):
        http(f"{tracking_server.uri}/health", timeout=5)
