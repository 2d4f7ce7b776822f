"""OpenVINO CPU plugin on the artifact's ``openvino/model.xml``.

OpenVINO's CPU default on AVX-512-BF16 machines is bf16, so the precision hint is always set
explicitly (default ``f32``) and reported in ``Session.precision``.
"""
from __future__ import annotations

import numpy as np

from edgekit.artifact import Artifact
from edgekit.errors import EdgekitError, one_of

from . import check_feeds, model_feeds

HINTS = ("f32", "bf16")


class OvSession:
    runtime = "openvino"

    def __init__(self, compiled, task: str, threads: int, precision: str, max_len: int):
        self._compiled, self.task, self.threads, self.precision, self.max_len = compiled, task, threads, precision, max_len
        self._request = compiled.create_infer_request()
        self._inputs = {p.get_any_name() for p in compiled.inputs}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds, self.max_len)
        res = self._request.infer(model_feeds(feeds, self._inputs))
        return np.asarray(res[self._compiled.outputs[0]])


class OpenVinoRuntime:
    name = "openvino"

    def version(self) -> str | None:
        try:
            import openvino
        except ImportError:
            return None
        return openvino.__version__.split("-")[0]

    def load(self, artifact: Artifact, threads: int, precision: str | None = None) -> OvSession:
        import openvino as ov

        hint = precision or "f32"
        if hint not in HINTS:
            raise one_of("OpenVINO precision hint", hint, HINTS)
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                  "NUM_STREAMS": 1}
        try:
            compiled = core.compile_model(str(artifact.path("openvino")), "CPU", config)
        except Exception as exc:
            raise EdgekitError(f"OpenVINO could not compile {artifact.path('openvino')}: {exc}") from exc
        t = compiled.get_property("INFERENCE_PRECISION_HINT")
        executed = t.get_type_name() if hasattr(t, "get_type_name") else str(t)
        executed = {"f32": "fp32"}.get(executed, executed)
        weights = artifact.manifest.precision.get("openvino", "fp32")
        prec = executed if weights == "fp32" else f"{weights}+{executed}"
        return OvSession(compiled, artifact.task, threads, prec, artifact.manifest.max_sequence_length)
