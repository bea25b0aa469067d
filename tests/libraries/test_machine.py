"""machine.py: which CPU a record was made on, read from /proc/cpuinfo."""

from __future__ import annotations

from fashion_mlp import machine

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 fma

processor\t: 1
model name\t: another CPU's block, not read
"""


def test_the_first_processors_fields_are_read():
    fields = machine.parse_cpuinfo(ZEN3)
    assert fields["model name"] == "AMD EPYC" and fields["cpu family"] == "25" and fields["model"] == "1"


def test_the_widest_vector_extension_is_named():
    described = machine.describe(machine.parse_cpuinfo(ZEN3), 2)
    assert described == {"cpu": "AMD EPYC", "family": "25", "model": "1", "vector": "AVX2", "cores": 2}
    assert machine.label(described) == "AMD EPYC (family 25, model 1; AVX2; 2 cores)"
    wider = machine.describe(machine.parse_cpuinfo(ZEN3.replace("avx2", "avx2 avx512f avx512bw")), 2)
    assert wider["vector"] == "AVX-512"
    assert machine.describe({"flags": "fpu"}, None)["vector"] is None


def test_without_cpuinfo_the_label_still_names_a_cpu():
    described = machine.describe({}, 4)
    assert described["family"] is None and described["cpu"]
    assert machine.label(described) == f"{described['cpu']} (4 cores)"


def test_this_machine_is_described():
    here = machine.machine()
    assert here["cpu"] and here["cores"] >= 1
