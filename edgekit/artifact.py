"""Artifacts: self-describing folders that any runtime loads with one call.

Layout (only the formats that were exported are present)::

    DIR/manifest.json        format version, edgekit version, task, inputs/outputs, files + sha256
    DIR/tokenizer/           tokenizer files
    DIR/torch/               config.json + model.safetensors (the torch runtime runs these)
    DIR/onnx/model.onnx
    DIR/openvino/model.xml, model.bin
    DIR/native/              edgekit's packed sparse-int8 format

Runtimes read the manifest; they never guess. Every file is listed with its sha256 and checked on load.
Folders are written to a temporary sibling and renamed into place, so a failure or Ctrl-C leaves
nothing half-written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field, ValidationError

from . import __version__
from .errors import ArtifactError, InputError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FORMATS = ("torch", "onnx", "openvino", "native")


class TensorSpec(BaseModel):
    name: str
    dtype: str
    shape: list[int | str]


class Manifest(BaseModel):
    format_version: int
    edgekit_version: str
    task: str
    model: str = Field(description="the model reference this artifact was made from")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_sequence_length: int = 512
    formats: dict[str, str] = Field(default_factory=dict, description="format -> path inside the folder")
    precision: dict[str, str] = Field(default_factory=dict, description="format -> fp32|int8")
    tokenizer: str | None = "tokenizer"
    labels: list[str] | None = None
    recipe: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _all_files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
    )


class Artifact:
    """A loaded, verified artifact folder."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = root
        self.manifest = manifest

    @property
    def task(self) -> str:
        return self.manifest.task

    def path(self, fmt: str) -> Path:
        """Path of one format's files; a clear error if that format was not exported."""
        if fmt not in self.manifest.formats:
            have = ", ".join(sorted(self.manifest.formats)) or "none"
            raise InputError(f"artifact {self.root} has no {fmt!r} format; it has: {have} (re-export with --format {fmt})")
        return self.root / self.manifest.formats[fmt]

    @property
    def tokenizer_path(self) -> Path | None:
        return self.root / self.manifest.tokenizer if self.manifest.tokenizer else None

    def __repr__(self) -> str:
        return f"Artifact({str(self.root)!r}, task={self.task!r}, formats={sorted(self.manifest.formats)})"


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_artifact(path: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read ``manifest.json`` and check every file's sha256 (``verify=False`` skips the hashes)."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{root} is not an edgekit artifact (no {MANIFEST})")
    try:
        manifest = Manifest.model_validate(json.loads(mpath.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(f"{mpath} is malformed: {first}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(
            f"{root} has artifact format version {manifest.format_version}; this edgekit reads version "
            f"{FORMAT_VERSION} (re-export it with edgekit {__version__})"
        )
    if verify:
        for rel, digest in manifest.files.items():
            f = root / rel
            if not f.is_file():
                raise ArtifactError(f"artifact {root} is incomplete: {rel} is missing")
            if sha256_file(f) != digest:
                raise ArtifactError(f"checksum mismatch for {rel} in {root}: the file was modified or corrupted")
        extra = set(_all_files(root)) - set(manifest.files)
        if extra:
            raise ArtifactError(f"artifact {root} has files not in its manifest: {', '.join(sorted(extra)[:3])}")
    return Artifact(root, manifest)


def finalize_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file under ``root`` and write ``manifest.json``."""
    manifest.files = {rel: sha256_file(root / rel) for rel in _all_files(root)}
    (root / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; on success it replaces ``out_dir`` by rename.

    On any exception (or KeyboardInterrupt) the temporary folder is removed and ``out_dir`` is untouched.
    An existing ``out_dir`` is replaced only if it is an artifact (or empty) and ``overwrite`` is set.
    """
    out = Path(out_dir).absolute()
    if out.exists():
        if not out.is_dir():
            raise InputError(f"output {out} exists and is not a folder")
        if any(out.iterdir()) and not is_artifact(out):
            raise InputError(f"output folder {out} is not empty and is not an edgekit artifact; choose another -o")
        if not overwrite:
            raise InputError(f"output folder {out} exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
