"""The quantize stage: its config and its handler.

int8 as :mod:`edgekit.formats.int8` defines it: fake-quant modules at every encoder Linear
(:mod:`edgekit.formats.fake_quant`), activation ranges calibrated on training text, optionally a sensitivity
pass that keeps the costliest Linears fp32 (:mod:`edgekit.compress.sensitivity`), then QAT under the recipe's
distillation objective.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from edgekit.arch.base import LINEAR_KINDS
from edgekit.errors import InputError

from .base import StageConfig, register

if TYPE_CHECKING:
    from ..training import Run


class QuantizeConfig(StageConfig):
    """edgekit's int8 scheme: u8 per-tensor asymmetric activations at every encoder Linear input,
    s8 per-output-channel symmetric weights, int32 accumulation."""

    type: Literal["quantize"] = "quantize"
    calibration: Literal["minmax", "percentile"] = "minmax"
    percentile: float = Field(99.99, gt=90.0, le=100.0)
    calibration_samples: int = Field(128, ge=1)
    qat_steps: int = Field(60, ge=0, description="quantization-aware training steps (0 = PTQ only)")
    lr: float = Field(2e-5, gt=0.0)
    fp32_layers: list[str] = Field(default_factory=list, description="native names kept fp32, e.g. layers.5.ffn_out")
    accuracy_budget: float | None = Field(None, ge=0.0, description="sensitivity pass: metric points (accuracy x 100, or "
                                                                    "embedding cosine to the teacher x 100) int8 may lose "
                                                                    "on the validation split before Linears are kept fp32; "
                                                                    "None = off")
    sensitivity_samples: int = Field(128, ge=1, description="validation examples the sensitivity pass evaluates on")
    float_ops: list[Literal["stem", "depthwise", "projection"]] = Field(
        default_factory=list, description="image CNNs (recipe ptq): convolutions kept in float by the stock "
                                          "runtimes' int8: stem (the first convolution), depthwise, projection "
                                          "(1x1 convolutions with no activation after them)")
    stream_percentile: float | None = Field(None, gt=90.0, le=100.0, description="image CNNs (recipe ptq): the "
                                            "residual stream's activation ranges (outputs of convolutions with no "
                                            "activation after them, and of Adds) from this percentile of the "
                                            "calibration values (both tails) instead of min / max; None = off")
    gptq: bool = Field(False, description="image CNNs (recipe ptq): OpenVINO's int8 weights of the 1x1 convolutions "
                                          "and the classifier rounded by GPTQ (each rounding error compensated by the "
                                          "weights not yet rounded, through the calibration inputs' second moment) "
                                          "instead of NNCF's round-to-nearest and bias correction")
    weight_bits: Literal[7, 8, "auto"] = Field("auto", description="8: weights in [-127, 127]; 7: in [-63, 63] "
                                                                  "(exact with vpmaddubsw on AVX2 CPUs without "
                                                                  "VNNI; ONNX Runtime's reduce_range); auto: 7 when "
                                                                  "the kernels' active ISA is avx2, else 8")

    @field_validator("fp32_layers")
    @classmethod
    def _native_names(cls, v):
        for name in v:
            parts = name.split(".")
            if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in LINEAR_KINDS:
                raise ValueError(f"{name!r} is not a native Linear name layers.<i>.<{'|'.join(LINEAR_KINDS)}>")
        return v


def resolve_weight_bits(setting: int | str) -> int:
    """The weight bits a quantize stage uses: ``weight_bits`` itself, or for ``"auto"`` 7 when edgekit's
    kernels run their AVX2 path (no AVX-512): its fast int8 kernels use ``vpmaddubsw``, whose int16 pair sums
    are exact only for |q_w| <= 64. On AVX-512 (VNNI or not) 7 bits buy no speed, so auto is 8 there. The ISA
    is the one the kernels run (``EDGEKIT_ISA`` can force a lower one); without built kernels, /proc/cpuinfo.
    On an AVX2 host the default recipe scored the same with 7 and 8 bits."""
    if setting != "auto":
        return int(setting)
    return 7 if _avx2_kernels() else 8


def _avx2_kernels() -> bool:
    from edgekit.info import cpu_info, kernels_isa

    isa = kernels_isa()  # ref | avx2 | avx512 | avx512_vnni, None when the kernels are not built
    if isa is not None:
        return isa == "avx2"
    flags = cpu_info()["isa"]
    return bool(flags.get("avx2")) and not flags.get("avx512bw")


@register(QuantizeConfig)
def run_quantize(run: "Run", cfg: QuantizeConfig) -> dict:
    from edgekit.arch import encoder_linears
    from edgekit.formats import fake_quant as FQ

    from .. import training
    from ..scoring import score_student

    if cfg.float_ops or cfg.stream_percentile is not None or cfg.gptq:
        raise InputError("quantize.float_ops, quantize.stream_percentile and quantize.gptq apply to image CNNs (recipe "
                         "ptq) only; use quantize.fp32_layers for transformer Linears")
    linears = encoder_linears(run.student)
    missing = [n for n in cfg.fp32_layers if n not in linears]
    if missing:
        raise InputError(f"quantize.fp32_layers: {', '.join(missing)} not in this model (layers 0.."
                         f"{max(int(n.split('.')[1]) for n in linears)})")
    resumed = run.resumed("qat")
    # "auto" depends on the CPU: a resumed run keeps the bits it trained with, and under torchrun rank 0 decides
    bits = (resumed.get("weight_bits") if resumed else None) or resolve_weight_bits(cfg.weight_bits)
    run.weight_bits = bits = training.broadcast(bits, run.dist) if run.dist.active else bits
    run.fq = FQ.insert_fake_quant(run.student, skip=tuple(cfg.fp32_layers), weight_bits=bits)
    out = {"calibration": cfg.calibration, "samples": cfg.calibration_samples, "weight_bits": bits}
    if resumed:
        chosen = restore_qparams(run, resumed["qparams"])
        if cfg.accuracy_budget is not None:  # its measurements are not in the checkpoint
            out["sensitivity"] = {"keep_fp32": chosen, "resumed": True}
    else:
        # the fake-quant modules observe their inputs on training rows as the task feeds them (pairs, words),
        # half of them distillation passages when the recipe's distill_data.calibration says so
        observe(run.student, run.task, run.calibration_feeds(cfg.calibration_samples))
        FQ.finish_calibration(run.fq, cfg.calibration, cfg.percentile)
        if cfg.accuracy_budget is not None:
            out["sensitivity"] = _sensitivity(run, cfg)
            _keep_fp32(run, out["sensitivity"]["keep_fp32"])
    out["fp32_layers"] = sorted(n for n in linears if n not in run.fq)
    steps = run.steps(cfg.qat_steps)
    if steps > 0:
        out["ptq"] = score_student(run)
        start = resumed["step"] if resumed else 0
        run.train(steps, cfg.lr, "qat", None, start)
    out["qat_steps"] = steps
    return out


def observe(model, task: str, cal: dict) -> None:
    """Run ``cal`` (calibration feeds) through ``model`` 16 rows at a time, each batch cut to its longest row, so
    that its fake-quant modules observe their input ranges."""
    from edgekit.runtimes.torch_backend import ModuleSession

    session = ModuleSession(model, task)
    for i in range(0, len(cal["input_ids"]), 16):
        rows = {k: v[i : i + 16] for k, v in cal.items()}
        longest = int(rows["attention_mask"].sum(1).max())
        session.run({k: v[:, :longest] for k, v in rows.items()})


def restore_qparams(run: "Run", saved: dict) -> list[str]:
    """Put a checkpoint's activation qparams back into ``run.fq`` (already inserted); the Linears without
    saved qparams were kept fp32 by the sensitivity pass before the stop and are unwrapped again (returned)."""
    chosen = [n for n in run.fq if n not in saved]
    _keep_fp32(run, chosen)
    for n, (s, z) in saved.items():
        run.fq[n].set_qparams(s, z)
        run.fq[n].mode = "quant"
    return chosen


def restore_quantized(run: "Run", state: dict) -> None:
    """A run resumed after its quantize stage finished: the fake-quant modules as that stage left them
    (the saved weight bits and activation qparams), so training and export go on in int8."""
    from edgekit.formats import fake_quant as FQ

    run.weight_bits = int(state["weight_bits"])
    run.fq = FQ.insert_fake_quant(run.student, weight_bits=run.weight_bits)
    restore_qparams(run, state["qparams"])


def _sensitivity(run: "Run", cfg: QuantizeConfig) -> dict:
    """The sensitivity pass (:mod:`edgekit.compress.sensitivity`) on rank 0; every rank adopts its choice."""
    from .. import sensitivity as S
    from .. import training

    dist = getattr(run, "dist", None)
    rec = None
    if dist is None or dist.is_main:
        probe = S.ValidationProbe(run.student, run.teacher, run.tok, run.task, run.data, run.recipe.max_length,
                                  cfg.sensitivity_samples)
        rec = S.sensitivity_pass(run.fq, probe, cfg.accuracy_budget)
    if dist is not None and dist.active:
        rec = training.broadcast(rec, dist)
    return rec


def _keep_fp32(run: "Run", names) -> None:
    from edgekit.formats import fake_quant as FQ

    FQ.remove_fake_quant(run.student, only=set(names))
    for n in names:
        del run.fq[n]
