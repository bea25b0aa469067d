"""The server's side: preload the libraries, listen, and fork a child per request (`serve`); in the child,
become the job's process and run its command (`run_job`). Started by `python -m fashion_mlp.forkserver`."""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import json
import os
import select
import signal
import socket
import stat
import sys

from fashion_mlp.forkserver import ENV, HEADER, PRELOAD, SOCKETS, alive, import_time_env


def read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < HEADER.size:
        raise ValueError("a request without its header")
    (size,) = HEADER.unpack(data[: HEADER.size])
    body = bytearray(data[HEADER.size :])
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("a request cut short")
        body += chunk
    return json.loads(body), fds


def remove_stale_sockets(folder: str) -> list[str]:
    """Remove the servers' socket files (SOCKETS) in `folder` that no process listens on; return them.

    A file whose connection is refused was left by a server that is gone: a live one accepts (and drops
    a connection that sends no request), one that is starting has not made its file yet."""
    removed = []
    for name in sorted(fnmatch.filter(os.listdir(folder), SOCKETS)):
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):  # gone meanwhile, not ours to remove, or not a socket
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)  # a live server with a full backlog: left alone
                try:
                    probe.connect(path)
                    continue  # a live server
                except ConnectionRefusedError:
                    os.unlink(path)
                    removed.append(path)
    return removed


def serve(path: str, parent: int) -> tuple[dict, list[int]]:
    """Answer requests while `parent` lives; in each forked child, return (request, fds)."""
    started_with = import_time_env(os.environ)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what runtime.configure_tensorflow sets first
    for module in PRELOAD:
        importlib.import_module(module)
    if "grpc" in sys.modules:  # a preloaded library brought it: the search's workers would hang in a fork
        sys.exit("forkserver: gRPC was imported with the preloaded libraries; the tune workers cannot be forked")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the jobs; the server leaves with its parent
    stopped = []  # SIGTERM (the Snakefile's stop_forkserver) ends the loop, so the socket file goes too
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    remove_stale_sockets(os.path.dirname(os.path.abspath(path)))
    # Bound and listening under a private name, then renamed: a socket file at `path` always has a listener
    # while its server lives, so another server's sweep never takes it for a dead one's.
    private = f"{path}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(private)
    listener.bind(private)
    listener.listen(64)
    os.replace(private, path)
    jobs: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the job's connection)
    waiting: dict[socket.socket, int] = {}  # a job's connection -> its child's pid
    while alive(parent) and not stopped:
        readable, _, _ = select.select([listener, *jobs, *waiting], [], [], 1.0)
        for ready in readable:
            if ready is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = read_request(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                if (job_env := import_time_env(request["env"])) != started_with:
                    differ = sorted(set(job_env.items()) ^ set(started_with.items()))
                    print(f"forkserver: {request['argv'][0]} runs on its own: {differ}", file=sys.stderr, flush=True)
                    conn.sendall(b"declined\n")
                    conn.close()
                    for fd in fds:
                        os.close(fd)
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the job: leave the server's sockets behind
                    for sock in (listener, conn, *waiting):
                        sock.close()
                    for pidfd in jobs:
                        os.close(pidfd)
                    return request, fds
                for fd in fds:
                    os.close(fd)
                jobs[os.pidfd_open(pid)] = (pid, conn)
                try:
                    conn.sendall(f"forked\n{pid}\n".encode())
                except OSError:  # the job's process died before it heard of its fork: no one waits for it
                    os.kill(pid, signal.SIGKILL)
                    continue
                waiting[conn] = pid
                print(f"forkserver: {' '.join(request['argv'][:3])}: forked, pid {pid}", file=sys.stderr, flush=True)
            elif ready in waiting:  # the job's process closed its end: it died, so the child goes too
                if not ready.recv(1):
                    os.kill(waiting.pop(ready), signal.SIGKILL)
            else:  # a child ended: tell its job's process how
                pid, conn = jobs.pop(ready)
                os.close(ready)
                _, status = os.waitpid(pid, 0)
                if waiting.pop(conn, None) is not None:
                    with contextlib.suppress(OSError):
                        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()
    for pid in waiting.values():  # the parent (Snakemake) is gone or stopped the server, and so must its jobs be
        os.kill(pid, signal.SIGKILL)
    os.unlink(path)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: tearing down the preloaded TensorFlow, Keras and MLflow took up to 10 s under load
    # (CI), and the server holds nothing that needs it.
    os._exit(0)


def run_job(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job's process (streams, directory, environment), then run it."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # the job runs here; its CLI must not ask the server again
    sys.argv = ["fashion-mlp", *request["argv"]]
    from fashion_mlp.cli import main

    main()  # as the program: it leaves the process when the job is done
