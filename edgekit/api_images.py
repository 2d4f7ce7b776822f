"""Image classifiers through the same commands as text models: export, compress, eval, bench.

:mod:`edgekit.api` hands a model over here when :func:`image_family` names one; this module is the one
dispatch between the two families: ``cnn`` (edgekit's EfficientNet-Lite: recipe ``ptq``, photo crops) and
``vit`` (Hugging Face ViT / DeiT: recipe ``tinymim``, fashion-mnist; :mod:`edgekit.vision`). The functions
take the same arguments and return the same shapes as their text counterparts.

>>> import edgekit.api as ek
>>> ek.compress("efficientnet-lite0", "out/lite0", recipe="ptq")["runtimes"]["openvino"]["agreement"]  # doctest: +SKIP
0.97
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .artifact import Artifact, is_artifact, load_artifact
from .errors import InputError
from .paths import cache_dir
from .status import say

IMAGE_TASK = "image-classification"
IMAGE_RUNTIMES = ("torch", "onnxruntime", "openvino")
VIT_RUNTIMES = IMAGE_RUNTIMES + ("native",)  # ViT artifacts also run on the native engine (their native/ folder)
EVAL_DATA = "photo-crops"  #: what reports call the held-out crops of real photos (edgekit.data.images.photo_crops)
DEFAULT_DATA = "bbc-news"  #: the CLI's --data default, which means "no data given" for an image model


def image_family(model) -> str | None:
    """``"cnn"``, ``"vit"`` or None (not an image model), from the zoo table, the manifest or config.json alone
    (nothing is built or loaded)."""
    if isinstance(model, Artifact):
        if model.task != IMAGE_TASK:
            return None
        return _artifact_family(model.root)
    name = str(model)
    path = Path(name)
    if path.is_dir() and is_artifact(path):
        try:
            m = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            return None  # the text path's loader names what is wrong
        if not isinstance(m, dict) or m.get("task") != IMAGE_TASK:
            return None
        return _artifact_family(path)
    from .zoo import ZOO  # imports torch: artifacts are decided above without it

    if name in ZOO:
        if ZOO[name][0] != IMAGE_TASK:
            return None
        from .vision.io import VISION_ZOO

        return "cnn" if name in VISION_ZOO else "vit"
    return "vit" if is_hf_image_model(model) else None


def _artifact_family(root: Path) -> str:
    """An image artifact's family from its torch folder: a Hugging Face config (``model_type``) is a ViT / DeiT."""
    try:
        cfg = json.loads((Path(root) / "torch" / "config.json").read_text())
    except (OSError, ValueError):
        return "cnn"
    return "vit" if isinstance(cfg, dict) and "model_type" in cfg else "cnn"


def is_image_model(model) -> bool:
    """True for an image zoo name, an image artifact (folder or :class:`Artifact`) or a ViT / DeiT folder."""
    return image_family(model) is not None


def is_image_data(data) -> bool:
    """True for a built-in image data set name (fashion-mnist)."""
    from .data.fashion_mnist import IMAGE_DATA

    return str(getattr(data, "source", data)) in IMAGE_DATA


def _entry(name: str):
    from .vision.io import VISION_ZOO

    if name not in VISION_ZOO:
        raise InputError(f"{name} is not a built-in image model; allowed: {', '.join(VISION_ZOO)} or an image artifact")
    return VISION_ZOO[name]


def _data_folder(data):
    """The labelled image folder named by ``data`` (a path, a DataSpec), or None for the default."""
    from .data.images import load_image_folder

    source = getattr(data, "source", data)
    if source is None or source == DEFAULT_DATA:
        return None
    if not Path(str(source)).is_dir():
        raise InputError(f"image models take --data DIR, a folder with one sub-folder of images per class; "
                         f"{source!r} is not a folder")
    return load_image_folder(source)


