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
            out = self.model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
        return out.float().numpy()


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
            out = self.model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
        return out.float().numpy()


class ImageTorchSession:
    """An image classifier (``pixel_values`` NCHW float32 -> logits) in torch eager mode."""

    runtime = "torch"

    def __init__(self, model, task: str, threads: int, precision: str = "fp32"):
        self.model, self.task, self.threads, self.precision = model, task, threads, precision

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        from . import check_pixel_values

        check_pixel_values(feeds)
        torch.set_num_threads(self.threads)
        self.model.eval()
        with torch.inference_mode():
            return self.model(torch.from_numpy(feeds["pixel_values"])).float().numpy()


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
        from transformers import AutoModel, AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        from edgekit.models import wrap

        hf_logging.disable_progress_bar()
        torch.set_num_threads(threads)
        path = artifact.path("torch")
        if artifact.task == "image-classification":
            from edgekit.vision.io import load_image_model

            return ImageTorchSession(load_image_model(path), artifact.task, threads)
        cls = AutoModelForSequenceClassification if artifact.task == "text-classification" else AutoModel
        model = wrap(cls.from_pretrained(path).eval(), artifact.task)
        prec = "fp32"
        qfile = path / "quant.json"
        if qfile.is_file():
            # edgekit's own int8 scheme, simulated in torch (fake-quant): the reference for the native engine.
            from edgekit.formats.fake_quant import attach_fake_quant

            model = attach_fake_quant(model, json.loads(qfile.read_text())).eval()
            prec = "int8-fakequant"
        return TorchSession(model, artifact.task, threads, prec, artifact.manifest.max_sequence_length)
