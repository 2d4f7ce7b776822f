"""The Python API; the CLI calls exactly these functions.

>>> import edgekit.api as ek
>>> art = ek.export("minilm-l6", "out/minilm", formats="onnx,openvino")       # doctest: +SKIP
>>> ek.evaluate(art, runtime="openvino")["value"]                             # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .artifact import Artifact, is_artifact, load_artifact
from .errors import InputError
from .paths import cache_dir

if TYPE_CHECKING:
    from edgekit.data import DataSpec

RUNTIME_FORMAT = {"torch": "torch", "onnxruntime": "onnx", "openvino": "openvino", "native": "native"}


def export(model: str | os.PathLike, out_dir: str | os.PathLike, formats: str | Iterable[str] = "onnx,openvino",
           task: str | None = None, progress: bool = True) -> Artifact:
    """Export a zoo name or Hugging Face folder to an artifact folder (fp32)."""
    from .api_images import export_image, image_family

    if image_family(model):  # CNNs and ViT / DeiT: pixel_values in, logits out
        return export_image(model, out_dir, formats=formats, progress=progress)
    from edgekit.extras import require

    require("torch", "transformers", "onnx", what="edgekit export")
    from edgekit.export import export as _export

    return _export(model, out_dir, formats=formats, task=task, progress=progress)


def parse_runtimes(runtimes: str | Sequence[str], installed: bool = False) -> list[str]:
    """Runtime names from ``"a,b"`` or a list, checked; with ``installed`` each one's library must import too
    (a missing one is refused in one line naming the pip extra that brings it)."""
    from edgekit.runtimes import RUNTIMES, require_runtime

    items = [r.strip() for r in runtimes.split(",")] if isinstance(runtimes, str) else list(runtimes)
    items = [r for r in items if r]
    for r in items:
        if r not in RUNTIMES:
            raise InputError(f"unknown runtime {r!r}; allowed: {', '.join(RUNTIMES)} (comma-separated)")
    if not items:
        raise InputError(f"no runtime given; allowed: {', '.join(RUNTIMES)}")
    if installed:
        for r in items:
            require_runtime(r)
    return list(dict.fromkeys(items))


def as_artifact(model: str | os.PathLike | Artifact, runtimes: Sequence[str] = ("torch", "onnxruntime", "openvino"),
                task: str | None = None, progress: bool = True) -> Artifact:
    """An artifact for MODEL: artifact folders are verified and used as they are; zoo names and
    Hugging Face folders are exported once (fp32) into the cache and reused."""
    if isinstance(model, Artifact):
        return model
    if Path(model).is_dir() and is_artifact(model):
        return load_artifact(model)
    if not Path(model).exists() and str(model).startswith(("/", ".", "~")):
        raise InputError(f"no such file or folder: {model}")
    from edgekit.extras import MissingExtra, require

    try:  # what runs a zoo name or a Hugging Face folder is the [compress] extra, not a runtime-only install
        require("torch", "transformers", what=f"{model} (a zoo name or Hugging Face folder, not an artifact)")
    except MissingExtra as exc:
        if not Path(model).exists():
            raise InputError(f"{model} is not an artifact folder (no such folder here); zoo names need torch: "
                             "pip install 'edgekit[compress]'") from None
        raise exc from None
    from edgekit.zoo import resolve

    ref = resolve(model, task)
    # ":segments": exports from before graphs took token_type_ids are not reused
    stamp = f"{ref.path.resolve()}:{(ref.path / 'config.json').stat().st_mtime_ns}:{ref.task}:segments"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    dest = cache_dir() / "exports" / f"{Path(ref.name).name}-{key}"
    wanted = {RUNTIME_FORMAT[r] for r in runtimes} - {"native"}
    if "native" in runtimes:
        raise InputError(f"runtime 'native' needs a compressed artifact (edgekit compress {model} -o DIR), not {model}")
    if is_artifact(dest):
        art = load_artifact(dest)
        if wanted <= set(art.manifest.formats):
            return art
    return export(model, dest, formats=sorted(wanted | {"onnx", "openvino"}), task=task, progress=progress)


def check_formats(art: Artifact, runtimes: Sequence[str]) -> None:
    """Every runtime asked for has its format in ``art`` (checked before any runtime is loaded)."""
    for rt in runtimes:
        art.path(RUNTIME_FORMAT[rt.removesuffix("-fp32")])  # raises with what the artifact has and how to get more


def check_data(data, task: str | None = None) -> "DataSpec":
    """``data`` (a name, a path or a :class:`~edgekit.data.DataSpec`) as a DataSpec whose splits read cleanly
    for ``task`` (token classification: ``tokens``/``tags`` lists): called before any model loads or output is
    written, so bad data costs nothing (one InputError line)."""
    from edgekit.data import check_splits

    return check_splits(data, task)  # cached: the later reads of the same files are free


def task_of(model) -> str | None:
    """MODEL's task from its manifest or config.json, without loading weights (None when unknown yet)."""
    if isinstance(model, Artifact):
        return model.task
    path = Path(model)
    if path.is_dir() and is_artifact(path):
        return load_artifact(path, verify=False).task
    if path.is_dir() and (path / "config.json").is_file():
        from edgekit.zoo import hf_task

        return hf_task(path)
    return None  # a zoo name: text tasks only


