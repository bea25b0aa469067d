"""`fashion-mlp profile`: the last Snakemake run's jobs on a time axis, their true CPU, the machine's CPU.

Reads a run folder that the Snakefile's onstart made (sampler.py) and its jobs filled (marks.py), and
writes reports/timings/profile.png and profile.md: one bar per job (its epochs darker), each job's
CPU seconds from getrusage and its peak RSS, the busy cores of the whole machine over time, and each
training's and trial's fixed cost, phase by phase. The Snakefile's onsuccess runs it; by hand it
draws the newest run.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from fashion_mlp.io import write_text
from fashion_mlp.profiling import marks as m
from fashion_mlp.profiling.sampler import MACHINE_FILE, job_records, newest_run

RUNS_DIR = Path("reports/timings/runs")
# A training's phases: the time from each mark to the next (the first from the process's start).
PHASES = (
    ("imports", m.TF_IMPORTED),
    ("data, build", m.BUILT),
    ("MLflow run, params, datasets", m.RUN_STARTED),
    ("compile", m.EPOCHS_START),
    ("first epoch", m.FIRST_EPOCH_END),
    ("other epochs", m.EPOCHS_END),
    ("save", m.SAVED),
    ("MLflow logging", m.LOGGED),
)
TRIAL_START, TRIAL_END = "trial start", "trial end"
TRIAL_PHASES = (
    ("setup", m.EPOCHS_START),
    ("first epoch", m.FIRST_EPOCH_END),
    ("other epochs", m.EPOCHS_END),
    ("teardown, checkpoint", TRIAL_END),
)


def load_run(folder: Path) -> tuple[list[dict], list[tuple[float, float]], float, int]:
    """The jobs (by start), the machine's samples (time, busy cores), the run's start and the cores."""
    jobs = sorted((json.loads(p.read_text()) for p in job_records(folder)), key=lambda j: j["started"])
    samples, started, cores = [], None, 1
    path = folder / MACHINE_FILE
    for line in path.read_text().splitlines() if path.exists() else []:
        key, value = line.split("\t")
        if key == "# started":
            started = float(value)
        elif key == "# cores":
            cores = int(value)
        else:
            samples.append((float(key), float(value)))
    if not jobs:
        raise SystemExit(f"profile: {folder} holds no job records: was the run made with the Snakefile?")
    first_job = jobs[0]["started"]
    return jobs, samples, first_job if started is None else min(started, first_job), cores


def phase_seconds(marks: dict[str, float], end: float, phases=PHASES, start: float = 0.0, tail: str | None = "to exit"):
    """Seconds from each mark of `phases` present to the next (the first from `start`); `tail` to `end`."""
    out, previous = {}, start
    for name, mark in phases:
        if mark in marks:
            out[name] = marks[mark] - previous
            previous = marks[mark]
    if out and tail:
        out[tail] = end - previous
    return out


def fixed_seconds(marks: dict[str, float], wall: float) -> float | None:
    """A training's fixed cost: its start to its first epoch, plus its last epoch to its exit."""
    if m.EPOCHS_START not in marks or m.EPOCHS_END not in marks:
        return None
    return marks[m.EPOCHS_START] + wall - marks[m.EPOCHS_END]


def trials(job: dict) -> dict[str, dict[str, float]]:
    """A tune worker's trials, by id: each one's marks ("trial <id>: <mark>"), in seconds from the process's start."""
    out: dict[str, dict[str, float]] = {}
    for name, at in job["marks"]:
        if name.startswith("trial ") and ": " in name:
            trial, mark = name[len("trial ") :].split(": ", 1)
            out.setdefault(trial, {})[mark] = at
    return out


def trial_table(jobs: list[dict]) -> list[str]:
    """The median of each phase over every finished trial of the search."""
    rows = []
    for job in jobs:
        done = [t for t in trials(job).values() if TRIAL_START in t and TRIAL_END in t]
        done.sort(key=lambda t: t[TRIAL_START])
        for i, marks in enumerate(done):
            row = phase_seconds(marks, marks[TRIAL_END], TRIAL_PHASES, marks[TRIAL_START], tail=None)
            if i + 1 < len(done):  # the oracle's bookkeeping and any wait for the next trial
                row["to the next trial"] = done[i + 1][TRIAL_START] - marks[TRIAL_END]
            rows.append(row)
    if not rows:
        return []
    names = [name for name in [*(n for n, _ in TRIAL_PHASES), "to the next trial"] if any(name in r for r in rows)]
    medians = [statistics.median(r[n] for r in rows if n in r) for n in names]
    return [
        "",
        f"### The search's {len(rows)} trials: median seconds per phase",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---:|" * len(names),
        "| " + " | ".join(f"{v:.2f}" for v in medians) + " |",
    ]


def epoch_spans(marks: list) -> list[tuple[float, float]]:
    """(first epoch's start, last epoch's end) of the job's training, or of each of its trials."""
    starts = {name[: -len(m.EPOCHS_START)]: at for name, at in marks if name.endswith(m.EPOCHS_START)}
    return [
        (starts[name[: -len(m.EPOCHS_END)]], at)
        for name, at in marks
        if name.endswith(m.EPOCHS_END) and name[: -len(m.EPOCHS_END)] in starts
    ]


def job_name(job: dict) -> str:
    return f"{job['command']} {job['label']}".strip()


