"""Whole-run benchmark (issue 27): two commits, back to back, `snakemake --cores 2 --forceall` in a fresh clone of each.

    python benchmarks/pipeline.py                          # a1b167b against HEAD, three runs each, alternating
    python benchmarks/pipeline.py --old A --new B --repeats 1 --json out.json
    python benchmarks/pipeline.py --new_targets register demos ...  # the new commit on the old one's targets

Each clone is made once (`git clone` of this repository, then the commit checked out) and runs with
this virtualenv's tools; its data comes from the first mirror of its params.yaml that answers
(Debian's copy offline). A run is timed here, around the Snakemake process, while a thread reads
/proc/stat every second (every process's CPU: run it on a quiet machine). After each run, a
no-op rerun (`snakemake --cores 2`) is timed too.

It prints each run's wall time, busy cores and largest job (peak RSS from Snakemake's benchmark
files, or from the profile's job records where the commit writes them), the medians and the
ratio new/old, and the goals: wall time <= 0.7x, cores >= 90 % busy, no job above 2 GB, no-op
rerun <= 5 s, a training's fixed cost <= 3 s (median; profile records only). Jobs of the new
commit that the old one does not have (their benchmark file is new) are listed apart, with their
own wall time, so a goal set for the old commit's jobs can be read against its own work (a search
worker more is the search's time spread wider, not new work, and is not listed). `--new_targets`
runs the new commit on the given targets only (both the forced run and the no-op), to time it on
the old commit's work where the new one's `all` has more.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "workflow"))
from fashion_mlp.profiling import draw, sampler  # noqa: E402

SEARCH_JOBS = "tune/"  # the search's benchmark files (tune/worker<i>.tsv, tune/finish.tsv)
GOALS = {"wall_ratio": 0.7, "busy": 0.9, "rss_mb": 2048, "noop_seconds": 5.0, "fixed_seconds": 3.0}


def clean_env() -> dict[str, str]:
    """This virtualenv's tools, none of the caller's engine, tracking or thread settings."""
    prefixes = ("MLFLOW_", "DVC_", "FASHION_MLP_", "SNAKEMAKE_", "OMP_", "TF_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def clone(commit: str, dest: Path) -> tuple[Path, str]:
    """A fresh clone of this repository at `commit`, and the commit's short hash."""
    subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", commit], check=True)
    short = subprocess.run(["git", "-C", str(dest), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return dest, short.stdout.strip()


def benchmark_rows(repo: Path) -> dict[str, dict]:
    """Each job's last row of its Snakemake benchmark file, by the file's path under benchmarks/stages/."""
    out = {}
    for path in sorted((repo / "benchmarks/stages").rglob("*.tsv")):
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            out[str(path.relative_to(repo / "benchmarks/stages"))] = rows[-1]
    return out


def profile_records(repo: Path) -> list[dict]:
    """The newest run's job records (fashion_mlp/profiling), if the commit writes them."""
    run = sampler.newest_run(repo / "reports/timings/runs")
    return [json.loads(p.read_text()) for p in sampler.job_records(run)] if run else []


def timed_run(repo: Path, env: dict, args: list[str]) -> tuple[float, list[float]]:
    """Wall seconds of `snakemake <args>` and the machine's busy cores, sampled every second."""
    stop, samples = threading.Event(), repo.parent / f"{repo.name}-machine.tsv"  # not in the clone: git status
    samples.unlink(missing_ok=True)
    thread = threading.Thread(target=sampler.sample, args=(samples, stop), daemon=True)
    thread.start()
    started = time.perf_counter()
    # The clone's own package first: this virtualenv's editable install points at this checkout.
    env = env | {"PYTHONPATH": str(repo / "workflow")}
    result = subprocess.run(["snakemake", *args], cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    if result.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed in {repo}:\n{result.stderr[-3000:]}")
    busy = [float(line.split("\t")[1]) for line in samples.read_text().splitlines() if not line.startswith("#")]
    return seconds, busy


def one_run(label: str, repo: Path, env: dict, targets: list[str]) -> dict:
    seconds, busy = timed_run(repo, env, ["--cores", "2", "--forceall", *targets])
    noop, _ = timed_run(repo, env, ["--cores", "2", *targets])
    records, rows = profile_records(repo), benchmark_rows(repo)
    # The records' RSS is the process's own (getrusage); Snakemake's max_rss is in MiB.
    rss = {f"{r['command']} {r['label']}".strip(): r["max_rss_mb"] for r in records} or {
        job: round(float(row["max_rss"]) * 1.048576, 1) for job, row in rows.items()
    }
    fixed = [f for r in records if (f := draw.fixed_seconds(dict(r["marks"]), r["wall_seconds"])) is not None]
    cores = os.cpu_count() or 1
    run = {
        "commit": label,
        "seconds": round(seconds, 1),
        "busy": round(statistics.fmean(busy) / cores, 3) if busy else None,
        "max_rss_mb": max(rss.values()),
        "largest_job": max(rss, key=rss.get),
        "noop_seconds": round(noop, 1),
        "fixed_seconds_median": round(statistics.median(fixed), 2) if fixed else None,
        "jobs": {job: float(row["s"]) for job, row in rows.items()},
    }
    print(
        f"{label}: {run['seconds']:.1f} s, cores {run['busy']:.0%} busy, largest job {run['largest_job']} "
        f"{run['max_rss_mb']:.0f} MB, no-op {run['noop_seconds']:.1f} s"
        + (f", fixed cost median {run['fixed_seconds_median']:.2f} s" if fixed else ""),
        flush=True,
    )
    return run


def summary(runs: dict[str, list[dict]]) -> str:
    old, new = runs["old"], runs["new"]

    def med(rs, key):
        values = [r[key] for r in rs if r[key] is not None]
        return statistics.median(values) if values else None

    ratio = med(new, "seconds") / med(old, "seconds")
    # A search worker more is the search's own time spread wider, not new work: left out here.
    new_jobs = sorted(j for j in set(new[0]["jobs"]) - set(old[0]["jobs"]) if not j.startswith(SEARCH_JOBS))
    own = statistics.median(sum(r["jobs"][j] for j in new_jobs) for r in new) if new_jobs else 0.0
    lines = [
        f"old {old[0]['commit']}: median {med(old, 'seconds'):.1f} s over {len(old)} runs",
        f"new {new[0]['commit']}: median {med(new, 'seconds'):.1f} s over {len(new)} runs",
        f"wall time new/old: {ratio:.2f} (goal <= {GOALS['wall_ratio']})",
        f"busy cores, new: {med(new, 'busy'):.0%} (goal >= {GOALS['busy']:.0%}); old: {med(old, 'busy'):.0%}",
        f"largest job, new: {max(r['max_rss_mb'] for r in new):.0f} MB (goal <= {GOALS['rss_mb']})",
        f"no-op rerun, new: {med(new, 'noop_seconds'):.1f} s (goal <= {GOALS['noop_seconds']}); "
        f"old: {med(old, 'noop_seconds'):.1f} s",
    ]
    if med(new, "fixed_seconds_median") is not None:
        lines.append(
            f"a training's fixed cost, new: median {med(new, 'fixed_seconds_median'):.2f} s "
            f"(goal <= {GOALS['fixed_seconds']})"
        )
    if new_jobs:
        lines.append(
            f"jobs the old commit lacks ({len(new_jobs)}: {', '.join(new_jobs)}): "
            f"{own:.1f} s of job time (median over runs; they run beside others)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="a1b167b", help="the commit to beat (default: %(default)s, issue 27's)")
    parser.add_argument("--new", default="HEAD", help="default: %(default)s")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating (default: %(default)s)")
    parser.add_argument("--work_dir", type=Path, help="where the clones go (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--new_targets", nargs="+", default=[], help="the new commit's targets (default: its `all`)")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fashion-mlp-bench-"))
    env = clean_env()
    repos = {"old": clone(args.old, work / "old"), "new": clone(args.new, work / "new")}
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for _ in range(args.repeats):
        for key, (repo, commit) in repos.items():
            runs[key].append(one_run(commit, repo, env, args.new_targets if key == "new" else []))
    print(summary(runs))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