def evaluate(model, runtime: str = "torch", data="bbc-news", reference: str | None = None,
             threads: int | None = None, precision: str | None = None, progress: bool = True,
             native_precision: str | None = None) -> dict:
    """Accuracy (classifiers) or linear-probe accuracy (+ cosine vs ``reference``) on the test split of
    ``data``: ``bbc-news``, a path, or a :class:`~edgekit.data.DataSpec` naming the columns.

    ``precision`` is the OpenVINO hint (f32, bf16), ``native_precision`` the native engine's attention
    precision (fp32, bf16, int8), as in :func:`bench`; each applies to its own runtime only."""
    from edgekit.evaluate import evaluate as _evaluate
    from edgekit.runtimes import load, load_tokenizer

    (runtime,) = parse_runtimes(runtime, installed=True)
    if reference is not None:
        parse_runtimes("torch", installed=True)
    from .api_images import evaluate_image, image_family, is_image_data

    if image_family(model) or is_image_data(data):
        return evaluate_image(model, runtime, data=data, reference=reference, threads=threads, precision=precision,
                              progress=progress)
    data = check_data(data, task_of(model))
    art = as_artifact(model, [runtime], progress=progress)
    check_formats(art, [runtime])
    hint = {"openvino": precision, "native": native_precision}.get(runtime)
    session = load(art, runtime, threads, hint)
    ref_session = None
    if reference is not None:
        ref_art = as_artifact(reference, ["torch"], progress=progress)
        ref_session = load(ref_art, "torch", threads)
    return _evaluate(session, load_tokenizer(art), data=data, reference_session=ref_session,
                     labels=art.manifest.labels, progress=progress)


def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    """Where ``compress`` keeps the checkpoints of a run writing ``out_dir``: ``OUT.ckpt`` next to it."""
    out = Path(out_dir).absolute()
    return out.with_name(out.name + ".ckpt")


def _checkpoint_summary(ckpt: Path) -> str:
    """``stage prune, step 250`` from a checkpoint's state.json (what a user needs to decide to resume)."""
    import json

    try:
        st = json.loads((ckpt / "state.json").read_text())
        return f"stage {st['stage']}, step {st['step']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable state.json"


def check_compress_output(out_dir, resume: bool = False, overwrite: bool = False) -> Path:
    """Everything about ``-o`` that can be refused before any work: an existing artifact without
    ``overwrite``, a non-empty folder that is not an artifact, a checkpoint of an interrupted run that
    neither ``resume`` continues nor ``overwrite`` discards, ``resume`` without a checkpoint."""
    from .artifact import check_output

    out = check_output(out_dir, overwrite)
    ckpt = checkpoint_dir(out)
    has_ckpt = (ckpt / "state.json").is_file()
    if resume and not has_ckpt:
        raise InputError(f"--resume: no checkpoint in {ckpt}; run without --resume to start from the beginning")
    if not resume and ckpt.exists() and not overwrite:
        what = (f"the checkpoint of an interrupted run ({_checkpoint_summary(ckpt)})" if has_ckpt
                else "an unfinished checkpoint")
        raise InputError(f"{ckpt} holds {what}; rerun with --resume to continue it, or with --overwrite to start over")
    return out


