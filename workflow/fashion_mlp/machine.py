"""The CPU a result was made on, for the records whose bytes and wall time depend on it.

oneDNN picks its kernels, and so the order of its sums, by the CPU's widest vector instructions: the
same run gave other weights on a Zen 3 (AVX2) than on a Zen 5 (AVX-512), and took 2.5 times as long
(docs/reliability.md, "Across CPUs"). Linux's /proc/cpuinfo says which CPU; elsewhere `platform`.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The widest x86 vector extension first: the one oneDNN's kernels use unless ONEDNN_MAX_CPU_ISA caps them.
VECTOR_EXTENSIONS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo's `key : value` lines."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends at its blank line
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def describe(fields: dict[str, str], cores: int | None) -> dict:
    """{cpu, family, model, vector, cores}: what /proc/cpuinfo's `fields` say of the CPU."""
    flags = set(fields.get("flags", "").split())
    vector = next((name for flag, name in VECTOR_EXTENSIONS if flag in flags), None)
    cpu = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    family, model = fields.get("cpu family"), fields.get("model")
    return {"cpu": cpu, "family": family, "model": model, "vector": vector, "cores": cores}


def machine() -> dict:
    """This machine's CPU, as `describe` puts it; fields Linux does not give are None elsewhere."""
    text = CPUINFO.read_text() if CPUINFO.is_file() else ""
    return describe(parse_cpuinfo(text), os.cpu_count())


def label(described: dict) -> str:
    """`AMD EPYC (family 25, model 1; AVX2; 2 cores)`: a record's machine in a sentence."""
    details = []
    if described.get("family") is not None:
        details.append(f"family {described['family']}, model {described['model']}")
    details += [described["vector"]] if described.get("vector") else []
    details += [f"{described['cores']} cores"] if described.get("cores") else []
    return f"{described['cpu']} ({'; '.join(details)})" if details else described["cpu"]
