"""``compress()``: run a recipe on a trained model and end at an Artifact (with report.json).

The driver only walks the recipe: it builds the student and the shared training state
(:class:`~edgekit.compress.training.Run`), scores the teacher, calls each stage's registered handler
(:mod:`edgekit.compress.stages`) and scores the student after it, then exports the student to every format
(ONNX, OpenVINO, native), scores the export on each runtime and adds the reports. Ctrl-C leaves the checkpoint
(``OUT.ckpt/``) and no artifact: the artifact is written to a temporary folder and renamed only at the end.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from edgekit.data import DataSpec, as_spec, load_dataset
from edgekit.errors import InputError
from edgekit.status import say

from . import training
from .config import Recipe, load_recipe
from .extra_text import distill_settings, load_distill_texts, report_entry
from .scoring import label_names, probe_drop, score_model, score_runtimes, score_student
from .stages import handler_for
from .stages.distill import make_student, objective

#: tasks the native writer stores (edgekit.formats.native may list more in its own TASKS)
NATIVE_TASKS = ("feature-extraction", "text-classification", "token-classification")


def compress(model, out_dir, recipe=None, data="bbc-news", max_steps: int | None = None, seed: int = 0,
             resume: bool = False, progress: bool = True, distill_data=None):
    """Compress MODEL (zoo name or HF folder) with a recipe; write an artifact to ``out_dir`` and return it
    (:class:`edgekit.artifact.Artifact`; ``report.json`` inside holds the figures).

    Under ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1) the ranks join a gloo group and train
    data-parallel on shards of the recipe's global batch (:mod:`edgekit.compress.training`). Rank 0
    evaluates and writes checkpoints, the artifact and the report, and returns the artifact; the other
    ranks return None once rank 0 has finished. The group is destroyed before returning.

    >>> art = compress("minilm-l6-bbc", "out/bbc")                             # doctest: +SKIP
    >>> json.loads((art.root / "report.json").read_text())["sparsity"]["total"]  # doctest: +SKIP

    ``data`` is a built-in name, a path or a :class:`edgekit.data.DataSpec`. A classifier must have one output
    per class of the data; its ``id2label`` becomes the data's label names when it has only placeholders
    (``LABEL_0``...), and the artifact (manifest ``labels``, torch config ``id2label``) carries them.
    ``distill_data`` (unlabelled text: a path or a registered text source such as ``english-mix``) replaces the
    source of the recipe's ``distill_data`` section (:mod:`edgekit.compress.extra_text`); the teacher labels those
    passages and the training stages train on them, with or instead of the training split.
    """
    group = training.setup()
    try:
        art = _compress(model, out_dir, recipe, as_spec(data), max_steps, seed, resume, progress and group.is_main,
                        distill_data)
        training.barrier(group)  # the others return once the artifact is complete
        return art
    finally:
        training.close(group)


def resolve_recipe(recipe=None, seed: int = 0) -> Recipe:
    """The recipe a run uses: a built-in name or YAML file, with ``seed`` (when non-zero) replacing its own."""
    rec = load_recipe(recipe)
    return rec.model_copy(update={"seed": seed}) if seed else rec


def recipe_text(recipe=None, seed: int = 0) -> str:
    """The resolved recipe as YAML (what ``compress --print-recipe`` prints), with what ``auto`` settings
    resolve to on this CPU as comments."""
    import yaml

    from .stages.quantize import resolve_weight_bits

    rec = resolve_recipe(recipe, seed)
    lines = [yaml.safe_dump(rec.to_dict(), sort_keys=False).rstrip()]
    qcfg = rec.stage("quantize")
    if qcfg is not None and qcfg.weight_bits == "auto":
        lines.append(f"# quantize.weight_bits auto resolves to {resolve_weight_bits('auto')} on this CPU")
    return "\n".join(lines)


def distill_texts(source, data: DataSpec, recipe=None, seed: int = 0, progress: bool = False,
                  task: str | None = None) -> list[str]:
    """The passages the run distils on with ``--distill-data source`` (the recipe's ``distill_data`` settings,
    or their defaults), without the data's validation and test texts (token classification: its sentences,
    words joined by spaces); one InputError line when unreadable or empty. ``compress`` calls it before loading
    the model, so bad text is refused first."""
    from .extra_text import distill_settings, load_distill_texts

    rec = resolve_recipe(recipe, seed)
    return load_distill_texts(distill_settings(rec, source), as_spec(data), rec.seed, progress, task=task)


def match_labels(config, task: str, data: DataSpec) -> None:
    """Give a classifier's Hugging Face ``config`` the data's label names (``id2label``, ``label2id``), or refuse
    one whose head does not fit the data (one line). Token classifiers get the data's tag names the same way.
    Feature extractors are left alone."""
    if task == "token-classification":
        from edgekit.data import load_token_dataset

        names = load_token_dataset(data, "train").label_names
    elif task == "text-classification":
        names = load_dataset(data, "train").label_names
    else:
        return
    have = [config.id2label[i] for i in sorted(config.id2label)]
    if len(have) != len(names):
        what, one = ("tags", "tag") if task == "token-classification" else ("classes", "class")
        raise InputError(f"the model has {len(have)} {what} but {data} has {len(names)} ({', '.join(names)}); "
                         f"compress a classifier fine-tuned on this data, with one output per {one}")
    if have != [f"LABEL_{i}" for i in range(len(have))] and have != list(names):
        raise InputError(f"the model's labels ({', '.join(have)}) are not {data}'s in label-id order "
                         f"({', '.join(names)}); compress a classifier fine-tuned on this data")
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}


def _compress(model, out_dir, recipe, data: DataSpec, max_steps: int | None, seed: int, resume: bool, progress: bool,
              distill_data=None):
    """The whole job on this process; under torchrun ranks other than 0 stop after training (None)."""
    from edgekit.finetune import seed_everything
    from edgekit.zoo import load_torch, resolve

    rec = resolve_recipe(recipe, seed)
    if out_dir is None:
        raise InputError("compress needs an output folder")
    ref = resolve(model)
    if ref.kind != "hf":
        raise InputError(f"{model} is an artifact; compress takes a zoo name or a Hugging Face model folder")
    out = Path(out_dir).absolute()
    ckpt = out.with_name(out.name + ".ckpt")
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    t0 = time.time()
    seed_everything(rec.seed)
    say(f"loading {ref.name} and tokenizing the {data} training texts", progress)
    teacher, tok = load_torch(ref)
    teacher.eval()
    from edgekit.models import hf_model_of

    match_labels(hf_model_of(teacher).config, ref.task, data)
    dd = distill_settings(rec, distill_data)
    extra = load_distill_texts(dd, data, rec.seed, progress, task=ref.task) if dd is not None else None
    goal = objective(rec)
    student = make_student(teacher, goal)
    run = training.Run(rec, goal, teacher, student, tok, ref.task, data, max_steps, ckpt, progress,
                       extra=extra, extra_use=dd.use if dd else "add",
                       extra_calibration=bool(dd and dd.calibration))
    if resume:
        run.resume_state = run.load_checkpoint()
        if run.resume_state is None:
            raise InputError(f"--resume: no checkpoint in {ckpt}")
        restore_finished_stages(run, rec)
    probe = ref.task == "feature-extraction"
    say(f"scoring the original model on the {data} test split" + (" (and its linear probe)" if probe else "")
        + "; training starts after that", progress)
    baseline, run.teacher_out = score_model(teacher, tok, ref.task, data, rec.max_length, probe=probe)
    done = {r["stage"] for r in run.stage_reports}
    for cfg in rec.stages:
        if cfg.type in done:
            continue
        st = time.time()
        info = handler_for(cfg)(run, cfg)
        if cfg.changes_student:
            info.update(score_student(run))
        info.update(stage=cfg.type, seconds=round(time.time() - st, 1))
        run.stage_reports.append(info)
        run.resume_state = None
        run.save_checkpoint(cfg.type + "-done", 0)
    if run.dist.active:  # final masks (set after the last training step) and qparams must agree too
        training.check_identical(run.synced_state(), "final student", run.dist)
    if not run.dist.is_main:
        return None
    report = {"task": ref.task, "data": str(data), "recipe": rec.name, "model": ref.name, "baseline": baseline,
              "compressed": probe_drop(baseline, score_student(run, probe=probe))}
    if extra is not None:
        report["distill_data"] = report_entry(dd, extra)
    art = _export(run, ref, rec, out, report, progress)
    report["runtimes"] = score_runtimes(art, tok, data, run.teacher_out, baseline)
    from .report import format_sizes, write_reports

    report["size_mb"] = format_sizes(art)
    report["seconds"] = round(time.time() - t0, 1)
    art = write_reports(art.root, report)
    shutil.rmtree(ckpt, ignore_errors=True)
    return art


def restore_finished_stages(run: training.Run, rec: Recipe) -> None:
    """After a checkpoint is loaded: what the stages it had finished left on the student besides weights
    (masks, fake-quant modules), which the loop below skips. A stage stopped midway restores its own state."""
    from .stages.prune import restore_pruned
    from .stages.quantize import restore_quantized

    st = run.resume_state
    done = {r["stage"] for r in st["stage_reports"]}
    for cfg in rec.stages:
        if cfg.type == "prune" and "prune" in done:
            restore_pruned(run, cfg, st["masks"])
        elif cfg.type == "quantize" and "quantize" in done:
            restore_quantized(run, st)


def _export(run: training.Run, ref, rec: Recipe, out: Path, report: dict, progress: bool):
    """Take the fake-quant modules out, fill the report's model figures and write the artifact (every format,
    native included) with the activation qparams QAT trained with."""
    from edgekit.arch import encoder_linears, module_names
    from edgekit.data import calibration_feeds
    from edgekit.export import export_artifact
    from edgekit.formats import fake_quant as FQ
    from edgekit.formats import native as native_format
    from edgekit.formats.native import write_native

    from .prune import total_sparsity

    student, tok, data = run.student, run.tok, run.data
    qstate = FQ.quant_state(run.fq) if run.fq else None
    FQ.remove_fake_quant(student)
    linears = encoder_linears(student)
    prune = rec.stage("prune")
    report["sparsity"] = {"total": total_sparsity(linears), "pattern": prune.pattern if prune else None,
                          "layers": {n: float((m.weight == 0).float().mean()) for n, m in linears.items()}}
    report.update(precision="int8" if qstate else "fp32", weight_bits=qstate["weight_bits"] if qstate else None,
                  stages=run.stage_reports, max_steps=run.max_steps)
    report["student_layers"] = objective(rec).student_layers or None
    labels = label_names(student, ref.task)
    names = module_names(student)
    # the recipe's fp32_layers plus those the sensitivity pass kept: every Linear without qparams
    fp32 = [names[n] for n in linears if qstate and n not in qstate["layers"]]
    cal = calibration_feeds(tok, 64, data, rec.seed, rec.max_length, ref.task) if qstate else None
    native = ref.task in NATIVE_TASKS or ref.task in getattr(native_format, "TASKS", ())

    def extra(tmp: Path) -> dict[str, str]:
        if qstate:
            (tmp / "torch" / "quant.json").write_text(json.dumps(qstate, indent=2))
        if not native:
            return {}
        write_native(student, ref.task, qstate, tmp / "native", labels)
        return {"native": "native"}

    # ONNX Runtime gets the activation qparams QAT trained with (its own static calibration of the
    # FFN-output input cost 1.6 points on minilm-l6-bbc).
    act = {names[n]: (v["x_scale"], v["x_zp"]) for n, v in qstate["layers"].items()} if qstate else None
    return export_artifact(student, tok, out, task=ref.task, model_name=f"{ref.name}+{rec.name}",
                           formats=("onnx", "openvino"), labels=labels, int8_calibration=cal, fp32_layers=fp32,
                           act_qparams=act, weight_bits=qstate["weight_bits"] if qstate else None,
                           recipe=rec.to_dict(), extra_files=extra, progress=progress)