def _check_runtimes(runtimes: Sequence[str], family: str | None = "cnn") -> None:
    allowed = VIT_RUNTIMES if family == "vit" else IMAGE_RUNTIMES
    bad = [r for r in runtimes if r.removesuffix("-fp32") not in allowed]
    if bad:
        kind, also = ("ViT", "") if family == "vit" else ("CNN", " (ViTs also on native)")
        raise InputError(f"{kind} image models run on {', '.join(allowed)}{also}; not on {', '.join(bad)}")


def export_image(model, out_dir, formats=("onnx", "openvino"), progress: bool = True) -> Artifact:
    """Export an image model (fp32) to an artifact folder: a built-in CNN, or a ViT / DeiT (zoo name, folder)."""
    from edgekit.export import parse_formats

    if image_family(model) == "vit":
        from edgekit.export.vit_export import export_vit

        return export_vit(model, out_dir, formats=[f for f in parse_formats(formats) if f != "torch"],
                          progress=progress)
    from edgekit.export.image_export import export_image_artifact

    name = str(model)
    if isinstance(model, Artifact) or is_artifact(name):
        raise InputError(f"{model} is already an artifact; export takes a zoo name")
    entry = _entry(name)
    fmts = parse_formats(formats)
    say(f"exporting {name} (fp32) to {', '.join(f for f in fmts if f != 'torch') or 'torch'}", progress)
    return export_image_artifact(entry.build(), entry.preprocess, out_dir, model_name=name, formats=fmts,
                                 labels=list(entry.labels) if entry.labels else None)


def image_artifact(model, progress: bool = True) -> Artifact:
    """An artifact for an image MODEL: artifacts as they are (verified), zoo names exported once (fp32) into
    the cache and reused."""
    from . import __version__

    if isinstance(model, Artifact):
        return model
    if Path(str(model)).is_dir() and is_artifact(model):
        return load_artifact(model)
    entry = _entry(str(model))
    stamp = f"{model}:{__version__}"
    if entry.weights is not None:
        w = entry.weights()
        stamp += f":{w.resolve()}:{w.stat().st_mtime_ns}"
    dest = cache_dir() / "exports" / f"{model}-{hashlib.sha256(stamp.encode()).hexdigest()[:12]}"
    if is_artifact(dest):
        return load_artifact(dest)
    return export_image(model, dest, progress=progress)


def _reference_outputs(reference, pre, x: np.ndarray, threads: int | None, progress: bool) -> tuple[np.ndarray, str]:
    """Logits of the fp32 reference on ``x`` (torch): a zoo name is built in-process, an artifact runs its torch
    folder. Its preprocessing must be the evaluated artifact's, or the comparison would mean nothing."""
    from edgekit.evaluate import run_images
    from edgekit.runtimes import default_threads, load
    from edgekit.runtimes.torch_backend import TorchSession

    from .data.images import manifest_preprocess

    if Path(str(reference)).is_dir() and is_artifact(reference):
        ref_art = load_artifact(reference)
        if ref_art.task != IMAGE_TASK:
            raise InputError(f"reference {reference} is a {ref_art.task} model, not an image classifier")
        ref_pre = manifest_preprocess(ref_art.manifest.extra, f"reference {reference}")
        session = load(ref_art, "torch", threads)
    else:
        entry = _entry(str(reference))
        ref_pre = entry.preprocess
        session = TorchSession(entry.build().eval(), IMAGE_TASK, threads or default_threads(), "fp32", 0)
    if ref_pre != pre:
        raise InputError(f"reference {reference} preprocesses images differently ({ref_pre.to_dict()}) from the "
                         f"evaluated model ({pre.to_dict()})")
    return run_images(session, x, desc=f"reference {reference}", progress=progress), str(reference)