def table(jobs: list[dict], samples, run_start: float, cores: int) -> str:
    run_end = max(j["ended"] for j in jobs)
    wall = run_end - run_start
    busy = [b for t, b in samples if t <= run_end + 1]
    job_cpu = sum(j["cpu_seconds"] for j in jobs)
    fixed = [f for j in jobs if (f := fixed_seconds(dict(j["marks"]), j["wall_seconds"])) is not None]
    names = [*(name for name, _ in PHASES), "to exit"]
    biggest = max(jobs, key=lambda j: j["max_rss_mb"])
    lines = [
        "# Where the last run's time went",
        "",
        "Written by `fashion-mlp profile` from the run's job records (`reports/timings/runs/`); not versioned.",
        "",
        f"- {len(jobs)} jobs in {wall:.1f} s of wall time on {cores} cores; the jobs' own CPU (getrusage): "
        f"{job_cpu:.1f} s, {job_cpu / wall / cores:.0%} of the cores' time.",
    ]
    if busy:
        lines.append(
            f"- The machine's cores were {statistics.fmean(busy) / cores:.0%} busy (/proc/stat, every second; "
            "any process, not only the jobs')."
        )
    if fixed:
        lines.append(
            f"- A training's fixed cost (its start to its first epoch, its last epoch to its exit): median "
            f"{statistics.median(fixed):.1f} s over {len(fixed)} trainings."
        )
    lines += [
        f"- Peak RSS: {biggest['max_rss_mb']:.0f} MB ({job_name(biggest)}).",
        "",
        "![The jobs over time, and the machine's busy cores](profile.png)",
        "",
        "| Job | Start s | Wall s | CPU s | CPU % | Peak RSS MB | Fixed s | " + " | ".join(names) + " |",
        "|---|" + "---:|" * (6 + len(names)),
    ]
    for job in jobs:
        marks = dict(job["marks"])
        phases = phase_seconds(marks, job["wall_seconds"])
        fixed_s = fixed_seconds(marks, job["wall_seconds"])
        cells = [
            job_name(job),
            f"{job['started'] - run_start:.1f}",
            f"{job['wall_seconds']:.1f}",
            f"{job['cpu_seconds']:.1f}",
            f"{100 * job['cpu_seconds'] / max(job['wall_seconds'], 1e-9):.0f}",
            f"{job['max_rss_mb']:.0f}",
            "" if fixed_s is None else f"{fixed_s:.1f}",
            *(f"{phases[n]:.1f}" if n in phases else "" for n in names),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + trial_table(jobs)) + "\n"


def draw(jobs: list[dict], samples, run_start: float, cores: int, path: Path) -> None:
    from fashion_mlp.figures import pyplot, save_figure

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 3 + 0.28 * len(jobs)), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    commands = sorted({j["command"] for j in jobs})
    colour = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(commands)}
    for row, job in enumerate(jobs):
        start = job["started"] - run_start
        top.barh(row, job["wall_seconds"], left=start, color=colour[job["command"]], alpha=0.35)
        for begin, end in epoch_spans(job["marks"]):  # the epochs themselves (a worker's: each trial's), darker
            top.barh(row, end - begin, left=start + begin, color=colour[job["command"]])
        share = job["cpu_seconds"] / max(job["wall_seconds"], 1e-9)
        top.text(
            start + job["wall_seconds"] + 1,
            row,
            f"{share:.0%} CPU, {job['max_rss_mb']:.0f} MB",
            va="center",
            fontsize=7,
        )
    top.set_yticks(range(len(jobs)), [job_name(j) for j in jobs], fontsize=7)
    top.invert_yaxis()
    top.set_title("Jobs (pale: process, dark: epochs); CPU share and peak RSS from getrusage")
    if samples:
        times = [t - run_start for t, _ in samples]
        bottom.fill_between(times, [b for _, b in samples], step="post", alpha=0.5, label="machine (/proc/stat)")
    edges = sorted({j["started"] - run_start for j in jobs} | {j["ended"] - run_start for j in jobs})
    # Each job's average CPU spread over its span: what the jobs alone account for.
    load = [
        sum(
            j["cpu_seconds"] / max(j["wall_seconds"], 1e-9)
            for j in jobs
            if j["started"] - run_start <= t < j["ended"] - run_start
        )
        for t in edges
    ]
    bottom.step(edges, load, where="post", color="black", linewidth=1, label="jobs (average over each job)")
    bottom.axhline(cores, color="grey", linestyle=":", linewidth=1)
    bottom.set_ylim(0, cores * 1.15)
    bottom.set_ylabel("busy cores")
    bottom.set_xlabel("seconds since the run started")
    bottom.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fashion-mlp profile", description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", type=Path, help=f"a run's records; default: the newest under {RUNS_DIR}")
    parser.add_argument("--out_dir", type=Path, default=Path("reports/timings"), help="default: %(default)s")
    args = parser.parse_args(argv)
    folder = args.run_dir or newest_run(RUNS_DIR)
    if folder is None:
        raise SystemExit(f"profile: no run with job records under {RUNS_DIR}: run `snakemake --cores all` first")
    jobs, samples, run_start, cores = load_run(folder)
    draw(jobs, samples, run_start, cores, args.out_dir / "profile.png")
    write_text(args.out_dir / "profile.md", table(jobs, samples, run_start, cores))
    print(f"profile: {len(jobs)} jobs of {folder} -> {args.out_dir}/profile.png, profile.md")


if __name__ == "__main__":
    main()
