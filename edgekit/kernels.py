"""edgekit's C++ kernels from Python: int8 (u8 x s8 -> int32) and fp32 GEMMs, dense and 4x1 block-sparse.

Y = X W^T with X [M, K] and W [N, K]. Weights are packed once (:func:`pack_s8` / :func:`pack_f32`) for
the ISA active at that moment; ``EDGEKIT_ISA=ref|avx2|avx512|avx512_vnni`` forces a lower path, and
:func:`using_isa` switches it in-process. One shared library (``libedgekit.so``, next to this module) holds the
ISA state and the thread pool for these functions and for the native engine (``edgekit._engine``) alike.

>>> import numpy as np
>>> from edgekit import kernels
>>> w = kernels.pack_s8(np.ones((8, 16), np.int8), "4x1")
>>> int(kernels.gemm_u8s8_acc(w, np.full((2, 16), 3, np.uint8), x_zp=1)[0, 0])
32
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from edgekit._kernels import (  # noqa: F401  (re-exported API)
    PACK_VERSION,
    PackedWeight,
    buffer_u8,
    cpu_info,
    gemm_f32,
    gemm_u8s8,
    gemm_u8s8_acc,
    gemm_u8s8_t,
    padded_m,
    get_num_threads,
    pack_f32,
    pack_s8,
    peak_macs,
    quantize_u8,
    quantize_u8_t,
    set_isa,
    set_num_threads,
)

ISAS = ("ref", "avx2", "avx512", "avx512_vnni")
PATTERNS = ("dense", "4x1")


def available_isas() -> list[str]:
    """Every path this CPU can run, lowest first."""
    return list(cpu_info()["available"])


@contextlib.contextmanager
def using_isa(name: str) -> Iterator[None]:
    """Run a block on a given kernel path, for the GEMMs and the native engine alike (tests, benchmarks).

    Weights are packed for the path active when they are packed, so pack them (or build engine Encoders) inside it:

    >>> import numpy as np
    >>> with using_isa("ref"):
    ...     w = pack_s8(np.ones((4, 8), np.int8))
    ...     int(gemm_u8s8_acc(w, np.ones((1, 8), np.uint8))[0, 0])
    8
    """
    before = cpu_info()["isa"]
    set_isa(name)
    try:
        yield
    finally:
        set_isa(before)


@contextlib.contextmanager
def using_threads(n: int) -> Iterator[None]:
    """Run a block with n threads in the kernels' pool (shared with the native engine, which sets its own count)."""
    before = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)