def evaluate_image(model, runtime: str = "torch", data=None, reference=None, threads: int | None = None,
                   precision: str | None = None, progress: bool = True) -> dict:
    """``eval`` for image models. Unlabelled (no ``data``): top-1 ``agreement`` with ``reference`` (default: the
    artifact's own fp32 model on the same runtime) on the held-out photo crops; ``data`` = a labelled image
    folder: ``accuracy`` on every image in it (and ``agreement`` too with a reference). ViT / DeiT models (or
    ``data`` = fashion-mnist): ``accuracy`` on the fashion-mnist test split."""
    if image_family(model) == "vit" or is_image_data(data):
        return _evaluate_vit(model, runtime, str(getattr(data, "source", data)) if is_image_data(data)
                             else "fashion-mnist", threads)
    from edgekit.evaluate import evaluate_images, run_images
    from edgekit.export.image_export import fp32_view
    from edgekit.runtimes import load

    from .api import check_formats
    from .data.images import manifest_preprocess, photo_crops, photo_source

    _check_runtimes([runtime])
    folder = _data_folder(data)  # bad data is refused before any model loads
    art = image_artifact(model, progress)
    check_formats(art, [runtime])
    pre = manifest_preprocess(art.manifest.extra, f"artifact {art.root}")
    if folder is not None:
        x, name = pre.apply(list(folder.paths)), folder.root
    else:
        x, name = pre.apply(photo_crops()[1]), EVAL_DATA
    source = photo_source().name if folder is None else None
    session = load(art, runtime, threads, precision if runtime == "openvino" else None)
    out = run_images(session, x, desc=f"{runtime} images", progress=progress)
    ref_out, ref_name = None, None
    if reference is not None:
        ref_out, ref_name = _reference_outputs(reference, pre, x, threads, progress)
    elif folder is None and art.manifest.extra.get("fp32") and runtime in ("onnxruntime", "openvino"):
        ref_session = load(fp32_view(art), runtime, threads, precision if runtime == "openvino" else None)
        ref_out, ref_name = run_images(ref_session, x, desc=f"{runtime} fp32", progress=progress), f"{runtime}-fp32"
    res = evaluate_images(session, x, data=name, labels=folder.labels if folder else None,
                          label_names=folder.label_names if folder else None, model_labels=art.manifest.labels,
                          reference_outputs=ref_out, outputs=out)
    if ref_name:
        res["reference"] = ref_name
    if source:
        res["photo_source"] = source  # photos, user (EDGEKIT_PHOTO_DIR) or gnome-backgrounds (renders, the fallback)
    return res


