#!/usr/bin/env python3
"""`cancel.py JOB_ID...`: stop jobs of submit.py (each runs in its own session)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

JOBS = Path(__file__).resolve().parents[3] / ".snakemake" / "cluster-jobs"

for job_id in sys.argv[1:]:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        os.killpg(json.loads((JOBS / job_id / "job.json").read_text())["pid"], signal.SIGTERM)
