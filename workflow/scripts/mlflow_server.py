#!/usr/bin/env python3
"""A team MLflow tracking server: PostgreSQL backend store, artifacts served by the server.

`make mlflow-server` runs this script. It

1. finds Debian's PostgreSQL (/usr/lib/postgresql/<version>/bin, the newest one),
2. on first use creates a cluster in <dir>/postgres (initdb, password authentication,
   the password in <dir>/pgpass, the libpq password file, mode 0600),
3. starts it with pg_ctl, listening on 127.0.0.1:<pg-port> only (no Unix socket),
4. creates the role and database `mlflow` if missing,
5. runs `mlflow server` in the foreground: backend store
   postgresql://mlflow@127.0.0.1:<pg-port>/mlflow, --serve-artifacts with the files in
   <artifacts> (clients upload and download through the server, over HTTP),
6. on Ctrl-C or SIGTERM stops the server, then PostgreSQL (pg_ctl stop -m fast), if it started it.

PostgreSQL refuses to run as root: under root its binaries run as the `postgres` user
(runuser), who then owns <dir>/postgres and must be able to reach it. Point the pipeline
at the server with MLFLOW_TRACKING_URI=http://127.0.0.1:<port>. Every setting is a flag,
with its default from the environment:

    TRACKING_SERVER_DIR        --dir        <repo>/.mlflow-server
    TRACKING_SERVER_ARTIFACTS  --artifacts  <dir>/artifacts
    TRACKING_SERVER_PG_PORT    --pg-port    5433
    TRACKING_SERVER_HOST       --host       127.0.0.1
    TRACKING_SERVER_PORT       --port       5000
    TRACKING_SERVER_WORKERS    --workers    2

Arguments after `--` go to `mlflow server` as they are (e.g. --allowed-hosts when the
server listens on another interface than the loopback one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # postgres_cluster.py, beside this script
from postgres_cluster import (
    DATABASE,
    ROLE,
    ServerError,
    initdb,
    pg_bin,
    running_port,
    start_postgres,
    stop_postgres,
)

REPO = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 30  # seconds for mlflow server to exit after SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops everything, as Ctrl-C does


@dataclass
class Settings:
    dir: Path
    artifacts: Path
    pg_port: int
    host: str
    port: int
    workers: int
    mlflow_args: list[str] = field(default_factory=list)

    @property
    def pgdata(self) -> Path:
        return self.dir / "postgres"

    @property
    def pg_log(self) -> Path:
        return self.dir / "postgres.log"

    @property
    def pgpass(self) -> Path:
        return self.dir / "pgpass"

    @property
    def tracking_uri(self) -> str:
        return f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '::') else self.host}:{self.port}"


def parse_args(argv: list[str] | None = None) -> Settings:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    env = os.environ.get
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Arguments after -- are passed to `mlflow server`."
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(env("TRACKING_SERVER_DIR") or REPO / ".mlflow-server"),
        help="state directory: postgres/ (the cluster), postgres.log, pgpass "
        "(default: $TRACKING_SERVER_DIR or <repo>/.mlflow-server)",
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=env("TRACKING_SERVER_ARTIFACTS"),
        help="where the served artifacts are stored (default: $TRACKING_SERVER_ARTIFACTS or <dir>/artifacts)",
    )
    parser.add_argument(
        "--pg-port",
        type=int,
        default=int(env("TRACKING_SERVER_PG_PORT") or 5433),
        help="PostgreSQL's port on 127.0.0.1 (default: $TRACKING_SERVER_PG_PORT or 5433)",
    )
    parser.add_argument(
        "--host",
        default=env("TRACKING_SERVER_HOST") or "127.0.0.1",
        help="interface mlflow server listens on (default: $TRACKING_SERVER_HOST or 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("TRACKING_SERVER_PORT") or 5000),
        help="mlflow server's port (default: $TRACKING_SERVER_PORT or 5000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(env("TRACKING_SERVER_WORKERS") or 2),
        help="mlflow server's worker processes (default: $TRACKING_SERVER_WORKERS or 2)",
    )
    args = parser.parse_args(argv)
    state = args.dir.resolve()
    artifacts = (args.artifacts or state / "artifacts").resolve()
    return Settings(
        dir=state,
        artifacts=artifacts,
        pg_port=args.pg_port,
        host=args.host,
        port=args.port,
        workers=args.workers,
        mlflow_args=extra,
    )


# --- MLflow -------------------------------------------------------------------------------


def backend_store_uri(settings: Settings) -> str:
    """No password in it (it would show in ps): libpq reads it from PGPASSFILE."""
    return f"postgresql://{ROLE}@127.0.0.1:{settings.pg_port}/{DATABASE}"


def server_command(settings: Settings) -> list[str]:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    return [
        mlflow,
        "server",
        "--backend-store-uri",
        backend_store_uri(settings),
        "--serve-artifacts",
        "--artifacts-destination",
        str(settings.artifacts),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        *settings.mlflow_args,
    ]


def server_env(settings: Settings) -> dict[str, str]:
    return os.environ | {"PGPASSFILE": str(settings.pgpass)}


def run_server(settings: Settings) -> int:
    """Run mlflow server in its own process group until it exits, or Ctrl-C / SIGTERM stops it."""
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(server_command(settings), env=server_env(settings), start_new_session=True)
    try:
        return server.wait()
    except KeyboardInterrupt:
        ignore_stop_signals()  # a second Ctrl-C must not leave the server or PostgreSQL running
        print("mlflow-server: stopping mlflow server", file=sys.stderr, flush=True)
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn workers
            server.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        except ProcessLookupError:
            pass
        return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    # SIGINT (even when a non-interactive shell started us with it ignored), SIGTERM and SIGHUP
    # stop everything as Ctrl-C does, at any point.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    ours = False  # whether PostgreSQL is ours to stop: it was not running before
    try:
        initdb(settings)
        ours = running_port(settings) is None
        start_postgres(settings)
        print(
            f"mlflow-server: PostgreSQL {pg_bin().parent.name} on 127.0.0.1:{settings.pg_port} "
            f"({settings.pgdata}), artifacts in {settings.artifacts}",
            file=sys.stderr,
        )
        print(f"mlflow-server: export MLFLOW_TRACKING_URI={settings.tracking_uri}", file=sys.stderr, flush=True)
        return run_server(settings)
    except ServerError as exc:
        print(f"mlflow-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        ignore_stop_signals()
        if ours:
            print("mlflow-server: stopping PostgreSQL", file=sys.stderr, flush=True)
            stop_postgres(settings)


if __name__ == "__main__":
    sys.exit(main())
