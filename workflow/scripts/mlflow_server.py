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
import re
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PG_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's layout; not /usr/local/bin's pg_ctl
SUPERUSER = "postgres"  # the cluster's superuser, used only to create the role and the database
ROLE = DATABASE = "mlflow"
STOP_TIMEOUT = 30  # seconds for mlflow server to exit after SIGTERM
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops everything, as Ctrl-C does


class ServerError(RuntimeError):
    """A setup step failed; the message says what to do."""


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


# --- PostgreSQL ---------------------------------------------------------------------------


def pg_bin() -> Path:
    """Debian's PostgreSQL binaries, the newest installed version."""
    found = [Path(p) for p in Path("/").glob(PG_GLOB.lstrip("/")) if (Path(p) / "pg_ctl").is_file()]
    if not found:
        raise ServerError(f"PostgreSQL is not installed (no {PG_GLOB}/pg_ctl): apt-get install postgresql")
    return max(found, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])


def as_pg_user() -> list[str]:
    """The command prefix that runs PostgreSQL's binaries as an allowed user."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            "running as root, and PostgreSQL refuses to: there is no `postgres` user to run it as "
            "(Debian's postgresql package creates it)"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


def give_to_pg_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def pg(settings: Settings, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of PostgreSQL's binaries (initdb, pg_ctl) as the PostgreSQL user, from /."""
    cmd = [*as_pg_user(), str(pg_bin() / tool), *args]
    result = subprocess.run(cmd, cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise ServerError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            + (f"\n(log: {settings.pg_log})" if tool == "pg_ctl" else "")
        )
    return result


def password(settings: Settings) -> str:
    """The password of the superuser and of the mlflow role, from <dir>/pgpass."""
    line = settings.pgpass.read_text().splitlines()[0]
    return line.split(":", 4)[4]


def initdb(settings: Settings) -> None:
    """Create the cluster on first use, with a new random password in <dir>/pgpass."""
    if (settings.pgdata / "PG_VERSION").is_file():
        if not settings.pgpass.is_file():
            raise ServerError(
                f"{settings.pgdata} exists but {settings.pgpass} (its password) does not: "
                f"remove {settings.pgdata} to start afresh"
            )
        return
    settings.dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        settings.dir.chmod(settings.dir.stat().st_mode | 0o711)  # the postgres user goes through it
    secret = secrets.token_urlsafe(24)
    settings.pgpass.touch(mode=0o600)
    settings.pgpass.chmod(0o600)  # libpq ignores a password file that others can read
    settings.pgpass.write_text(f"*:*:*:{ROLE}:{secret}\n*:*:*:{SUPERUSER}:{secret}\n")
    settings.pgdata.mkdir(mode=0o700, exist_ok=True)
    give_to_pg_user(settings.pgdata)
    pwfile = settings.dir / ".initdb-password"
    pwfile.touch(mode=0o600)
    pwfile.write_text(secret + "\n")
    give_to_pg_user(pwfile)
    try:
        reach = subprocess.run([*as_pg_user(), "test", "-w", str(settings.pgdata)], cwd="/")
        if reach.returncode != 0:
            raise ServerError(
                f"the postgres user cannot write {settings.pgdata} (a parent directory is closed to "
                "it?): choose another --dir / TRACKING_SERVER_DIR, e.g. under /var/tmp"
            )
        pg(
            settings,
            "initdb",
            "-D",
            str(settings.pgdata),
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-locale",
        )
    finally:
        pwfile.unlink(missing_ok=True)


def running_port(settings: Settings) -> int | None:
    """The port of the cluster's running postmaster, or None if it is not running."""
    if pg(settings, "pg_ctl", "status", "-D", str(settings.pgdata), check=False).returncode != 0:
        return None
    lines = (settings.pgdata / "postmaster.pid").read_text().splitlines()
    return int(lines[3])


def start_postgres(settings: Settings) -> bool:
    """initdb on first use, start the cluster on 127.0.0.1:<pg-port>, create the role and database.

    Returns whether this call started it (False: it was running already, and keeps running).
    """
    initdb(settings)
    port = running_port(settings)
    if port is not None:
        if port != settings.pg_port:
            raise ServerError(f"the cluster in {settings.pgdata} already runs, on port {port}, not {settings.pg_port}")
        started = False
    else:
        settings.pg_log.touch()
        give_to_pg_user(settings.pg_log)
        # Loopback TCP only; -k '' turns the Unix socket off (no /var/run/postgresql needed).
        pg(
            settings,
            "pg_ctl",
            "start",
            "-D",
            str(settings.pgdata),
            "-l",
            str(settings.pg_log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {settings.pg_port} -h 127.0.0.1 -k ''",
        )
        started = True
    try:
        create_database(settings)
    except BaseException:
        if started:
            stop_postgres(settings)
        raise
    return started


def stop_postgres(settings: Settings) -> None:
    if running_port(settings) is not None:
        pg(settings, "pg_ctl", "stop", "-D", str(settings.pgdata), "-m", "fast", "-w", "-t", "60")


def connect(settings: Settings, user: str = ROLE, dbname: str = DATABASE):
    """A psycopg2 connection to the cluster, authenticated through <dir>/pgpass."""
    import psycopg2

    return psycopg2.connect(
        host="127.0.0.1",
        port=settings.pg_port,
        user=user,
        dbname=dbname,
        passfile=str(settings.pgpass),
        connect_timeout=10,
    )


def create_database(settings: Settings) -> None:
    """The login role `mlflow` (not a superuser) and its database `mlflow`, if missing."""
    from psycopg2 import sql

    conn = connect(settings, user=SUPERUSER, dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(ROLE)), (password(settings),)
                )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DATABASE), sql.Identifier(ROLE))
                )
    finally:
        conn.close()


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
