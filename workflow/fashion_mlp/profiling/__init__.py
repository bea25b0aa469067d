"""Where a run's time goes: each job's own record (true CPU, peak RSS, named marks) and the machine's CPU.

Snakemake's benchmark files under-count CPU: they sample a job's processes now and then, and miss
threads and short-lived children. So each `fashion-mlp` process measures itself (marks.py) and a
thread of the Snakemake process samples /proc/stat (sampler.py); `fashion-mlp profile` (draw.py)
turns the last run's records into reports/timings/profile.png and profile.md.
"""