def _check_architecture(folder: Path) -> None:
    """Refuse a model family compress cannot handle from its config.json, before any weights load."""
    import json

    from edgekit.arch import check_model_type

    try:
        model_type = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # loading the model names what is wrong with the folder
    check_model_type(model_type)


def compress(model, out_dir, recipe=None, data="bbc-news", max_steps: int | None = None, seed: int = 0,
             resume: bool = False, print_recipe: bool = False, overwrite: bool = False,
             progress: bool = True, distill_data=None) -> dict | None:
    """Run a compression recipe; writes an artifact folder with report.json. Returns the report (``{}`` after
    printing the recipe with ``print_recipe``; None on torchrun ranks other than 0);
    :func:`edgekit.compress.compress` does the work and returns the Artifact itself.

    Refuses before any work (exit 2) when ``out_dir`` holds an artifact (``overwrite=True`` replaces it),
    is a non-empty folder that is not an artifact, or has a checkpoint of an interrupted run next to it
    (``OUT.ckpt``: ``resume=True`` continues it, ``overwrite=True`` starts over).

    ``data``: ``bbc-news``, a path or a :class:`~edgekit.data.DataSpec`; it is read (and refused, if bad)
    before the model loads. ``distill_data``: unlabelled text (a path or registered text source) the teacher
    labels for distillation; it replaces the source of the recipe's ``distill_data`` section.

    >>> compress("tiny-bert-cls", "out/tiny", recipe="quick")["compressed"]["accuracy"]   # doctest: +SKIP
    """
    from edgekit.extras import require

    require("torch", "transformers", what="edgekit compress")
    from edgekit.compress import compress as _compress
    from edgekit.compress.config import load_recipe
    from edgekit.compress.pipeline import recipe_text
    from edgekit.compress.report import read_report

    from .status import say

    progress = progress and os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all
    if print_recipe:
        print(recipe_text(recipe, seed))
        return {}
    if out_dir is None:
        raise InputError("compress needs an output folder (-o DIR)")
    from .api_images import compress_image, image_family

    if image_family(model):  # CNNs: post-training int8 (ptq); ViT / DeiT: TinyMIM distillation (tinymim)
        return compress_image(model, out_dir, recipe=recipe, data=data, overwrite=overwrite, resume=resume,
                              max_steps=max_steps, progress=progress, seed=seed)
    check_compress_output(out_dir, resume=resume, overwrite=overwrite)
    rec = load_recipe(recipe)  # a bad recipe is refused now, not after the model is loaded
    task = task_of(model)
    data = check_data(data, task)
    if distill_data is not None:
        from edgekit.compress.pipeline import distill_texts

        distill_texts(distill_data, data, recipe, seed, task=task)  # refused now if unreadable
    from edgekit.zoo import resolve

    ref = resolve(model)  # may build a zoo model on first use (it says so)
    if ref.kind != "hf":
        raise InputError(f"{model} is an artifact; compress takes a zoo name or a Hugging Face model folder")
    _check_architecture(ref.path)
    if ref.task in ("text-classification", "token-classification"):  # the head must fit the data, before loading
        from transformers import AutoConfig

        from edgekit.compress.pipeline import match_labels

        match_labels(AutoConfig.from_pretrained(ref.path), ref.task, data)
    ckpt = checkpoint_dir(out_dir)
    if overwrite and not resume and ckpt.exists():
        say(f"--overwrite: discarding the checkpoint in {ckpt}", progress)
    stages = ", ".join(s.type for s in rec.stages)
    say(f"compressing {ref.name} ({ref.task}) with recipe {rec.name} ({stages}) on {data}"
        + (f", resuming from {ckpt} ({_checkpoint_summary(ckpt)})" if resume else ""), progress)
    art = _compress(model, out_dir, recipe=recipe, data=data, distill_data=distill_data, max_steps=max_steps, seed=seed, resume=resume,
                    progress=progress)
    return read_report(art) if art is not None else None


