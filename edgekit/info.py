"""Machine facts for ``edgekit info`` and for every benchmark row.

>>> info = machine_info()
>>> sorted(info["cpu"]["isa"])
['amx_int8', 'avx2', 'avx512_bf16', 'avx512_vnni', 'avx512bw', 'avx512f']
>>> print(format_info(info))                                       # doctest: +SKIP
cpu:      AMD EPYC (2 physical cores, 2 logical; family 25 model 17; LLC 32 MiB)
isa:      avx2 yes, avx512f yes, avx512bw yes, avx512_vnni yes, avx512_bf16 yes, amx_int8 no
...
"""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

#: CONTRACT name -> Linux /proc/cpuinfo flag (the names happen to agree; the table documents that)
ISA_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_int8": "amx_int8",
}


def parse_cpuinfo(text: str) -> dict:
    """Model name, vendor, family/model numbers, flags of the first CPU and physical core count.

    Physical cores = distinct (``physical id``, ``core id``) pairs; SMT siblings share a pair.
    """
    blocks = [b for b in text.split("\n\n") if b.strip()]
    cpus = []
    for b in blocks:
        d = {}
        for line in b.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                d[key.strip()] = value.strip()
        cpus.append(d)
    first = cpus[0] if cpus else {}
    pairs = {(c.get("physical id", "0"), c.get("core id", c.get("processor"))) for c in cpus if "processor" in c}
    return {
        "model": first.get("model name") or first.get("Processor") or "",
        "vendor": first.get("vendor_id"),
        "family": int(first["cpu family"]) if first.get("cpu family", "").isdigit() else None,
        "model_number": int(first["model"]) if first.get("model", "").isdigit() else None,
        "flags": set(first.get("flags", "").split()),
        "physical_cores": len(pairs) or None,
    }


def _llc_bytes() -> int | None:
    """Size of the last-level cache seen by cpu0 (for kernel benchmarks that must rotate past it)."""
    best = None
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((idx / "level").read_text())
            size = (idx / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
        nbytes = int(size.rstrip("KMG")) * mult
        if best is None or level > best[0]:
            best = (level, nbytes)
    return best[1] if best else None


def physical_cores() -> int:
    """Physical cores this process may use (psutil, else /proc/cpuinfo, else the logical count)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        n = None
    if not n:
        try:
            n = parse_cpuinfo(Path("/proc/cpuinfo").read_text())["physical_cores"]
        except OSError:
            n = None
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(n or logical or 1), int(logical or 1)))


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """``{"model", "cores" (physical), "isa": {flag: bool}}`` plus vendor, family, LLC size.

    Off Linux (no /proc/cpuinfo) every ISA flag is False and the model comes from ``platform``.
    """
    try:
        parsed = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        parsed = {"model": "", "vendor": None, "family": None, "model_number": None, "flags": set()}
    return {
        "model": parsed["model"] or platform.processor() or platform.machine(),
        "cores": physical_cores(),
        "isa": {name: flag in parsed["flags"] for name, flag in ISA_FLAGS.items()},
        "logical_cpus": os.cpu_count(),
        "vendor": parsed["vendor"],
        "family": parsed["family"],
        "model_number": parsed["model_number"],
        "llc_bytes": _llc_bytes(),
    }


def kernels_isa() -> str | None:
    """The ISA path edgekit's kernels chose, or None when the kernels are not built (yet)."""
    import importlib

    for name in ("edgekit.kernels", "edgekit._kernels"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        fn = getattr(mod, "cpu_info", None)
        if fn is None:
            continue
        try:
            isa = fn().get("isa")
        except Exception:  # an incomplete build must not break `edgekit info`
            return None
        return str(isa) if isa is not None else None
    return None


def machine_info(count_text: bool = False) -> dict:
    """Everything ``edgekit info --json`` prints (``count_text``: count every installed text source's passages and
    words now rather than only reporting earlier, cached counts)::

        {"cpu": {"model", "cores", "isa": {flag: bool}, ...},
         "runtimes": {name: version | None}, "kernels": {"isa": str | None},
         "text_sources": [{"name", "installed", "package", "licence", "passages", "words", ...}],
         "photos": {"name", "photographs", "images", "about"} | None}   # int8 calibration / agreement pictures
    """
    from edgekit.data.corpora import text_sources_info
    from edgekit.runtimes import versions

    return {"cpu": cpu_info(), "runtimes": versions(), "kernels": {"isa": kernels_isa()},
            "text_sources": text_sources_info(count=count_text), "photos": _photos()}


def _photos() -> dict | None:
    from edgekit.data.images import photo_source
    from edgekit.errors import InputError

    try:
        return photo_source().to_dict()
    except InputError:
        return None


NO_PHOTOS = ("none installed (image int8 calibration needs Debian plasma-workspace-wallpapers / mate-backgrounds, "
             "or EDGEKIT_PHOTO_DIR)")


def format_info(info: dict) -> str:
    """Human-readable lines for ``edgekit info``."""
    from edgekit.data.corpora import format_text_sources

    cpu = info["cpu"]
    isa = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["isa"].items())
    rts = ", ".join(f"{k} {v or '(not available)'}" for k, v in info["runtimes"].items())
    extra = []
    if cpu.get("logical_cpus"):
        extra.append(f"{cpu['cores']} physical cores, {cpu['logical_cpus']} logical")
    else:
        extra.append(f"{cpu['cores']} physical cores")
    if cpu.get("family") is not None:
        extra.append(f"family {cpu['family']} model {cpu.get('model_number')}")
    if cpu.get("llc_bytes"):
        extra.append(f"LLC {cpu['llc_bytes'] / (1 << 20):g} MiB")
    return "\n".join([
        f"cpu:      {cpu['model']} ({'; '.join(extra)})",
        f"isa:      {isa}",
        f"threads:  {cpu['cores']} by default (all physical cores)",
        f"runtimes: {rts}",
        f"kernels:  {info['kernels']['isa'] or 'not built'}",
        f"photos:   {info['photos']['about'] if info.get('photos') else NO_PHOTOS}",
    ] + (["", format_text_sources(info["text_sources"])] if info.get("text_sources") else []))
