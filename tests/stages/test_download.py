"""Mirror fallback and checksum rejection (fashion_mlp.stages.download) against real loopback HTTP servers."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import random
import socket
import threading
from pathlib import Path

import pytest

from conftest import DEBIAN_DATA, require_debian_data
from fashion_mlp.config import ParamsError
from fashion_mlp.data import RAW_FILES, sha256_gunzipped
from fashion_mlp.io import TMP_MARK
from fashion_mlp.stages.download import DownloadError, download_all, download_file, main, source_url

TIMEOUT = 5.0  # seconds; every server here answers at once, so nothing waits this long


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    """urllib honours *_proxy variables; loopback requests must go straight to our servers."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a handler thread for long

    def log_message(self, format, *args):
        pass


class CountingHandler(QuietHandler):
    """Counts requests per path, so tests can tell which mirror was asked for what."""

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_mirror():
    """Factory: serve a directory on 127.0.0.1:<free port>; returns the base URL. Shut down after the test."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(CountingHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.requests = []
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        start.servers[str(directory)] = server
        return f"http://127.0.0.1:{server.server_address[1]}/"

    start.servers = {}
    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def closed_port_url() -> str:
    """An http URL on a loopback port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/fashion/"


@pytest.fixture
def silent_mirror():
    """A server that accepts connections and never answers; counts the connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/", accepted
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    listener.close()


def gz_bytes(payload: bytes) -> bytes:
    return gzip.compress(payload, mtime=0)


@pytest.fixture
def dataset(tmp_path):
    """Two small synthetic 'archives', their pinned hashes, a good copy and a bad copy of each."""
    payloads = {
        "alpha-idx3-ubyte.gz": bytes(range(256)) * 40,
        "beta-idx1-ubyte.gz": b"\x00\x00\x08\x01" + random.Random(0).randbytes(300),
    }
    files = {name: hashlib.sha256(p).hexdigest() for name, p in payloads.items()}
    good = tmp_path / "good"
    mismatched = tmp_path / "mismatched"  # valid gzip, wrong content
    garbage = tmp_path / "garbage"  # not gzip at all
    for d in (good, mismatched, garbage):
        d.mkdir()
    for name, payload in payloads.items():
        (good / name).write_bytes(gz_bytes(payload))
        # the last byte flipped: a copy that ends in "!" already would pass as good (1 run in 256)
        (mismatched / name).write_bytes(gz_bytes(payload[:-1] + bytes([payload[-1] ^ 0xFF])))
        (garbage / name).write_bytes(b"<html>404 but with status 200</html>")
    out = tmp_path / "out"
    return {
        "payloads": payloads,
        "files": files,
        "good": good,
        "mismatched": mismatched,
        "garbage": garbage,
        "out": out,
    }


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(f".*{TMP_MARK}*")) if directory.exists() else []


def assert_verified(out: Path, dataset: dict) -> None:
    for name, payload in dataset["payloads"].items():
        assert gzip.decompress((out / name).read_bytes()) == payload
    assert sorted(p.name for p in out.iterdir()) == sorted(dataset["files"])
    assert temporaries(out) == []


# --- mirror fallback -------------------------------------------------------------------


def test_mismatched_http_mirror_falls_back_to_second_http_mirror(dataset, http_mirror, capsys):
    bad_url = http_mirror(dataset["mismatched"])
    good_url = http_mirror(dataset["good"])
    sources = download_all([bad_url, good_url], dataset["out"], TIMEOUT, files=dataset["files"])

    assert sources == {name: good_url + name for name in dataset["files"]}
    assert_verified(dataset["out"], dataset)
    # mirror 1 really was asked for each file (and rejected on checksum), mirror 2 served them
    assert sorted(http_mirror.servers[str(dataset["mismatched"])].requests) == sorted("/" + n for n in dataset["files"])
    assert sorted(http_mirror.servers[str(dataset["good"])].requests) == sorted("/" + n for n in dataset["files"])
    assert "SHA-256" in capsys.readouterr().err


def test_garbage_http_mirror_falls_back_to_file_url(dataset, http_mirror):
    bad_url = http_mirror(dataset["garbage"])
    file_url = dataset["good"].as_uri() + "/"
    sources = download_all([bad_url, file_url], dataset["out"], TIMEOUT, files=dataset["files"])
    assert all(url.startswith("file://") for url in sources.values())
    assert_verified(dataset["out"], dataset)


def test_unreachable_mirror_then_plain_directory(dataset, closed_port_url):
    dead: dict[str, str] = {}
    out = dataset["out"]
    out.mkdir()
    first, second = dataset["files"]
    url = download_file(first, dataset["files"][first], [closed_port_url, str(dataset["good"])], out, TIMEOUT, dead)
    assert url == (dataset["good"] / first).as_uri()
    assert closed_port_url in dead and "unreachable" in dead[closed_port_url]

    sources = download_all([closed_port_url, str(dataset["good"])], out, TIMEOUT, files=dataset["files"])
    assert sources[first] == "(already present and verified)"
    assert sources[second] == (dataset["good"] / second).as_uri()
    assert_verified(out, dataset)


def test_silent_mirror_costs_one_timeout_not_one_per_file(dataset, silent_mirror):
    silent_url, connections = silent_mirror
    sources = download_all([silent_url, str(dataset["good"])], dataset["out"], 0.5, files=dataset["files"])
    assert all(url.startswith("file://") for url in sources.values())
    assert len(connections) == 1  # the second file skipped the host that timed out
    assert_verified(dataset["out"], dataset)


def test_all_mirrors_fail_lists_every_mirror_and_reason(dataset, http_mirror, closed_port_url, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    not_found_url = http_mirror(empty)  # HTTP 404
    mismatched_url = http_mirror(dataset["mismatched"])  # checksum mismatch
    missing_dir = tmp_path / "no-such-dir"  # plain directory that does not exist
    missing_file_url = (tmp_path / "also-missing").as_uri()
    mirrors = [closed_port_url, not_found_url, mismatched_url, str(missing_dir), missing_file_url]

    with pytest.raises(DownloadError) as info:
        download_all(mirrors, dataset["out"], TIMEOUT, files=dataset["files"])
    message = str(info.value)
    first = next(iter(dataset["files"]))
    assert first in message
    for mirror in mirrors:
        assert mirror.rstrip("/") in message
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == len(mirrors)  # one line, with its reason, per mirror
    assert "unreachable" in lines[0]
    assert "HTTP 404" in lines[1]
    assert "SHA-256" in lines[2] and dataset["files"][first] in lines[2]
    assert "file not found" in lines[3] and "file not found" in lines[4]
    assert temporaries(dataset["out"]) == []
    assert not (dataset["out"] / first).exists()


def test_existing_good_file_survives_when_another_file_fails(dataset, http_mirror):
    out = dataset["out"]
    out.mkdir()
    first, second = dataset["files"]
    original = (dataset["good"] / first).read_bytes()
    (out / first).write_bytes(original)
    mismatched_url = http_mirror(dataset["mismatched"])

    with pytest.raises(DownloadError) as info:
        download_all([mismatched_url], out, TIMEOUT, files=dataset["files"])
    assert second in str(info.value)
    assert (out / first).read_bytes() == original
    assert not (out / second).exists()
    assert temporaries(out) == []
    # the verified file was not fetched again
    assert http_mirror.servers[str(dataset["mismatched"])].requests == ["/" + second]


def test_existing_file_survives_when_all_mirrors_fail_for_it(dataset, http_mirror):
    """A failed re-download never truncates or replaces what is already in place."""
    out = dataset["out"]
    out.mkdir()
    first = next(iter(dataset["files"]))
    stale = gz_bytes(b"an older copy")
    (out / first).write_bytes(stale)
    with pytest.raises(DownloadError):
        download_all([http_mirror(dataset["mismatched"])], out, TIMEOUT, files={first: dataset["files"][first]})
    assert (out / first).read_bytes() == stale
    assert temporaries(out) == []


def test_corrupt_leftover_is_replaced_and_stale_temporaries_removed(dataset):
    out = dataset["out"]
    out.mkdir()
    first = next(iter(dataset["files"]))
    (out / first).write_bytes(b"half a download")
    stale_tmp = out / f".{Path(first).stem}{TMP_MARK}abc123.gz"
    stale_tmp.write_bytes(b"left by a killed run")
    sources = download_all([str(dataset["good"])], out, TIMEOUT, files=dataset["files"])
    assert sources[first].startswith("file://")
    assert_verified(out, dataset)


def test_source_url_forms(tmp_path, monkeypatch):
    assert source_url("http://h/x/", "f.gz") == "http://h/x/f.gz"
    assert source_url("https://h/x", "f.gz") == "https://h/x/f.gz"
    assert source_url("file:///srv/m/", "f.gz") == "file:///srv/m/f.gz"
    assert source_url(str(tmp_path), "f.gz") == (tmp_path / "f.gz").as_uri()
    monkeypatch.chdir(tmp_path)
    assert source_url("rel", "f.gz") == (tmp_path.resolve() / "rel" / "f.gz").as_uri()


def test_main_validates_data_section(tmp_path):
    with pytest.raises(ParamsError, match="timeout"):
        main(["--mirrors", str(tmp_path), "--timeout", "0", "--out_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --- the real pinned checksums -----------------------------------------------------------


def test_pinned_hashes_match_debian_files():
    require_debian_data()
    assert sorted(RAW_FILES) == sorted(p.name for p in DEBIAN_DATA.glob("*.gz"))
    for name, sha256 in RAW_FILES.items():
        assert sha256_gunzipped(DEBIAN_DATA / name) == sha256, name


def test_download_all_from_debian_directory_with_pinned_hashes(tmp_path, closed_port_url):
    require_debian_data()
    out = tmp_path / "raw"
    sources = download_all([closed_port_url, str(DEBIAN_DATA)], out, TIMEOUT)
    assert sources == {name: (DEBIAN_DATA / name).as_uri() for name in RAW_FILES}
    assert sorted(p.name for p in out.iterdir()) == sorted(RAW_FILES)
