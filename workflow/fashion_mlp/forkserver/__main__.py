"""`python -m fashion_mlp.forkserver --socket PATH`: serve (the Snakefile's onstart starts it so).
`python -m fashion_mlp.forkserver -- COMMAND...`: run a command with a server of its own (`make repro`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from fashion_mlp.forkserver import ENV, PID_ENV, new_socket_path, with_tcmalloc
from fashion_mlp.forkserver.server import run_job, serve


def run_command(command: list[str], log: str) -> int:
    """Run `command` (`dvc repro`: DVC has no onstart) with a server of its own, started as the Snakefile's
    and stopped when the command ends; the command's status. Server and command share one environment
    (tcmalloc preloaded where installed), so every job of the command that the server runs is served."""
    import subprocess

    env = with_tcmalloc(dict(os.environ))
    path = new_socket_path()
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    with open(log, "w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "fashion_mlp.forkserver", "--socket", path, "--parent", str(os.getpid())],
            env=env, stdout=sink, stderr=sink,
        )  # fmt: skip
    try:
        try:
            child = subprocess.Popen(command, env=env | {ENV: path, PID_ENV: str(server.pid)})
        except OSError as exc:
            sys.exit(f"python -m fashion_mlp.forkserver: cannot run {command[0]!r}: {exc.strerror}")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the command itself, as from a shell
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda number, _frame: child.send_signal(number))
        return child.wait()
    finally:
        server.terminate()  # it kills any fork left and removes its socket
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_mlp.forkserver",
        description="A fork server for the pipeline's jobs: heavy libraries imported once, each job a fork.",
        epilog="Either serve (--socket PATH: the Snakefile's onstart), or run a command with a server of its "
        "own: python -m fashion_mlp.forkserver -- dvc repro (make repro).",
    )
    parser.add_argument("--socket", help="serve on this Unix socket")
    parser.add_argument("--parent", type=int, help="leave when this process is gone (default: the parent)")
    parser.add_argument(
        "--log", default=os.path.join("logs", "forkserver.log"), help="with a command: the server's log"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="a command to run with a server, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and args.socket:
        parser.error("give --socket (serve) or a command (run it with a server of its own), not both")
    if command:
        code = run_command(command, args.log)
        if code < 0:  # killed by a signal: die of the same one, as the command did
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        sys.exit(code)
    if not args.socket:
        parser.error("give --socket PATH to serve, or a command to run with a server: -- dvc repro")
    run_job(*serve(args.socket, args.parent or os.getppid()))


if __name__ == "__main__":
    main()
