#!/usr/bin/env python3
"""`status.py JOB_ID`: print running, success or failed for a job of submit.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

JOBS = Path(__file__).resolve().parents[3] / ".snakemake" / "cluster-jobs"


def status(job_id: str) -> str:
    folder = JOBS / job_id
    exit_file = folder / "exit"
    if exit_file.exists():
        return "success" if exit_file.read_text().strip() == "0" else "failed"
    try:
        os.kill(json.loads((folder / "job.json").read_text())["pid"], 0)
    except (FileNotFoundError, ProcessLookupError):
        # The wrapper writes `exit` before it ends; gone without one means killed.
        return "success" if exit_file.exists() and exit_file.read_text().strip() == "0" else "failed"
    return "running"


if __name__ == "__main__":
    print(status(sys.argv[1]))
