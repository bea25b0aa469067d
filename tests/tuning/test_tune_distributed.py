"""tuning/distributed.py's pure parts: the chief-file handshake and the chief's watch on its workers.

No chief or worker is started here (test_tune_distributed_e2e.py runs them): the files they
exchange are written by hand, with this process standing in for a live one.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fashion_mlp import PipelineError, tracking
from fashion_mlp.tuning.distributed import WorkerWatch, read_chief_file


def alive() -> dict:
    return tracking.process_tags()


def dead() -> dict:
    """The tags of a process that is gone: this pid, started at another time (a reused pid)."""
    return tracking.process_tags() | {"pid_started": "1.00"}


def write(path, obj) -> None:
    path.write_text(json.dumps(obj))


def test_a_worker_reads_the_address_once_the_chief_serves(tmp_path):
    path = tmp_path / "chief.json"
    address = {"host": "127.0.0.1", "port": 1234, "parent_run_id": "r", "tuner_dir": "t"} | alive()
    write(path, address)
    assert read_chief_file(path, wants_search=False, timeout=5) == address


def test_a_finished_search_is_read_whatever_the_chief_has_become(tmp_path):
    path = tmp_path / "chief.json"
    write(path, {"host": "127.0.0.1", "port": 1234, "search": {"trials": []}} | dead())
    assert read_chief_file(path, wants_search=False, timeout=5)["search"] == {"trials": []}
    assert read_chief_file(path, wants_search=True, timeout=5)["search"] == {"trials": []}


@pytest.mark.parametrize(
    "content, wants_search, message",
    [
        (None, False, r"no tuning chief published its address in .*chief\.json within 1 s"),
        ({"starting": True}, False, "no tuning chief published its address"),  # still starting
        ({"host": "127.0.0.1", "port": 1}, True, "no tuning chief published its result"),  # still searching
    ],
)
def test_a_chief_that_never_publishes_times_out_naming_the_file(tmp_path, content, wants_search, message):
    path = tmp_path / "chief.json"
    if content is not None:
        write(path, content | alive())
    with pytest.raises(PipelineError, match=message):
        read_chief_file(path, wants_search=wants_search, timeout=1)


@pytest.mark.parametrize(
    "content, wants_search, what",
    [
        ({"starting": True}, False, "its address"),
        ({"host": "127.0.0.1", "port": 1}, False, "its address"),  # a dead chief's address serves no worker
        ({"host": "127.0.0.1", "port": 1}, True, "the result"),
    ],
)
def test_a_dead_chief_fails_the_worker_at_once(tmp_path, content, wants_search, what):
    path = tmp_path / "chief.json"
    write(path, content | dead())
    with pytest.raises(PipelineError, match=f"the tuning chief \\(pid \\d+\\) ended before publishing {what}"):
        read_chief_file(path, wants_search=wants_search, timeout=30)


def test_the_chief_fails_when_a_searching_worker_is_gone(tmp_path):
    write(tmp_path / "process-worker0.json", alive())
    write(tmp_path / "process-worker1.json", dead())
    watch = WorkerWatch(tmp_path, SimpleNamespace(tuner_ids={"worker0", "worker1"}))
    with pytest.raises(PipelineError, match=r"tuning worker1 \(pid \d+\) died before the search ended"):
        watch.check()


def test_a_worker_the_oracle_has_stopped_may_exit(tmp_path):
    write(tmp_path / "process-worker0.json", alive())
    write(tmp_path / "process-worker1.json", dead())
    oracle = SimpleNamespace(tuner_ids={"worker0", "worker1"})
    watch = WorkerWatch(tmp_path, oracle)
    watch.connected |= oracle.tuner_ids  # both were seen searching
    oracle.tuner_ids = {"worker0"}  # the oracle forgets a worker once it has told it to stop
    watch.check()  # so worker1's exit is no failure


def test_a_chief_that_publishes_then_ends_between_two_looks_is_read(tmp_path, monkeypatch):
    """The worker read the file without the result; the chief then wrote it and ended before the worker
    looked at its pid (seen in the test suite: the worker failed a finished search)."""
    from fashion_mlp.tuning import distributed

    path = tmp_path / "chief.json"
    address = {"host": "127.0.0.1", "port": 1} | dead()
    write(path, address)

    def published_then_gone(pid, started):
        write(path, address | {"search": {"trials": []}})
        return False

    monkeypatch.setattr(distributed.tracking, "process_alive", published_then_gone)
    assert read_chief_file(path, wants_search=True, timeout=30)["search"] == {"trials": []}