def bench(model, runtimes: str | Sequence[str] = "torch,onnxruntime,openvino", batches: Sequence[int] = (1, 8),
          seqs: Sequence[int] = (128,), threads: int | None = None, precision: str | None = None,
          budget_ms: float = 10.0, min_time_s: float = 2.0, json_path=None, md_path=None, plot_path=None,
          reference: str | None = None, min_runs: int | None = None, rounds: int | None = None,
          progress: bool = True, baseline=None, native_precision: str | None = None) -> tuple[list[dict], str]:
    """Benchmark MODEL on each runtime, interleaved in one process (the protocol in the README).

    ``baseline``: a second model (typically the dense fp32 original of a compressed MODEL) run on the
    same stock runtimes in the same interleaved rounds, as contenders named ``<runtime>-fp32``, so
    the compressed model's speedup over its original comes from one run. ``precision`` is the
    OpenVINO hint; ``native_precision`` the native engine's attention precision (fp32, bf16 or int8; None: the
    runtime's default, int8 for classifiers on AVX-512 VNNI, else fp32).
    Returns the JSON rows (one per runtime x batch x seq) and the printed table."""
    from edgekit import bench as _bench
    from edgekit.runtimes import default_threads, load, load_tokenizer

    names = parse_runtimes(runtimes, installed=True)
    from .api_images import bench_image, image_family

    if image_family(model):  # image artifacts (CNN, ViT: native included): pixel_values feeds, image size
        rows = bench_image(model, names, batches, seqs, threads=threads, precision=precision, baseline=baseline,
                           progress=progress, native_precision=native_precision, budget_ms=budget_ms, min_time_s=min_time_s, min_runs=min_runs,
                           rounds=rounds, reference=reference)
        return rows, _bench.write_outputs(rows, json_path, md_path, plot_path)
    art = as_artifact(model, names, progress=progress)
    check_formats(art, names)
    _check_shapes(art, batches, seqs)  # before any runtime loads: a bad --seq costs nothing
    threads = threads or default_threads()
    hint = {"openvino": precision, "native": native_precision}
    sessions = {rt: load(art, rt, threads, hint.get(rt)) for rt in names}
    if baseline is not None:
        stock = [rt for rt in names if rt != "native"]
        if not stock:
            raise InputError("--baseline runs on the stock runtimes; list at least one of torch, onnxruntime, openvino")
        base = as_artifact(baseline, stock, progress=progress)
        check_formats(base, stock)
        _check_shapes(base, batches, seqs)
        if base.manifest.task != art.manifest.task:
            raise InputError(f"baseline task {base.manifest.task} differs from the model's {art.manifest.task}")
        sessions.update({f"{rt}-fp32": load(base, rt, threads, hint.get(rt)) for rt in stock})
    rows = _bench.bench(sessions, tokenizer=load_tokenizer(art), batches=list(batches), seqs=list(seqs),
                        threads=threads, budget_ms=budget_ms, min_time_s=min_time_s, min_runs=min_runs,
                        rounds=rounds, reference=reference,
                        model_name=art.manifest.model, progress=progress)
    return rows, _bench.write_outputs(rows, json_path, md_path, plot_path)


def _check_shapes(art: Artifact, batches: Sequence[int], seqs: Sequence[int]) -> None:
    """Batch sizes and sequence lengths against the artifact's manifest (``max_sequence_length``)."""
    if not batches or not seqs or min(batches) < 1 or min(seqs) < 2:
        raise InputError(f"batch sizes must be >= 1 and sequence lengths >= 2; got batch {list(batches)}, "
                         f"seq {list(seqs)}")
    top = art.manifest.max_sequence_length
    if max(seqs) > top:
        raise InputError(f"--seq {max(seqs)} is longer than the model's maximum sequence length {top} "
                         f"(max_sequence_length in {art.root}/manifest.json); allowed: 2..{top}")
