"""Artifacts off-machine: a DVC remote over SSH, against a loopback sshd that the test starts.

A fresh smoke copy of the repository reproduces only `download` and `prepare` (real
Fashion-MNIST files and the prepared arrays, seconds, no TensorFlow), pushes them to an
`ssh://` remote, checks that the remote directory now holds every file under its MD5, throws
the cache and the outputs away and pulls them back: byte for byte what was pushed.

The sshd is the test's own: a free loopback port, a host key and a client key made for the
test, `AuthorizedKeysFile` in the temporary directory, stopped however the test ends. DVC runs
with HOME set to an empty temporary directory: asyncssh, under dvc-ssh, reads ~/.ssh/config
and falls back to the keys in ~/.ssh, so the user's real ~/.ssh is never read or written and
only the test's key is offered. No known_hosts file is written, because none would be read:
sshfs connects with `known_hosts=None` unless told otherwise and dvc-ssh has no option to tell
it, so DVC does not check an SSH remote's host key at all (a wrong one was tried; the push
still succeeded).

CI (CI=true) installs openssh-server in .ci/run, so there a missing sshd is a failure; on a
workstation without it the test skips and says what to install.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import engine_env, free_ports, missing_service, run, smoke_copy
from fashion_mlp.io import sha256_file

pytestmark = pytest.mark.e2e

STAGES = ("download", "prepare")  # the stages reproduced and shipped: real artifacts, no training


def unavailable(reason: str) -> None:
    missing_service(reason, "apt-get install openssh-server openssh-client")


@dataclass
class Sshd:
    port: int
    user: str
    keyfile: Path  # the client's private key, authorized by this sshd only
    fingerprint: str  # SHA256:... of the client key, as sshd logs it
    home: Path  # HOME for the DVC client: an empty .ssh, so no ~/.ssh/config or key of the user
    log: Path  # sshd's stderr (-e): connections and authentications

    def accepted_logins(self) -> int:
        """How many times sshd let the test's client key in, as its log says."""
        pattern = (
            rf"Accepted publickey for {re.escape(self.user)} from 127\.0\.0\.1 port \d+ ssh2: "
            rf"\S+ {re.escape(self.fingerprint)}"
        )
        return len(re.findall(pattern, self.log.read_text(errors="replace")))


