#!/usr/bin/env python3
"""Debian's PostgreSQL as a private cluster for the MLflow tracking server (mlflow_server.py).

One cluster per state directory: created on first use (initdb, scram-sha-256 password
authentication, the password in <dir>/pgpass, mode 0600), started with pg_ctl on
127.0.0.1:<pg-port> only (no Unix socket), with the login role and database `mlflow`.
Under root every binary runs as the `postgres` user (runuser), since PostgreSQL refuses root.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

PG_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's layout; not /usr/local/bin's pg_ctl
SUPERUSER = "postgres"  # the cluster's superuser, used only to create the role and the database
ROLE = DATABASE = "mlflow"


class ServerError(RuntimeError):
    """A setup step failed; the message says what to do."""


class Cluster(Protocol):
    """Where a cluster lives: mlflow_server.Settings is one."""

    dir: Path
    pg_port: int

    @property
    def pgdata(self) -> Path: ...

    @property
    def pg_log(self) -> Path: ...

    @property
    def pgpass(self) -> Path: ...


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


def pg(settings: Cluster, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one of PostgreSQL's binaries (initdb, pg_ctl) as the PostgreSQL user, from /."""
    cmd = [*as_pg_user(), str(pg_bin() / tool), *args]
    result = subprocess.run(cmd, cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise ServerError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            + (f"\n(log: {settings.pg_log})" if tool == "pg_ctl" else "")
        )
    return result


def password(settings: Cluster) -> str:
    """The password of the superuser and of the mlflow role, from <dir>/pgpass."""
    line = settings.pgpass.read_text().splitlines()[0]
    return line.split(":", 4)[4]


def initdb(settings: Cluster) -> None:
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


def running_port(settings: Cluster) -> int | None:
    """The port of the cluster's running postmaster, or None if it is not running."""
    if pg(settings, "pg_ctl", "status", "-D", str(settings.pgdata), check=False).returncode != 0:
        return None
    lines = (settings.pgdata / "postmaster.pid").read_text().splitlines()
    return int(lines[3])


def start_postgres(settings: Cluster) -> bool:
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


def stop_postgres(settings: Cluster) -> None:
    if running_port(settings) is not None:
        pg(settings, "pg_ctl", "stop", "-D", str(settings.pgdata), "-m", "fast", "-w", "-t", "60")


def connect(settings: Cluster, user: str = ROLE, dbname: str = DATABASE):
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


def create_database(settings: Cluster) -> None:
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
