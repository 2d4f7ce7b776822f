"""machine_info(): the CONTRACT schema, /proc/cpuinfo parsing, and a kernels module that may be absent."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from edgekit import info as I

ISA = {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8"}

CPUINFO_SMT = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9R14
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse avx2 avx512f avx512bw avx512_vnni avx512_bf16

processor\t: 1
physical id\t: 0
core id\t\t: 0

processor\t: 2
physical id\t: 0
core id\t\t: 1

processor\t: 3
physical id\t: 0
core id\t\t: 1
"""


def test_machine_info_schema():
    info = I.machine_info()
    assert set(info) >= {"cpu", "runtimes", "kernels"}
    cpu = info["cpu"]
    assert isinstance(cpu["model"], str) and cpu["model"]
    assert isinstance(cpu["cores"], int) and cpu["cores"] >= 1
    assert set(cpu["isa"]) == ISA and all(isinstance(v, bool) for v in cpu["isa"].values())
    assert set(info["runtimes"]) >= {"torch", "onnxruntime", "openvino", "native"}
    assert all(v is None or isinstance(v, str) for v in info["runtimes"].values())
    assert info["runtimes"]["onnxruntime"] and info["runtimes"]["openvino"] and info["runtimes"]["torch"]
    assert set(info["kernels"]) == {"isa"} and (info["kernels"]["isa"] is None or isinstance(info["kernels"]["isa"], str))
    assert json.loads(json.dumps(info)) == info


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux only")
def test_isa_flags_agree_with_proc_cpuinfo():
    flags = set(next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split())
    assert I.cpu_info()["isa"] == {k: k in flags for k in ISA}


def test_parse_cpuinfo_counts_physical_cores():
    p = I.parse_cpuinfo(CPUINFO_SMT)
    assert p["model"] == "AMD EPYC 9R14" and p["vendor"] == "AuthenticAMD"
    assert (p["family"], p["model_number"]) == (25, 17)
    assert p["physical_cores"] == 2  # 4 logical CPUs, 2 SMT pairs
    assert {"avx512_vnni", "avx512_bf16"} <= p["flags"] and "amx_int8" not in p["flags"]


def test_kernels_isa_tolerates_absence_and_failure(monkeypatch):
    for name in ("edgekit.kernels", "edgekit._kernels"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules makes the import fail
    assert I.kernels_isa() is None
    good = types.ModuleType("edgekit.kernels")
    good.cpu_info = lambda: {"isa": "avx512_vnni", "threads": 2}
    monkeypatch.setitem(sys.modules, "edgekit.kernels", good)
    assert I.kernels_isa() == "avx512_vnni"
    bad = types.ModuleType("edgekit.kernels")
    bad.cpu_info = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "edgekit.kernels", bad)
    assert I.kernels_isa() is None


def test_format_info_is_readable():
    info = {"cpu": {"model": "Test CPU", "cores": 2, "isa": dict.fromkeys(sorted(ISA), False) | {"avx2": True}},
            "runtimes": {"torch": "2.13.0", "native": None}, "kernels": {"isa": None}}
    text = I.format_info(info)
    assert "Test CPU (2 physical cores)" in text and "avx2 yes" in text and "amx_int8 no" in text
    assert "native (not available)" in text and "kernels:  not built" in text
    assert I.format_info(I.machine_info()).startswith("cpu:")


def test_cli_info_json(capsys):
    from edgekit.cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["cpu"]["isa"]) == ISA and "isa" in info["kernels"]
