"""``compress()`` for image classifiers (ViT / DeiT): the recipe's stages on ``pixel_values``.

The same stage configs and the same techniques as for text (:mod:`edgekit.compress`): the student from
:func:`~edgekit.compress.stages.distill.make_student` (layer dropping through the architecture adapter), the
relation loss of :func:`edgekit.compress.distill.relation_loss`, the masks of
:class:`edgekit.compress.prune.Pruner`, the fake-quant modules of :mod:`edgekit.formats.fake_quant`. Only the
batches differ (images have no padding, so every token is real), and the distill stage may train on its own
(``distill.steps``) before pruning, with ``distill.ablate_relation`` distilling a second student without the
relation loss for the report's ablation.

>>> art = compress_images("vit-fmnist", "out/vit", recipe="tinymim")     # doctest: +SKIP
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.data.fashion_mnist import image_splits
from edgekit.errors import InputError
from edgekit.status import say


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 500) -> float:
    """Top-1 accuracy of a pixel_values -> logits module (eval mode) on normalised images."""
    was = model.training
    model.eval()
    hits = 0
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            hits += int((model(torch.from_numpy(x[i:i + batch])).argmax(1).numpy() == y[i:i + batch]).sum())
    model.train(was)
    return round(hits / max(len(y), 1), 4)


def forward_capture(model, x: torch.Tensor, relation_layer: int | None):
    """(logits, hidden states, (q, k, v) of ``relation_layer`` or None) in one forward pass."""
    from edgekit.arch import encoder

    enc = encoder(model)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    if relation_layer is not None:
        for kind in ("q", "k", "v"):
            hooks.append(enc.layers[relation_layer].linears[kind].register_forward_hook(
                lambda _m, _i, out, kind=kind: captured.__setitem__(kind, out)))
    try:
        hid = enc.hidden_states(x, None)
        logits = enc.head(hid[-1])
    finally:
        for h in hooks:
            h.remove()
    qkv = (captured["q"], captured["k"], captured["v"]) if relation_layer is not None else None
    return logits, hid, qkv


class ImageDistiller:
    """The distill config's losses for image classifiers: logits KL (x T^2), label cross-entropy, hidden-state
    MSE through the layer map, and TinyMIM's relation loss from teacher layer ``t_rel`` to the student's last."""

    def __init__(self, teacher, student, cfg):
        from edgekit.arch import encoder, num_layers
        from edgekit.compress.distill import default_relation_layer

        self.teacher, self.student, self.cfg = teacher.eval(), student, cfg
        for p in teacher.parameters():
            p.requires_grad_(False)
        t_layers, s_layers = num_layers(teacher), num_layers(student)
        self.layer_map = cfg.student_layers or list(range(t_layers))[:s_layers]
        self.heads = encoder(student).heads
        self.t_rel = cfg.relation_teacher_layer if cfg.relation_teacher_layer is not None else \
            default_relation_layer(t_layers, s_layers)
        if not 0 <= self.t_rel < t_layers:
            raise InputError(f"distill.relation_teacher_layer {self.t_rel} out of range; the teacher has {t_layers} "
                             f"layers (allowed 0..{t_layers - 1})")
        self.s_rel = s_layers - 1

    def loss(self, x: torch.Tensor, y: torch.Tensor):
        from edgekit.compress.distill import relation_loss

        c = self.cfg
        rel = c.relation_weight > 0
        with torch.no_grad():
            t_out, t_hid, t_qkv = forward_capture(self.teacher, x, self.t_rel if rel else None)
        s_out, s_hid, s_qkv = forward_capture(self.student, x, self.s_rel if rel else None)
        parts: dict[str, torch.Tensor] = {}
        if c.logits_weight > 0:
            T = c.temperature
            parts["logits"] = c.logits_weight * F.kl_div(F.log_softmax(s_out / T, -1), F.softmax(t_out / T, -1),
                                                         reduction="batchmean") * T * T
        if c.label_weight > 0:
            parts["labels"] = c.label_weight * F.cross_entropy(s_out, y)
        if c.hidden_weight > 0:
            pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.layer_map)]
            parts["hidden"] = c.hidden_weight * sum(F.mse_loss(s_hid[i], t_hid[j]) for i, j in pairs) / len(pairs)
        if rel:
            ones = torch.ones(x.shape[0], s_qkv[0].shape[1], dtype=torch.long)
            parts["relation"] = c.relation_weight * relation_loss(t_qkv, s_qkv, self.heads, ones)
        total = sum(parts.values()) if parts else s_out.sum() * 0
        return total, {k: float(v.detach()) for k, v in parts.items()}


def train(student, loss_fn, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch: int, seed: int,
          desc: str, progress: bool, on_step=None, pruner=None) -> dict:
    """``steps`` AdamW steps on ``loss_fn(x_batch, y_batch)``; masks re-applied after every step. Linear decay
    after a 5% warm-up."""
    from tqdm.auto import tqdm

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else max(0.0, 1 - (s - warm) / max(1, steps - warm)))
    gen = torch.Generator().manual_seed(seed)
    order, pos, parts = torch.randperm(len(y), generator=gen), 0, {}
    student.train()
    with tqdm(total=steps, desc=desc, disable=not progress, unit="step", mininterval=5) as bar:
        for step in range(steps):
            if on_step:
                on_step(step)
            if pos + batch > len(order):
                order, pos = torch.randperm(len(y), generator=gen), 0
            idx = order[pos:pos + batch]
            pos += batch
            loss, parts = loss_fn(x[idx], y[idx])
            loss.backward()
            if pruner:
                pruner.accumulate()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            if pruner:
                pruner.apply()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update()
    student.eval()
    return {k: round(v, 4) for k, v in parts.items()}


def compress_images(model, out_dir, recipe=None, data="fashion-mnist", max_steps: int | None = None, seed: int = 0,
                    progress: bool = True):
    """Compress an image classifier (zoo name or ViT / DeiT folder) with a recipe (default ``tinymim``); write an
    artifact with report.json and report.md to ``out_dir`` and return it."""
    from edgekit.arch import adapter_for, encoder, encoder_linears, module_names
    from edgekit.compress.pipeline import resolve_recipe
    from edgekit.compress.stages.distill import make_student, objective
    from edgekit.finetune import seed_everything
    from edgekit.vision.vit_models import load_image_classifier
    from edgekit.zoo import resolve

    rec = resolve_recipe(recipe or "tinymim", seed)
    ref = resolve(model)
    if ref.kind != "hf":
        raise InputError(f"{model} is an artifact; compress takes a zoo name or a Hugging Face model folder")
    check_image_recipe(rec)
    parts = image_splits(data, rec.seed)
    t0 = time.time()
    seed_everything(rec.seed)
    teacher, prep = load_image_classifier(ref.path)
    adapter_for(teacher)
    n_cls = teacher.model.config.num_labels
    if n_cls != len(parts["train"].label_names):
        raise InputError(f"the model has {n_cls} classes but {data} has {len(parts['train'].label_names)}")
    x = {s: prep.apply(d.pixels) for s, d in parts.items()}
    y = {s: d.labels for s, d in parts.items()}
    xt, yt = torch.from_numpy(x["train"]), torch.from_numpy(y["train"])
    steps = (lambda n: n if max_steps is None else min(n, max_steps))
    say(f"scoring {ref.name} on the {data} test split", progress)
    baseline = {"accuracy": accuracy(teacher, x["test"], y["test"]), "n": int(len(y["test"]))}
    goal = objective(rec)
    student = make_student(teacher, goal)
    stages, fq, pruner = [], None, None
    for cfg in rec.stages:
        st = time.time()
        info: dict = {"stage": cfg.type}
        if cfg.type == "distill":
            n = steps(cfg.steps)
            if n and cfg.ablate_relation and cfg.relation_weight > 0:
                plain = copy.deepcopy(student)
                off = cfg.model_copy(update={"relation_weight": 0.0})
                info["without_relation"] = {"losses": train(plain, ImageDistiller(teacher, plain, off).loss, xt, yt, n,
                                                            cfg.lr, rec.batch, rec.seed, "distill (no relation)",
                                                            progress),
                                            "accuracy": accuracy(plain, x["test"], y["test"])}
                del plain
            dist = ImageDistiller(teacher, student, cfg)
            info.update(relation_teacher_layer=dist.t_rel, student_layers=cfg.student_layers, steps=n,
                        layer_map=dist.layer_map)
            if n:
                info["losses"] = train(student, dist.loss, xt, yt, n, cfg.lr, rec.batch, rec.seed, "distill", progress)
            info["accuracy"] = accuracy(student, x["test"], y["test"])
        elif cfg.type == "prune":
            from edgekit.compress.allocation import allocate
            from edgekit.compress.prune import Pruner, cubic_sparsity, total_sparsity

            linears = encoder_linears(student)
            heads = encoder(student).heads
            pruner = Pruner(linears, cfg.pattern, cfg.criterion, allocate(linears, cfg, heads, rec), heads,
                            cfg.head_sparsity)
            n = steps(cfg.steps)
            ramp = max(1, int(cfg.ramp * n))

            def on_step(step: int) -> None:
                if step % cfg.update_every == 0 or step == ramp:
                    pruner.update(cubic_sparsity(min(step, ramp), ramp, 1.0), cfg.sparsity)

            info["losses"] = train(student, ImageDistiller(teacher, student, goal).loss, xt, yt, n, cfg.lr, rec.batch,
                                   rec.seed + 1, "prune", progress, on_step, pruner)
            pruner.update(1.0, cfg.sparsity)
            info.update(steps=n, sparsity=total_sparsity(linears), accuracy=accuracy(student, x["test"], y["test"]))
        elif cfg.type == "quantize":
            from edgekit.compress.stages.quantize import resolve_weight_bits
            from edgekit.formats import fake_quant as FQ

            bits = resolve_weight_bits(cfg.weight_bits)
            fq = FQ.insert_fake_quant(student, skip=tuple(cfg.fp32_layers), weight_bits=bits)
            cal = x["train"][torch.randperm(len(yt), generator=torch.Generator().manual_seed(rec.seed + 2))
                             [:cfg.calibration_samples].numpy()]
            with torch.inference_mode():
                for i in range(0, len(cal), 64):
                    student(torch.from_numpy(cal[i:i + 64]))
            FQ.finish_calibration(fq, cfg.calibration, cfg.percentile)
            info.update(weight_bits=bits, samples=len(cal), ptq_accuracy=accuracy(student, x["test"], y["test"]))
            n = steps(cfg.qat_steps)
            if n:
                info["losses"] = train(student, ImageDistiller(teacher, student, goal).loss, xt, yt, n, cfg.lr,
                                       rec.batch, rec.seed + 3, "qat", progress, pruner=pruner)
            info.update(qat_steps=n, accuracy=accuracy(student, x["test"], y["test"]))
        info["seconds"] = round(time.time() - st, 1)
        stages.append(info)
        say(f"{cfg.type}: accuracy {info.get('accuracy')}", progress)

    from edgekit.compress.prune import total_sparsity
    from edgekit.formats import fake_quant as FQ
    from edgekit.export.vit_export import export_vit_artifact

    qstate = FQ.quant_state(fq) if fq else None
    compressed = {"accuracy": accuracy(student, x["test"], y["test"]), "n": int(len(y["test"]))}
    if fq:
        FQ.remove_fake_quant(student)
    linears = encoder_linears(student)
    prune = rec.stage("prune")
    names = module_names(student)
    report = {"task": "image-classification", "data": str(data), "recipe": rec.name, "model": ref.name,
              "baseline": baseline, "compressed": compressed,
              "sparsity": {"total": total_sparsity(linears), "pattern": prune.pattern if prune else None,
                           "layers": {n: float((m.weight == 0).float().mean()) for n, m in linears.items()}},
              "precision": "int8" if qstate else "fp32", "weight_bits": qstate["weight_bits"] if qstate else None,
              "stages": stages, "max_steps": max_steps, "student_layers": goal.student_layers,
              "ablation": _ablation(stages, baseline)}
    fp32 = [names[n] for n in linears if qstate and n not in qstate["layers"]]
    act = {names[n]: (v["x_scale"], v["x_zp"]) for n, v in qstate["layers"].items()} if qstate else None
    cal = {"pixel_values": x["train"][:64]} if qstate else None
    art = export_vit_artifact(student, prep, out_dir, model_name=f"{ref.name}+{rec.name}",
                                labels=list(parts["train"].label_names), qstate=qstate, int8_calibration=cal,
                                fp32_layers=fp32, act_qparams=act, recipe=rec.to_dict(), progress=progress,
                              native=True)
    from edgekit.evaluate import evaluate_session

    report["runtimes"] = {}
    for rt in ("torch", "onnxruntime", "openvino", "native"):
        from edgekit.runtimes import load

        res = evaluate_session(load(art, rt), x["test"], y["test"])
        report["runtimes"][rt] = {"accuracy": res["value"], "n": res["n"]}
    report["seconds"] = round(time.time() - t0, 1)
    write_image_reports(art.root, report)
    return art


def check_image_recipe(rec) -> None:
    """Refuse, before any work, recipe options the image driver does not implement (one line each)."""
    prune, quant = rec.stage("prune"), rec.stage("quantize")
    if prune is not None and prune.schedule != "gradual":
        raise InputError(f"prune.schedule {prune.schedule!r} is not supported for image models; allowed: gradual")
    if quant is not None and (quant.float_ops or quant.stream_percentile is not None or quant.gptq):
        raise InputError("quantize.float_ops, quantize.stream_percentile and quantize.gptq apply to image CNNs "
                         "(efficientnet-lite0, recipe ptq), not to ViTs")
    if quant is not None and quant.accuracy_budget is not None:
        raise InputError("quantize.accuracy_budget (the sensitivity pass) is not supported for image models yet")


def _ablation(stages: list[dict], baseline: dict) -> dict | None:
    d = next((s for s in stages if s["stage"] == "distill" and "without_relation" in s), None)
    if d is None:
        return None
    return {"teacher": baseline["accuracy"], "student_with_relation": d["accuracy"],
            "student_without_relation": d["without_relation"]["accuracy"], "steps": d["steps"]}


def write_image_reports(root: Path, report: dict) -> None:
    """report.json and report.md into an artifact folder (the manifest's hashes are updated)."""
    from edgekit.artifact import finalize_manifest, load_artifact

    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (root / "report.md").write_text(report_markdown(report))
    finalize_manifest(root, load_artifact(root, verify=False).manifest)


def report_markdown(r: dict) -> str:
    pct = (lambda v: "-" if v is None else f"{100 * v:.2f}")
    lines = [f"# {r['model']} compressed with `{r['recipe']}` on {r['data']}", "",
             "| model | test accuracy (%) |", "|---|---|",
             f"| teacher | {pct(r['baseline']['accuracy'])} |",
             f"| compressed (torch, {r['precision']}) | {pct(r['compressed']['accuracy'])} |"]
    for rt, v in r.get("runtimes", {}).items():
        lines.append(f"| compressed on {rt} | {pct(v['accuracy'])} |")
    lines += ["", f"Sparsity (encoder Linears, pattern {r['sparsity']['pattern']}): "
              f"{100 * r['sparsity']['total']:.1f}%; student layers (teacher indices): {r['student_layers']}.", ""]
    ab = r.get("ablation")
    if ab:
        lines += ["## Ablation: TinyMIM relation loss", "",
                  f"Students distilled for {ab['steps']} steps, before pruning and int8:", "",
                  "| student | test accuracy (%) |", "|---|---|",
                  f"| logits + labels + relations (softmax(QK^T), softmax(VV^T)) | {pct(ab['student_with_relation'])} |",
                  f"| logits + labels only | {pct(ab['student_without_relation'])} |",
                  f"| (teacher) | {pct(ab['teacher'])} |", ""]
    lines += ["## Stages", "", "| stage | accuracy (%) | seconds |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {pct(s.get('accuracy'))} | {s['seconds']} |" for s in r["stages"]]
    return "\n".join(lines) + "\n"