def keygen(ssh_keygen: str, path: Path) -> str:
    """A new passphrase-less ed25519 key pair at `path` and `path`.pub; returns its SHA256 fingerprint."""
    subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    listed = subprocess.run(
        [ssh_keygen, "-l", "-E", "sha256", "-f", f"{path}.pub"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    return listed.split()[1]


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowAgentForwarding no
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def start_sshd(sshd: str, config: Path, log: Path, port: int) -> subprocess.Popen | None:
    """Start sshd in the foreground; its process once it listens, None if the port was taken meanwhile."""
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 20
    while time.time() < deadline:
        text = log.read_text(errors="replace")
        if f"Server listening on 127.0.0.1 port {port}" in text:
            return process
        if process.poll() is not None:
            if "Address already in use" in text:
                return None
            raise AssertionError(f"sshd exited ({process.returncode}) before listening:\n{text[-3000:]}")
        time.sleep(0.05)
    stop(process)
    raise AssertionError(f"sshd did not listen within 20 s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop the sshd this test started (its own process group), however the test ended."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    server = shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
    )
    ssh_keygen = shutil.which("ssh-keygen")
    if server is None:
        unavailable("no sshd (Debian: openssh-server)")
    if ssh_keygen is None:
        unavailable("no ssh-keygen (Debian: openssh-client)")
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # sshd running as root wants its privilege-separation directory (systemd makes it at boot).
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as error:
            unavailable(f"cannot create sshd's privilege-separation directory /run/sshd: {error}")

    directory = tmp_path_factory.mktemp("sshd")
    user = getpass.getuser()
    keygen(ssh_keygen, directory / "host_key")
    fingerprint = keygen(ssh_keygen, directory / "client_key")
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    home = directory / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    config, log = directory / "sshd_config", directory / "sshd.log"

    process = None
    for _ in range(5):  # the free port may be taken between finding it and sshd's bind: try another
        port = free_ports()[0]
        config.write_text(SSHD_CONFIG.format(port=port, dir=directory, user=user))
        checked = subprocess.run([server, "-t", "-f", str(config)], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, f"sshd -t rejects its config:\n{checked.stdout}{checked.stderr}"
        process = start_sshd(server, config, log, port)
        if process is not None:
            break
    assert process is not None, "no free loopback port for sshd after 5 tries"
    try:
        yield Sshd(port=port, user=user, keyfile=directory / "client_key", fingerprint=fingerprint, home=home, log=log)
    finally:
        stop(process)


def ssh_env(server: Sshd) -> dict[str, str]:
    """The engines' environment with HOME pointing at the test's .ssh, and no agent to offer other keys."""
    env = engine_env()
    env["HOME"] = str(server.home)
    env.pop("SSH_AUTH_SOCK", None)
    env.pop("XDG_CONFIG_HOME", None)  # DVC's global and system configs stay out of it too
    return env


def dvc(server: Sshd, repo: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["dvc", *args]
    result = subprocess.run(cmd, cwd=repo, env=ssh_env(server), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode})\n--- stdout\n{result.stdout[-6000:]}\n"
            f"--- stderr\n{result.stderr[-6000:]}\n--- sshd log\n"
            f"{server.log.read_text(errors='replace')[-3000:]}"
        )
    return result


def locked_outputs(repo: Path) -> dict[str, tuple[str, int]]:
    """{path: (md5, size)} of every output of STAGES, as dvc.lock records them."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: (out["md5"], out["size"]) for stage in STAGES for out in lock["stages"][stage]["outs"]}


def remote_files(remote: Path) -> dict[str, tuple[str, int]]:
    """{md5 the remote files it under: (md5 of its content, size)} for every file in the remote directory."""
    found = {}
    for path in sorted(p for p in remote.rglob("*") if p.is_file()):
        relative = path.relative_to(remote).parts
        assert relative[:2] == ("files", "md5") and len(relative) == 4, f"unexpected file on the remote: {path}"
        data = path.read_bytes()
        found[relative[2] + relative[3]] = (hashlib.md5(data).hexdigest(), len(data))
    return found


def test_dvc_ssh_remote_push_then_pull_gives_back_identical_files(sshd: Sshd, tmp_path: Path) -> None:
    repo = smoke_copy(tmp_path / "repo")
    run(["dvc", "repro", *STAGES], repo)
    outputs = locked_outputs(repo)
    assert len(outputs) == 7, outputs  # four raw .gz files, train.npz, test.npz, data_stats.json
    before = {path: sha256_file(repo / path) for path in outputs}

    remote = tmp_path / "remote"  # what the SSH server serves, looked at here straight on disk
    remote.mkdir()
    dvc(sshd, repo, "remote", "add", "--default", "store", f"ssh://127.0.0.1:{sshd.port}{remote}")
    dvc(sshd, repo, "remote", "modify", "--local", "store", "user", sshd.user)
    dvc(sshd, repo, "remote", "modify", "--local", "store", "keyfile", str(sshd.keyfile))
    assert "keyfile" not in (repo / ".dvc/config").read_text(), "the key's path stays in config.local, out of git"

    assert sshd.accepted_logins() == 0
    pushed = dvc(sshd, repo, "push", "-r", "store", *STAGES)
    assert "7 files pushed" in pushed.stdout + pushed.stderr, pushed.stdout + pushed.stderr
    logins_after_push = sshd.accepted_logins()
    assert logins_after_push >= 1, "the push logged in to the test's sshd with the test's key"
    on_remote = remote_files(remote)
    assert on_remote == {md5: (md5, size) for md5, size in outputs.values()}, (
        "the remote holds every output, under its MD5, content intact, and nothing else"
    )

    shutil.rmtree(repo / ".dvc/cache")
    for path in outputs:
        (repo / path).unlink()
    assert json.loads(dvc(sshd, repo, "status", "--json", *STAGES).stdout), "DVC sees the outputs missing"
    pulled = dvc(sshd, repo, "pull", "-r", "store", *STAGES)
    assert "7 files added" in pulled.stdout + pulled.stderr, pulled.stdout + pulled.stderr
    assert sshd.accepted_logins() > logins_after_push, "the pull came over SSH too"

    assert {path: sha256_file(repo / path) for path in outputs} == before, "every artifact is back, byte for byte"
    assert json.loads(dvc(sshd, repo, "status", "--json", *STAGES).stdout) == {}
    assert json.loads(dvc(sshd, repo, "status", "--cloud", "-r", "store", "--json", *STAGES).stdout) == {}
    assert remote_files(remote) == on_remote, "the pull left the remote as it was"
