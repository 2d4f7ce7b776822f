"""torch eager runtime: runs the artifact's ``torch/`` folder (plus edgekit fake-quant when present)."""
from __future__ import annotations

import json

import numpy as np

from edgekit.artifact import Artifact

from . import check_feeds


class TorchSession:
    runtime = "torch"

    def __init__(self, model, task: str, threads: int, precision: str, max_len: int):
        self.model, self.task, self.threads, self.precision, self.max_len = model, task, threads, precision, max_len

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        check_feeds(feeds, self.max_len)
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self.model(*_inputs(feeds))
        return out.float().numpy()


def _inputs(feeds: dict[str, np.ndarray]) -> tuple:
    """(input_ids, attention_mask[, token_type_ids]) as torch tensors: segment ids only when given (pairs);
    (pixel_values,) for image models."""
    import torch

    if "pixel_values" in feeds:
        return (torch.from_numpy(np.ascontiguousarray(feeds["pixel_values"])),)
    names = ("input_ids", "attention_mask") + (("token_type_ids",) if "token_type_ids" in feeds else ())
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names)


class ModuleSession(TorchSession):
    """A torch module of this process behind the Session Protocol, so the one evaluator can score it (edgekit
    compress scores its teacher and student this way): eval mode at every run, torch's thread count untouched."""

    def __init__(self, model, task: str, precision: str = "fp32", max_len: int = 512):
        import torch

        super().__init__(model, task, torch.get_num_threads(), precision, max_len)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        check_feeds(feeds, self.max_len)
        self.model.eval()
        with torch.inference_mode():
            out = self.model(*_inputs(feeds))
        return out.float().numpy()


class TorchRuntime:
    name = "torch"

    def version(self) -> str | None:
        try:
            import torch
        except ImportError:
            return None
        return torch.__version__

    def load(self, artifact: Artifact, threads: int, precision: str | None = None) -> TorchSession:
        import torch
        from transformers.utils import logging as hf_logging

        from edgekit.models import auto_class, wrap

        hf_logging.disable_progress_bar()
        torch.set_num_threads(threads)
        path = artifact.path("torch")
        if artifact.task == "image-classification":
            from edgekit.vision.io import load_image_model

            model = load_image_model(path)  # CNNs and ViT / DeiT folders alike: pixel_values -> logits
        else:
            model = wrap(auto_class(artifact.task).from_pretrained(path).eval(), artifact.task, path)
        prec = "fp32"
        qfile = path / "quant.json"
        if qfile.is_file():
            # edgekit's own int8 scheme, simulated in torch (fake-quant): the reference for the native engine.
            from edgekit.formats.fake_quant import attach_fake_quant

            model = attach_fake_quant(model, json.loads(qfile.read_text())).eval()
            prec = "int8-fakequant"
        return TorchSession(model, artifact.task, threads, prec, artifact.manifest.max_sequence_length)
