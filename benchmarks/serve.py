"""Speed of the champion at work: `mlflow models serve` over loopback, and `fashion-mlp predict`.

    python benchmarks/serve.py [--model models/tuned.keras | models:/fashion-mnist-classifier@champion]

Measures, on real test images encoded as PNG:
- p50 and p95 latency of one image per request (sequential requests on one keep-alive connection);
- images per second with batches of 256;
- the same two for the images sent as arrays (the `pixels` column: 28x28 uint8 numbers, no decoding),
  after checking that arrays and PNGs get the same classes;
- wall time of `fashion-mlp predict DIR --json` on a directory of 1,000 PNGs, TensorFlow's start included.
CPU times are printed beside the wall times: on a shared machine they are the steadier figure.
Goals on 2 cores: p50 <= 30 ms, >= 2,000 images/s batched, predict on 1,000 PNGs <= 10 s.
A .keras file is logged as the image pyfunc into a throw-away MLflow store and served from there;
a models:/ URI is served from the pipeline's store (MLFLOW_TRACKING_URI honoured).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA = Path("/usr/share/datasets/fashion-mnist")


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def body(images: list[bytes]) -> bytes:
    rows = [[base64.b64encode(data).decode()] for data in images]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


def pixels_body(frames: np.ndarray) -> bytes:
    rows = [[frame.tolist()] for frame in frames]
    return json.dumps({"dataframe_split": {"columns": ["pixels"], "data": rows}}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def served_uri(model: str, store: Path, env: dict) -> str:
    """The URI to serve: a models:/ URI as given, or a .keras file logged as the image pyfunc."""
    if model.startswith(("models:/", "runs:/")):
        return model
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'mlflow.db'}"
    code = (
        "import mlflow, sys; from fashion_mlp import serving; mlflow.set_experiment('bench'); "
        "info = serving.log_model(sys.argv[1]); print(info.model_uri)"
    )
    out = subprocess.run(
        # resolved: the logging process runs in the throw-away store, not where the path was given
        [sys.executable, "-c", code, str(Path(model).resolve())],
        cwd=store,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def wait_for_ping(port: int, server: subprocess.Popen, timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.poll() is not None:
            raise SystemExit(f"mlflow models serve exited:\n{server.stdout.read().decode()[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            time.sleep(0.3)
    raise SystemExit("mlflow models serve did not answer /ping")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (the server's workers): the measure
    that does not depend on what else loads the machine."""
    import psutil

    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def invoke(connection: http.client.HTTPConnection, payload: bytes) -> dict:
    connection.request("POST", "/invocations", body=payload, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        raise SystemExit(f"/invocations answered {response.status}: {answer}")
    errors = [row["error"] for row in answer["predictions"] if row.get("error")]  # a 200 can hold bad rows
    if errors:
        raise SystemExit(f"/invocations answered {len(errors)} rows with an error, the first: {errors[0]}")
    return answer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models/tuned.keras"), help=".keras file or models:/ URI")
    parser.add_argument("--single", type=int, default=300, help="one-image requests to time")
    parser.add_argument("--batches", type=int, default=20, help="256-image requests to time")
    parser.add_argument("--files", type=int, default=1000, help="PNGs for `fashion-mlp predict`")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "workflow"))
    from fashion_mlp.data import read_split

    x, _ = read_split(DATA, "test")
    pngs = [png(pixels) for pixels in x[: max(256, args.files)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = str(REPO / "workflow")
    from fashion_mlp import tracking

    env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()  # MLFLOW_TRACKING_URI, or the pipeline's store
    results: dict = {"model": args.model, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        uri = served_uri(args.model, tmp, env)
        port = free_port()
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            results["server_start_s"] = round(wait_for_ping(port, server), 1)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for data in pngs[:20]:  # warm-up: the first calls trace the model
                invoke(connection, body([data]))
            for kind, encode in (("", lambda i: body([pngs[i]])), ("pixels_", lambda i: pixels_body(x[i : i + 1]))):
                latencies = []
                cpu = cpu_seconds(server.pid)
                for i in range(args.single):
                    payload = encode(i % len(pngs))
                    started = time.perf_counter()
                    invoke(connection, payload)
                    latencies.append(time.perf_counter() - started)
                results[f"single_{kind}p50_ms"] = round(1000 * float(np.percentile(latencies, 50)), 1)
                results[f"single_{kind}p95_ms"] = round(1000 * float(np.percentile(latencies, 95)), 1)
                results[f"single_{kind}server_cpu_ms"] = round(1000 * (cpu_seconds(server.pid) - cpu) / args.single, 1)
            starts = [(256 * i) % (len(pngs) - 256) for i in range(args.batches)]
            sent_as = {
                "": [body(pngs[s : s + 256]) for s in starts],
                "pixels_": [pixels_body(x[s : s + 256]) for s in starts],
            }
            as_png, as_pixels = (invoke(connection, payloads[0])["predictions"] for payloads in sent_as.values())
            if [r["class"] for r in as_png] != [r["class"] for r in as_pixels]:
                raise SystemExit("the same images sent as arrays and as PNGs got different classes")
            for kind, payloads in sent_as.items():
                started, cpu = time.perf_counter(), cpu_seconds(server.pid)
                for payload in payloads:
                    invoke(connection, payload)
                results[f"batch256_{kind}images_per_s"] = round(256 * args.batches / (time.perf_counter() - started))
                results[f"batch256_{kind}images_per_server_cpu_s"] = round(
                    256 * args.batches / (cpu_seconds(server.pid) - cpu)
                )
        finally:
            server.terminate()
            server.wait(timeout=30)

        directory = tmp / "pngs"
        directory.mkdir()
        for i, data in enumerate(pngs[: args.files]):
            (directory / f"{i:04d}.png").write_bytes(data)
        started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            [str(BIN / "fashion-mlp"), "predict", str(directory), "--model", args.model, "--json"],
            env=env, stdout=subprocess.DEVNULL, check=True,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        results[f"predict_{args.files}_pngs_s"] = round(time.perf_counter() - started, 2)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        results[f"predict_{args.files}_pngs_cpu_s"] = round(cpu, 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
