"""Nothing unsafe is loaded, nothing is served beyond this machine.

Every `load_model` runs in Keras' safe mode and every `np.load` refuses pickles (read from the pipeline's
code, so a new call is checked too); the real `make ui` answers on 127.0.0.1 and on no other address.
test_serve.py checks `make serve` with the same helpers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, IN_CI, REPO, clean_env

TIMEOUT = 120


SOURCES = sorted(
    [*(REPO / "workflow/fashion_mlp").rglob("*.py"), *(REPO / "workflow/rules").glob("*.smk"), REPO / "Snakefile"]
)


def calls(name: str) -> list[tuple[Path, str]]:
    """Every call of `name(` in the pipeline's code, with its arguments (up to the closing line)."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        for match in re.finditer(rf"\b{re.escape(name)}\(", text):
            found.append((path, text[match.start() : text.find(")", match.end()) + 1]))
    return found


def test_models_load_only_in_safe_mode():
    loads = calls("load_model")
    assert loads, "no load_model call found: the check would prove nothing"
    for path, call in loads:
        assert "safe_mode=True" in call, f"{path.name}: {call}"


def test_npz_files_load_without_pickles():
    """np.load refuses pickles only when told; data.read_aligned reads no pickle at all (test_data.py
    refuses an object array through it)."""
    loads = calls("np.load") + calls("numpy.load")
    assert loads, "no np.load call found: the check would prove nothing"
    for path, call in loads:
        assert "allow_pickle=False" in call, f"{path.name}: {call}"


def other_addresses() -> list[str]:
    """This machine's addresses other than 127.0.0.1: 127.0.0.2 (Linux routes all of 127/8 to lo, and a socket
    bound to 127.0.0.1 refuses it) and the addresses of the default IPv4 and IPv6 routes' interfaces, if any."""
    found = ["127.0.0.2"]
    for family, somewhere in ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8::1")):  # documentation
        with socket.socket(family, socket.SOCK_DGRAM) as sock:  # a UDP connect sends nothing: it picks a route
            try:
                sock.connect((somewhere, 9))
            except OSError:
                continue  # no route of that family
            address = sock.getsockname()[0]
            if address not in ("127.0.0.1", "::1"):
                found.append(address)
    return found


def assert_refused_elsewhere(port: int) -> None:
    """Nothing but 127.0.0.1 takes connections on `port`: every other address of the machine refuses them."""
    for address in other_addresses():
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as sock:
            sock.settimeout(10)
            try:
                sock.connect((address, port))
            except ConnectionRefusedError:
                continue
            raise AssertionError(f"{address}:{port} took a connection: the server listens beyond 127.0.0.1")


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to a process started with start_new_session=True and its whole group, then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent (uvicorn's workers)
    process.wait(timeout=20)


@contextlib.contextmanager
def make_target(command: list[str], cwd: Path, env: dict, url: str):
    """A make target that starts a server (make serve, make ui), in a session of its own, once `url` answers
    200: yields its output so far (a function). Fails with that output if it exits or takes over TIMEOUT
    (which only catches a server that never comes up); stops the whole process group at the end."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        try:
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        assert response.status == 200
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):  # TimeoutError: up, not yet answering
                    if process.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"{' '.join(command)} did not start:\n{output()[-4000:]}")
                    time.sleep(0.5)
            yield output
        finally:
            stop_group(process)


UI_PORT = 5000  # make ui's, fixed in the Makefile


def port_taken(port: int) -> bool:
    """Whether any socket listens on `port`, on any address (SO_REUSEADDR: connections left in TIME_WAIT do not
    count, a listener does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
        return False


@pytest.mark.slow
def test_make_ui_answers_on_127_0_0_1_and_on_no_other_address(tmp_path):
    """The real `make ui`, from a directory of its own (-f: $(CURDIR)/mlflow.db is then a new store there, not
    the checkout's; -o install: the virtualenv running the tests); stopped by its process group. MLFLOW_WORKERS=1,
    mlflow's own setting, starts one uvicorn worker instead of 4 (7 s instead of 15 on 2 cores); the address it
    binds is the Makefile's --host either way."""
    if port_taken(UI_PORT):  # by something else: a probe of it would prove nothing about make ui
        reason = f"port {UI_PORT}, make ui's, is taken by another process"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: nothing else may listen there)")
        pytest.skip(reason)
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")  # the target reads the experiment's name
    venv = os.path.relpath(BIN.parent, tmp_path)
    command = ["make", "-f", str(REPO / "Makefile"), "-o", "install", "ui", f"VENV={venv}"]
    url = f"http://127.0.0.1:{UI_PORT}/health"
    with make_target(command, tmp_path, clean_env(MLFLOW_WORKERS="1"), url) as output:
        assert (tmp_path / "mlflow.db").is_file(), "make ui opened another store than $(CURDIR)/mlflow.db"
        assert_refused_elsewhere(UI_PORT)
        assert "The runs: none yet (make run first)" in output(), output()[-4000:]  # the target's first line ran
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):  # nothing of make ui outlived its group
        sock.connect(("127.0.0.1", UI_PORT))