def compress_image(model, out_dir, recipe=None, data=None, seed: int | None = None, overwrite: bool = False,
                   resume: bool = False, max_steps: int | None = None, progress: bool = True) -> dict:
    """``compress`` for image models. CNNs: post-training int8 (recipe ``ptq``, the default) calibrated on crops
    of real photos; writes an artifact with onnx/ and openvino/ int8 and fp32 models, report.json and report.md.
    ViT / DeiT: the recipe's stages (default ``tinymim``) on fashion-mnist (:mod:`edgekit.compress.vision`).
    Returns the report."""
    if image_family(model) == "vit":
        return _compress_vit(model, out_dir, recipe, data, seed or 0, overwrite, resume, max_steps, progress)
    seed = seed if seed else None
    from edgekit.compress.config import load_recipe
    from edgekit.evaluate import evaluate_images, run_images
    from edgekit.export.image_export import export_image_artifact, fp32_view
    from edgekit.runtimes import default_threads, load
    from edgekit.runtimes.torch_backend import TorchSession

    from .artifact import check_output, finalize_manifest
    from .data.images import photo_crops, photo_source

    t0 = time.time()
    name = str(model)
    if isinstance(model, Artifact) or is_artifact(name):
        raise InputError(f"{model} is an artifact; compress takes a zoo name")
    check_output(out_dir, overwrite)
    rec = load_recipe(recipe or "ptq")
    q = rec.stage("quantize")
    other = [s.type for s in rec.stages if s.type != "quantize"]
    if q is None or other or q.qat_steps:
        raise InputError(f"image models take post-training int8 only (a recipe with one quantize stage and qat_steps 0, "
                         f"e.g. ptq); recipe {rec.name} has " + ", ".join(s.type for s in rec.stages)
                         + (f" with qat_steps {q.qat_steps}" if q is not None and q.qat_steps else ""))
    folder = _data_folder(data)
    entry = _entry(name)
    seed = rec.seed if seed is None else seed
    pre = entry.preprocess
    source = photo_source()
    say(f"compressing {name} ({IMAGE_TASK}) with recipe {rec.name}: int8, calibrated on {q.calibration_samples} "
        f"crops of {source.about}", progress)
    model_ = entry.build()
    cal, _ = photo_crops(n_calibration=q.calibration_samples, n_eval=0, seed=seed)
    held = photo_crops()[1]  # the held-out set every eval uses; its crops never overlap calibration's
    x_cal, x_eval = pre.apply(cal), pre.apply(held)
    weight_type = default_weight_type() if q.weight_bits == "auto" else "s8"
    reduce_range = q.weight_bits == 7
    st = time.time()
    art = export_image_artifact(model_, pre, out_dir, model_name=f"{name}+{rec.name}",
                                labels=list(entry.labels) if entry.labels else None, calibration=x_cal,
                                calibration_method=q.calibration, percentile=q.percentile, reduce_range=reduce_range,
                                weight_type=weight_type, float_ops=q.float_ops,
                                stream_percentile=q.stream_percentile, gptq=q.gptq, recipe=rec.to_dict(),
                                overwrite=overwrite)
    quant_s = round(time.time() - st, 1)
    say(f"scoring int8 against fp32 on {len(held)} held-out photo crops", progress)
    torch_session = TorchSession(model_.eval(), IMAGE_TASK, default_threads(), "fp32", 0)
    ref = run_images(torch_session, x_eval, desc="torch fp32", progress=progress)
    sets = [(EVAL_DATA, x_eval, None, ref)]
    baseline = {"agreement": 1.0, "n": len(held)}
    if folder is not None:
        x_lab = pre.apply(list(folder.paths))
        ref_lab = run_images(torch_session, x_lab, desc="torch fp32", progress=progress)
        sets.append((folder.root, x_lab, folder, ref_lab))
        base = evaluate_images(torch_session, x_lab, data=folder.root, labels=folder.labels,
                               label_names=folder.label_names, model_labels=entry.labels, outputs=ref_lab)
        baseline.update(accuracy=base["value"], n_labelled=base["n"])
    runtimes = {}
    for rt in ("onnxruntime", "openvino"):
        for label, view in ((rt, art), (f"{rt}-fp32", fp32_view(art))):
            s = load(view, rt)
            row = {"precision": s.precision}
            for data_name, x, fold, r in sets:
                res = evaluate_images(s, x, data=data_name, reference_outputs=r, progress=progress,
                                      labels=fold.labels if fold else None,
                                      label_names=fold.label_names if fold else None, model_labels=entry.labels)
                if fold is None:
                    row.update(agreement=res["agreement"], n=res["n"])
                else:
                    row.update(accuracy=res["value"], labelled_agreement=res["agreement"], n_labelled=res["n"])
            runtimes[label] = row
    compressed = {"agreement": min(runtimes[rt]["agreement"] for rt in ("onnxruntime", "openvino")), "n": len(held)}
    if folder is not None:
        compressed["accuracy"] = min(runtimes[rt]["accuracy"] for rt in ("onnxruntime", "openvino"))
    report = {"task": IMAGE_TASK, "data": folder.root if folder else None, "eval_data": EVAL_DATA, "recipe": rec.name,
              "model": name, "baseline": baseline, "compressed": compressed,
              "sparsity": {"total": 0.0, "pattern": None, "layers": {}}, "precision": "int8",
              "stages": [{"stage": "quantize", "calibration": q.calibration, "calibration_samples": len(cal),
                          "calibration_data": f"photo-crops ({source.name}: calibration pictures)", "reduce_range": reduce_range,
                          "onnxruntime": f"quantize_static QDQ, per-channel {weight_type} weights, u8 activations, float logits",
                          "openvino": "nncf.quantize, performance preset, "
                          + ("GPTQ weight rounding (1x1 convolutions, classifier)" if q.gptq else "bias correction")
                          + (", min/max activation ranges" if q.calibration == "minmax" else "")
                          + (", overflow fix (7-bit weights)" if weight_type == "u8" else ""),
                          "float_ops": list(q.float_ops), "stream_percentile": q.stream_percentile, "gptq": q.gptq,
                          "seconds": quant_s}],
              "runtimes": runtimes, "photo_source": source.to_dict(), "preprocess": pre.to_dict(), "seed": seed, "seconds": round(time.time() - t0, 1)}
    root = Path(art.root)
    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (root / "report.md").write_text(report_markdown(report))
    finalize_manifest(root, load_artifact(root, verify=False).manifest)
    return report


