"""The serve settings: one typed, validated config (the CLI and the Python API both build it)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekit.errors import InputError


class ServeConfig(BaseModel):
    """How to serve one artifact.

    >>> cfg = ServeConfig(artifact="out/bbc", port=9000, max_batch=16)
    >>> cfg.max_wait_ms
    2.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    artifact: Path
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    runtime: str | None = Field(None, description="None: the first of native, onnxruntime, openvino, torch the artifact has")
    threads: int | None = Field(None, ge=1, description="intra-op threads of the one session (None: physical cores)")
    max_batch: int = Field(32, ge=1, description="most inputs in one session run")
    max_wait_ms: float = Field(2.0, ge=0, le=10_000, description="how long a batch waits for more inputs to arrive")
    max_inputs: int = Field(256, ge=1, description="most inputs one request may carry; more is a 413")
    max_length: int | None = Field(None, ge=2, description="token limit per input (None: the model's maximum)")
    auto_truncate: bool = Field(False, description="cut over-long inputs to max_length instead of answering 413")
    model_name: str | None = Field(None, description="name reported to clients (None: the artifact's model)")
    access_log: bool = False

    @field_validator("artifact")
    @classmethod
    def _is_artifact(cls, v: Path) -> Path:
        from edgekit.artifact import MANIFEST

        if not v.exists():
            raise ValueError(f"no such folder: {v}")
        if not (v / MANIFEST).is_file():
            raise ValueError(f"{v} is not an edgekit artifact (no {MANIFEST}); make one with "
                             f"'edgekit export MODEL -o DIR' or 'edgekit compress MODEL -o DIR'")
        return v

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str | None) -> str | None:
        from edgekit.runtimes import RUNTIMES

        if v is not None and v not in RUNTIMES:
            raise ValueError(f"unknown runtime {v!r}; allowed: {', '.join(RUNTIMES)}")
        return v

    @classmethod
    def create(cls, **kwargs) -> "ServeConfig":
        """Like the constructor, but a bad value is an :class:`InputError` naming the field."""
        try:
            return cls(**kwargs)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            raise InputError(f"serve {field}: {msg}") from None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict) -> "ServeConfig":
        return cls.create(**d)


# Preference when --runtime is not given: the artifact's fastest format first.
RUNTIME_PREFERENCE = (("native", "native"), ("onnxruntime", "onnx"), ("openvino", "openvino"), ("torch", "torch"))


def pick_runtime(formats: dict[str, str] | set[str], wanted: str | None) -> str:
    """The runtime to serve on: ``wanted`` if the artifact has its format, else the first one it has."""
    have = set(formats)
    fmt_of = dict(RUNTIME_PREFERENCE)
    if wanted is not None:
        if fmt_of[wanted] not in have:
            raise InputError(f"runtime {wanted!r} needs the {fmt_of[wanted]!r} format, which this artifact lacks; "
                             f"it has: {', '.join(sorted(have)) or 'none'}")
        return wanted
    for rt, fmt in RUNTIME_PREFERENCE:
        if fmt in have:
            return rt
    raise InputError(f"the artifact has no format any runtime can run (it has: {', '.join(sorted(have)) or 'none'})")
