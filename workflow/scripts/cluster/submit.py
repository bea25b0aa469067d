#!/usr/bin/env python3
"""Submit one Snakemake job to a one-node "cluster": this machine, as a detached process.

The cluster-generic profile calls `submit.py [--threads N] [--mem_mb M] JOBSCRIPT`
and reads the job id from stdout. Like a batch system, it starts the job in a
new session, in another working directory (/), with a login-like environment
(PATH, HOME, LANG), so the job relies on nothing held by the Snakemake process
that submitted it. Job state lives in .snakemake/cluster-jobs/<id>/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

JOBS = Path(__file__).resolve().parents[3] / ".snakemake" / "cluster-jobs"
KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "TMPDIR", "TZ")
# In the job's new session, before the job starts: the submitter's niceness ($3, see
# submitter_niceness). The job's exit status goes to `exit` atomically, so status.py never reads half of it.
WRAPPER = (
    '[ "$3" -gt 0 ] && { echo "$3" > /proc/self/autogroup; } 2>/dev/null; '
    'bash "$1"; code=$?; echo $code > "$2.tmp" && mv "$2.tmp" "$2"'
)


def submitter_niceness() -> int:
    """The niceness of the submitter's session, which the job's session takes, as a batch queue's
    priority would carry over; 0 without autogroups.

    With the kernel's autogroups, niceness counts within a session, and a new session starts at 0, so
    a detached job would otherwise outrank everything its submitter was niced below."""
    try:
        return max(0, int(Path("/proc/self/autogroup").read_text().split()[-1]))
    except (OSError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="the rule's threads (recorded)")
    parser.add_argument("--mem_mb", type=int, default=None, help="the rule's resources.mem_mb (recorded)")
    parser.add_argument("jobscript", type=Path)
    args = parser.parse_args()

    job_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    folder = JOBS / job_id
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k in KEEP}
    niceness = str(submitter_niceness())
    with open(folder / "output.log", "wb") as log:
        process = subprocess.Popen(
            ["bash", "-c", WRAPPER, "job", str(args.jobscript.resolve()), str(folder / "exit"), niceness],
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    (folder / "job.json").write_text(
        json.dumps(
            {
                "pid": process.pid,
                "jobscript": str(args.jobscript),
                "threads": args.threads,
                "mem_mb": args.mem_mb,
                "env": sorted(env),
            }
        )
    )
    print(job_id)


if __name__ == "__main__":
    main()
