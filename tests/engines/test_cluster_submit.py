"""workflow/scripts/cluster/submit.py: a job starts detached, in its own session, with the submitter's niceness."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO


def autogroups_can_be_niced() -> bool:
    """The kernel has autogroups (CONFIG_SCHED_AUTOGROUP) and a new session may raise its niceness."""
    if not Path("/proc/self/autogroup").exists():
        return False
    probe = subprocess.run(["sh", "-c", "echo 1 > /proc/self/autogroup"], capture_output=True, start_new_session=True)
    return probe.returncode == 0


@pytest.mark.skipif(not autogroups_can_be_niced(), reason="no autogroups to nice here: niceness then needs no help")
def test_a_detached_job_keeps_the_niceness_of_the_session_that_submitted_it(tmp_path):
    script = tmp_path / "workflow/scripts/cluster/submit.py"  # its jobs go to <tmp_path>/.snakemake/cluster-jobs
    script.parent.mkdir(parents=True)
    shutil.copy2(REPO / "workflow/scripts/cluster/submit.py", script)
    seen = tmp_path / "seen"
    jobscript = tmp_path / "job.sh"
    jobscript.write_text(f"cat /proc/self/autogroup > {seen}; ps -o sid= -p $$ >> {seen}\n")
    # A new session at niceness 7 submits, as a niced Snakemake run does.
    submitted = subprocess.run(
        ["sh", "-c", 'echo 7 > /proc/self/autogroup && exec "$@"', "sh", sys.executable, str(script), str(jobscript)],
        capture_output=True,
        text=True,
        check=True,
        start_new_session=True,
    )
    folder = tmp_path / ".snakemake/cluster-jobs" / submitted.stdout.strip()
    deadline = time.monotonic() + 30
    while not (folder / "exit").exists():
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)
    assert (folder / "exit").read_text().strip() == "0"
    autogroup, sid = seen.read_text().split("\n")[:2]
    assert autogroup.endswith(" nice 7"), autogroup
    assert int(sid) == json.loads((folder / "job.json").read_text())["pid"], "the job leads a session of its own"
