"""Machine facts for ``edgekit info`` and for every benchmark row (CONTRACT.md fields)."""
from __future__ import annotations

import os
import platform
from functools import lru_cache

ISA_FLAGS = {  # CONTRACT name -> /proc/cpuinfo flag
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_int8": "amx_int8",
}


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``{"model", "cores" (physical), "isa": {flag: bool}}``."""
    from edgekit.runtimes import default_threads

    model, flags = _cpuinfo()
    return {"model": model, "cores": default_threads(), "isa": {k: v in flags for k, v in ISA_FLAGS.items()}}


def kernels_isa() -> str | None:
    """The ISA path edgekit's kernels chose (None when the kernels module is not built)."""
    try:
        from edgekit import kernels
    except ImportError:
        return None
    try:
        return kernels.cpu_info().get("isa")
    except Exception:  # an incomplete build must not break `edgekit info`
        return None


def machine_info() -> dict:
    """Everything ``edgekit info --json`` prints."""
    from edgekit.runtimes import versions

    return {"cpu": cpu_info(), "runtimes": versions(), "kernels": {"isa": kernels_isa()},
            "threads_default": cpu_info()["cores"], "logical_cpus": os.cpu_count()}


def format_info(info: dict) -> str:
    cpu = info["cpu"]
    isa = " ".join(f"{k}{'+' if v else '-'}" for k, v in cpu["isa"].items())
    rts = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["runtimes"].items())
    return "\n".join([
        f"cpu:      {cpu['model']} ({cpu['cores']} physical cores, {info.get('logical_cpus')} logical)",
        f"isa:      {isa}",
        f"runtimes: {rts}",
        f"kernels:  {info['kernels']['isa'] or 'not built'}",
    ])
