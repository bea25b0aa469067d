"""The champion over REST, for the serving tests: the real `make serve` on a free port (served), the bodies
docs/serving.md shows (split, payload), what comes back (classes, error_of), and a champion registered as the
pipeline registers it (register_champion)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from test_safety import make_target

from conftest import BIN, REPO, clean_env, free_ports


def post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def split(column: str, values: list) -> bytes:
    """A dataframe_split body of one column, one value per row."""
    return json.dumps({"dataframe_split": {"columns": [column], "data": [[value] for value in values]}}).encode()


def payload(images: list[bytes]) -> bytes:
    return split("image", [base64.b64encode(data).decode() for data in images])


def classes(answer: dict) -> list[str | None]:
    return [row["class"] for row in answer["predictions"]]


def register_champion(store: Path, model_path: Path) -> None:
    """What the pipeline does, on a throw-away store: a train run tagged with the model's hash, then
    register with params.yaml's mlflow section as its flags (the rules' command line)."""
    import shlex

    import mlflow

    from fashion_mlp import tracking
    from fashion_mlp.config import cli_flags
    from fashion_mlp.io import sha256_file, write_json
    from fashion_mlp.stages import register

    tracking.init("serve-test")
    with mlflow.start_run(run_name="small", tags={"model_sha256": sha256_file(model_path)}):
        pass
    metrics = store / "small.json"
    write_json(metrics, {"model": "small", "val_accuracy": 0.85, "accuracy": 0.84})
    section = yaml.safe_load((REPO / "params.yaml").read_text())["mlflow"] | {"experiment": "serve-test"}
    register.main(
        [
            *shlex.split(cli_flags(section)),
            "--metrics", str(metrics), "--models_dir", str(model_path.parent), "--out", str(store / "champion.json"),
        ]
    )  # fmt: skip


@contextlib.contextmanager
def served(uri: str):
    """The real `make serve` (the Makefile's target) of the store's champion: MLFLOW_TRACKING_URI names the store,
    SERVE_PORT a free port, SERVE_HOST is left to its default; -o install: the virtualenv running the tests is the
    one to use. Yields the port once /ping answers; stops the whole process group (make, mlflow, uvicorn)."""
    (port,) = free_ports()
    command = ["make", "-o", "install", "serve", f"SERVE_PORT={port}", f"VENV={os.path.relpath(BIN.parent, REPO)}"]
    with make_target(command, REPO, clean_env(MLFLOW_TRACKING_URI=uri), f"http://127.0.0.1:{port}/ping"):
        yield port


def error_of(answer: dict) -> str:
    """The message of a 400 from MLflow's scoring server."""
    return answer.get("message", "")