def default_weight_type() -> str:
    """ONNX Runtime int8 weights: ``s8`` where the CPU has VNNI, else ``u8``, because without VNNI its u8 x s8
    kernels saturate (:mod:`edgekit.export.image_export` has the figures)."""
    from edgekit.info import cpu_info

    isa = cpu_info().get("isa") or {}
    return "s8" if isa.get("avx512_vnni") or isa.get("avx_vnni") else "u8"


def report_markdown(r: dict) -> str:
    lines = [f"# edgekit compress report: {r['model']} ({r['recipe']})", "",
             f"task {r['task']}, int8 (post-training, calibrated on {r['stages'][0]['calibration_samples']} crops of "
             f"{_about(r)}), {r['seconds']} s", "",
             f"Top-1 agreement with the torch fp32 model on {r['compressed']['n']} held-out crops (other pictures "
             "than calibration's)"
             + (f"; accuracy on {r['data']}" if r.get("data") else "") + ":", "",
             "| runtime | precision | agreement |" + (" accuracy |" if r.get("data") else ""),
             "|---|---|---|" + ("---|" if r.get("data") else "")]
    for rt, v in r["runtimes"].items():
        lines.append(f"| {rt} | {v['precision']} | {v['agreement']:.4f} |"
                     + (f" {v['accuracy']:.4f} |" if r.get("data") else ""))
    if r.get("data"):
        lines += ["", f"torch fp32 accuracy on {r['data']}: {r['baseline']['accuracy']:.4f}"]
    return "\n".join(lines) + "\n"


def _about(report: dict) -> str:
    src = report.get("photo_source")
    return src["about"] if src else "real photos"


def bench_image(model, runtimes: Sequence[str], batches: Sequence[int], seqs: Sequence[int] | None = None,
                threads: int | None = None, precision: str | None = None, baseline=None, progress: bool = True,
                native_precision: str | None = None, **bench_kwargs) -> list[dict]:
    """``bench`` rows for an image model: every runtime listed, plus ``RUNTIME-fp32`` contenders from the artifact's
    own fp32 models (or from ``baseline``) for int8 artifacts. The image size comes from the artifact; ``seq`` in
    the rows is the image height, and ``image_shape`` ([C, H, W]) is added."""
    from edgekit import bench as _bench
    from edgekit.export.image_export import fp32_view
    from edgekit.runtimes import default_threads, load

    from .api import check_formats
    from .data.images import manifest_preprocess

    _check_runtimes(runtimes, image_family(model))
    art = image_artifact(model, progress)
    check_formats(art, runtimes)
    if seqs and list(seqs) != [128]:
        say("--seq does not apply to image models (their input size comes from the artifact); ignored", progress)
    pre = manifest_preprocess(art.manifest.extra, f"artifact {art.root}")
    threads = threads or default_threads()
    hint = {"openvino": precision, "native": native_precision}
    sessions = {rt: load(art, rt, threads, hint.get(rt)) for rt in runtimes}
    stock = [rt for rt in runtimes if rt not in ("torch", "native")]
    if baseline is not None:
        base = image_artifact(baseline, progress)
        check_formats(base, stock)
        sessions.update({f"{rt}-fp32": load(fp32_view(base), rt, threads, hint.get(rt)) for rt in stock})
    elif art.manifest.extra.get("fp32"):
        view = fp32_view(art)
        fmt = {"onnxruntime": "onnx", "openvino": "openvino"}
        sessions.update({f"{rt}-fp32": load(view, rt, threads, hint.get(rt)) for rt in stock
                         if fmt[rt] in art.manifest.extra["fp32"]})
    rows = _bench.bench(sessions, tokenizer=None, batches=list(batches), seqs=[pre.crop], threads=threads,
                        model_name=art.manifest.model, progress=progress,
                        feeds_fn=lambda b, _s: _bench.make_image_feeds(pre, b), **bench_kwargs)
    for r in rows:
        r["image_shape"] = pre.input_shape
    return rows


