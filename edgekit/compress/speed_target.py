"""``prune.openvino_speedup``: the sparsity search's latency target from what the user is promised, the native
engine k times faster than OpenVINO int8 on this CPU, instead of a fraction of dense kernel time.

The search predicts the time of the encoder Linears from kernel timings (:func:`edgekit.compress.allocation
.latency_table`, M = 128 tokens, each GEMM alone). What the user sees is the whole model at batch 1, 128 tokens, on
the native engine beside OpenVINO int8. So before the search, two probe copies of the student are written as
throwaway artifacts (every encoder Linear at 80% and at 50% 4x1 by magnitude, int8 with min-max activation ranges;
OpenVINO int8 from the first) and the three run interleaved (:func:`edgekit.bench.measure_point`) on 128-token
inputs. The native engine's time is modelled as ``overhead + scale x predicted Linear time``, the two probes giving
the two unknowns:

- ``scale``: the engine's Linear time per predicted unit. The GEMMs run faster inside the engine than alone (warm
  caches, u8 outputs fused into the epilogues): on an AVX2 host the table predicted 15 ms for a 50% MiniLM that
  ran in 9 ms, and an overhead-only model then asked for sparser allocations than the target needed. Where the
  probes' difference is too small to trust (under 1.5x the larger probe's spread, or a scale outside 0.2..5),
  the scale is 1 and the record says so;
- ``overhead_ms``: the time outside the Linears (embeddings, attention, LayerNorms, GELU, pooling, layout
  changes): the 80% probe's time minus its scaled prediction;
- ``openvino_ms``: OpenVINO int8's latency; it does not depend on the 4x1 pattern, so it stands for OpenVINO int8
  of the final model;
- the target, as a fraction of dense Linear time: ``(openvino_ms / k - overhead_ms) / (scale x dense_ms)``.

When the search may leave Linears dense (0 in ``search_grid``), a third probe is timed: every encoder Linear
dense but the first (50% 4x1, so the engine runs the model as 4x1 with the rest listed in ``dense_linears``).
Dense Linears inside a 4x1 model cost the engine more than the dense kernel alone predicts (their input changes
layout; on an AVX2 host six dense FFN-out Linears added 1.1 ms where the table had them faster than 50% 4x1), so
``dense_factor`` rescales the table's dense column: ``probe_dense = overhead + scale x (first Linear at 50% +
dense_factor x the others' dense time)``. It is 1 (and ``dense_factor_fitted`` false) when the result is outside
0.2..5.

On a CPU where OpenVINO int8 is slow (AVX2 without VNNI) this allows denser, more accurate allocations; where it is
fast, sparser ones. A target at or below zero cannot be met by any allocation: the search then takes its fastest
point and the record says so.
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgekit.status import say

#: the probe allocations: every encoder Linear at one of these 4x1 sparsities (OpenVINO int8 from the first)
PROBE_SPARSITY = 0.8
PROBE_LOW = 0.5
#: tokens per input: the latency table's M
TOKENS = 128


def _probe_artifact(run, bits: int, dest: Path, sparsity: float | dict[str, float] = PROBE_SPARSITY,
                    formats=("openvino",)):
    """The student's probe copy (every encoder Linear at ``sparsity`` 4x1 by magnitude, or ``sparsity[name]``;
    0 leaves it dense; int8) as an artifact with the native format and ``formats``."""
    from edgekit.arch import encoder_linears
    from edgekit.export import export_artifact
    from edgekit.formats import fake_quant as FQ
    from edgekit.formats.native import write_native
    from .prune import mask_for
    from .scoring import label_names
    from .stages.quantize import observe

    probe = copy.deepcopy(run.student).eval()
    with torch.no_grad():
        for name, lin in encoder_linears(probe).items():
            sp = sparsity[name] if isinstance(sparsity, dict) else sparsity
            if sp > 0:
                lin.weight.mul_(mask_for(lin.weight.abs(), sp, "4x1"))
    fq = FQ.insert_fake_quant(probe, weight_bits=bits)
    cal = run.calibration_feeds(32)
    observe(probe, run.task, cal)
    FQ.finish_calibration(fq, "minmax")
    qstate = FQ.quant_state(fq)
    FQ.remove_fake_quant(probe)
    labels = label_names(probe, run.task)

    def native(tmp: Path) -> dict[str, str]:
        write_native(probe, run.task, qstate, tmp / "native", labels)
        return {"native": "native"}

    return export_artifact(probe, run.tok, dest, task=run.task, model_name="speed-probe", formats=formats,
                           labels=labels, int8_calibration={k: np.asarray(v) for k, v in cal.items()},
                           weight_bits=bits, extra_files=native, progress=False)


def openvino_target(run, table: dict, shape_of: dict[str, str], speedup: float, bits: int,
                    dense_probe: bool = False) -> dict:
    """Measure OpenVINO int8 and the native engine on this CPU and turn ``speedup`` into the search's latency
    target (a fraction of dense int8 Linear time, the dense column rescaled by ``dense_factor``). ``table`` must
    hold both probe levels. Returns the record: ``target``, ``openvino_ms``, ``native_probe_ms`` /
    ``native_probe_low_ms`` (80% / 50%), ``scale``, ``scale_fitted``, ``overhead_ms``, ``dense_linear_ms``,
    ``dense_factor`` (1 without ``dense_probe``), ``probe_sparsity``, ``seconds``; with ``dense_probe`` also
    ``native_probe_dense_ms`` and ``dense_factor_fitted``."""
    from edgekit.bench import make_feeds, measure_point
    from edgekit.runtimes import load

    t0 = time.perf_counter()
    say(f"search: timing OpenVINO int8 and the native engine on this CPU for the {speedup:g}x target", run.progress)
    dense = sum(table[s]["0.0"] for s in shape_of.values()) / 1e3
    pred = {lv: sum(table[s][str(lv)] for s in shape_of.values()) / 1e3 for lv in (PROBE_SPARSITY, PROBE_LOW)}
    with tempfile.TemporaryDirectory(prefix="edgekit-speed-") as tmp:
        art = _probe_artifact(run, bits, Path(tmp) / "probe")
        low = _probe_artifact(run, bits, Path(tmp) / "probe-low", PROBE_LOW, formats=())
        sessions = {"native": load(art, "native"), "native_low": load(low, "native"), "openvino": load(art, "openvino")}
        first = next(iter(shape_of))  # at 50% 4x1, so the engine runs the others as dense Linears of a 4x1 model
        if dense_probe:
            mostly_dense = _probe_artifact(run, bits, Path(tmp) / "probe-dense",
                                           {n: PROBE_LOW if n == first else 0.0 for n in shape_of}, formats=())
            sessions["native_dense"] = load(mostly_dense, "native")
        feeds = make_feeds(run.tok, 1, TOKENS)  # bbc-news test articles (timing only), else vocabulary words
        timed = measure_point(sessions, feeds, min_runs=20, min_time_s=1.0, rounds=5)
        del sessions
    med = {n: float(np.median(timed[n]["times_ms"])) for n in timed}
    spread = max(float(np.subtract(*np.percentile(timed[n]["times_ms"], [75, 25]))) for n in ("native", "native_low"))
    dn, dp = med["native_low"] - med["native"], pred[PROBE_LOW] - pred[PROBE_SPARSITY]
    scale = dn / dp if dp > 0 else 0.0
    fitted = dn > 1.5 * spread and 0.2 <= scale <= 5.0
    if not fitted:
        scale = 1.0
    overhead = max(med["native"] - scale * pred[PROBE_SPARSITY], 0.0)
    extra, factor = {}, 1.0
    if dense_probe:
        rest = sum(table[s]["0.0"] for n, s in shape_of.items() if n != first) / 1e3
        factor = (med["native_dense"] - overhead - scale * table[shape_of[first]][str(PROBE_LOW)] / 1e3) / (scale * rest)
        extra = {"native_probe_dense_ms": round(med["native_dense"], 6), "dense_factor_fitted": 0.2 <= factor <= 5.0}
        factor = factor if extra["dense_factor_fitted"] else 1.0
    target = (med["openvino"] / speedup - overhead) / (scale * dense * factor)
    return {"speedup": speedup, "target": round(target, 6), "openvino_ms": round(med["openvino"], 6),
            "native_probe_ms": round(med["native"], 6), "native_probe_low_ms": round(med["native_low"], 6),
            "scale": round(scale, 6), "scale_fitted": fitted, "overhead_ms": round(overhead, 6),
            "dense_linear_ms": round(dense, 6), "dense_factor": round(factor, 6), **extra,
            "probe_sparsity": [PROBE_SPARSITY, PROBE_LOW], "tokens": TOKENS, "seconds": round(time.perf_counter() - t0, 1)}


__all__ = ["PROBE_LOW", "PROBE_SPARSITY", "openvino_target"]