# ViT / DeiT (Hugging Face folders, vit-fmnist) on the built-in fashion-mnist split

def is_hf_image_model(model) -> bool:
    """Whether MODEL is a Hugging Face image-classification folder (ViT / DeiT), from its config.json alone."""
    from edgekit.zoo import hf_task

    path = Path(str(model))
    try:
        return path.is_dir() and (path / "config.json").is_file() and hf_task(path) == IMAGE_TASK
    except InputError:
        return False


def _compress_vit(model, out_dir, recipe, data, seed: int, overwrite: bool, resume: bool, max_steps: int | None,
                  progress: bool) -> dict:
    from edgekit.compress.config import load_recipe
    from edgekit.compress.report import read_report
    from edgekit.compress.vision import compress_images
    from edgekit.data.fashion_mnist import IMAGE_DATA

    from .api import check_compress_output

    check_compress_output(out_dir, resume=resume, overwrite=overwrite)
    load_recipe(recipe or "tinymim")
    # the CLI's default --data (bbc-news) means the image default here
    source = str(getattr(data, "source", data))
    img_data = source if source in IMAGE_DATA else ("fashion-mnist" if data is None or source == DEFAULT_DATA else None)
    if img_data is None:
        raise InputError(f"image models take --data {', '.join(IMAGE_DATA)}; got {data}")
    art = compress_images(model, out_dir, recipe=recipe, data=img_data, max_steps=max_steps, seed=seed,
                          progress=progress)
    return read_report(art)


def _evaluate_vit(model, runtime: str = "torch", data: str = "fashion-mnist", threads: int | None = None,
                  limit: int | None = None) -> dict:
    """``edgekit eval`` for image classifiers: MODEL is an artifact (any runtime it has) or a zoo name / ViT
    folder (torch only)."""
    from edgekit.artifact import load_artifact
    from edgekit.data.fashion_mnist import image_splits
    from edgekit.data.images import manifest_preprocess
    from edgekit.zoo import resolve

    test = image_splits(data)["test"]
    ref = resolve(model)
    if ref.kind == "artifact":
        from edgekit.runtimes import load

        art = load_artifact(ref.path)
        prep = manifest_preprocess(art.manifest.extra, f"artifact {ref.path}")
        session = load(art, runtime, threads)
    else:
        if runtime != "torch":
            raise InputError(f"a model folder runs on torch only; export it first to use {runtime!r}")
        from edgekit.runtimes.torch_backend import ModuleSession
        from edgekit.vision.vit_models import IMAGE_TASK, load_image_classifier

        module, prep = load_image_classifier(ref.path)
        session = ModuleSession(module, IMAGE_TASK)
    n = len(test) if limit is None else min(limit, len(test))
    from edgekit.evaluate import evaluate_session

    out = evaluate_session(session, prep.apply(test.pixels[:n]), test.labels[:n])
    return {**out, "data": str(data), "runtime": runtime}
