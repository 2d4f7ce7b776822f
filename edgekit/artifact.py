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
import stat
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


# ------------------------------------------------------------------------------------------ path safety
# An artifact is copied between machines and downloaded from colleagues: what its manifest names must
# stay inside its folder. Everything below decides from lstat/stat/readlink alone, before any file is
# opened, so a path to /etc/passwd, a symbolic link leaving the folder or a FIFO (which would block a
# reader forever) is refused without being read.

_KIND = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link"}


def _kind(mode: int) -> str:
    return _KIND.get(stat.S_IFMT(mode), "a special file")


def _inside(root_real: str, real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _unsafe_rel(rel: object) -> str | None:
    """Why ``rel`` cannot name something inside a folder (None if its spelling is fine)."""
    if not isinstance(rel, str) or not rel:
        return "is empty" if rel == "" else f"is not a path ({type(rel).__name__})"
    if "\0" in rel:
        return "contains a NUL character"
    if rel.startswith("/"):
        return "is an absolute path"
    if ".." in rel.split("/"):
        return "contains '..'"
    if os.path.normpath(rel) == ".":
        return "names the artifact folder itself"
    return None


def check_entry(root: Path, entry: str, rel: object, want: str = "file") -> Path:
    """The path ``rel`` of manifest entry ``entry`` (e.g. ``formats.onnx = 'onnx/model.onnx'``), checked without
    reading anything: relative, no ``..``, resolving (through any symbolic links) inside ``root``, and an existing regular
    file (``want="file"``) or a regular file or folder (``want="any"``). Raises :class:`ArtifactError`
    naming the entry and the reason."""
    def bad(why: str) -> ArtifactError:
        return ArtifactError(f"artifact {root}: manifest entry {entry} {why}; every path in a "
                             "manifest must name a file inside the artifact folder")

    why = _unsafe_rel(rel)
    if why:
        raise bad(why)
    path = root / str(rel)
    try:
        root_real = os.path.realpath(root)
        real = os.path.realpath(path)
        if not _inside(root_real, real):
            raise bad(f"leads to {real}, outside the artifact folder (through a symbolic link)")
        st = os.stat(path)
    except FileNotFoundError:
        raise bad("is missing") from None
    except (OSError, ValueError) as exc:  # a symlink loop, a name the OS cannot take, ...
        raise bad(f"cannot be looked up ({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISREG(st.st_mode) or (want == "any" and stat.S_ISDIR(st.st_mode)):
        return path
    raise bad(f"is {_kind(st.st_mode)}, not {'a regular file' if want == 'file' else 'a regular file or folder'}")


def _walk(root: Path) -> list[str]:
    """Every regular file under ``root`` (relative, sorted), refusing special files and symbolic links
    that lead outside. Symbolic links are not followed (their targets are checked)."""
    root_real = os.path.realpath(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise ArtifactError(f"artifact {root}: cannot look up {rel} ({exc.strerror})") from None
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(full)
                if not _inside(root_real, target):
                    raise ArtifactError(f"artifact {root}: {rel} is a symbolic link to {target}, outside the "
                                        "artifact folder; an artifact must be self-contained")
                if name in filenames and os.path.isfile(full):
                    found.append(rel)
            elif stat.S_ISREG(st.st_mode):
                found.append(rel)
            elif not stat.S_ISDIR(st.st_mode):
                raise ArtifactError(f"artifact {root}: {rel} is {_kind(st.st_mode)}; an artifact holds regular "
                                    "files and folders only")
    return sorted(r for r in found if r != MANIFEST)


def _all_files(root: Path) -> list[str]:
    return _walk(root)


def check_safetensors(path: Path, error: type[Exception] = InputError) -> None:
    """Refuse an empty, truncated or garbled ``.safetensors`` file with one line naming it (the library's own
    errors say "header too small" and nothing about which file). Reads the header only: 8 bytes of length,
    then that many bytes of JSON whose tensors' byte ranges must fit the file."""
    def bad(why: str) -> Exception:
        return error(f"{path} is not a valid safetensors file: {why}")

    size = path.stat().st_size
    if size < 8:
        raise bad("it is empty" if size == 0 else f"it has only {size} bytes")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8 or n > 100 << 20:
            raise bad(f"its header claims {n} bytes but the file has {size}")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (ValueError, RecursionError):
            raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data):
            raise bad(f"tensor {name!r} lies outside the file (truncated?)")


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
            if fmt == "native":  # only compress writes it: it is the pruned int8 model packed for edgekit's engine
                how = "the native format is written by `edgekit compress MODEL -o DIR` (export has no native format)"
            else:
                how = f"re-export with `edgekit export MODEL -o DIR --format {fmt}`"
            raise InputError(f"artifact {self.root} has no {fmt!r} format; it has: {have} ({how})")
        return self.root / self.manifest.formats[fmt]

    @property
    def tokenizer_path(self) -> Path | None:
        return self.root / self.manifest.tokenizer if self.manifest.tokenizer else None

    def __repr__(self) -> str:
        return f"Artifact({str(self.root)!r}, task={self.task!r}, formats={sorted(self.manifest.formats)})"


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def _read_manifest(root: Path) -> Manifest:
    mpath = check_entry(root, MANIFEST, MANIFEST) if (root / MANIFEST).exists() or (root / MANIFEST).is_symlink() \
        else None
    if mpath is None:
        raise ArtifactError(f"{root} is not an edgekit artifact (no {MANIFEST})")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # JSON or UTF-8 errors; absurdly deep nesting
        raise ArtifactError(f"{mpath} is malformed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        # checked before the schema: a newer format may have fields this edgekit does not know
        writer = raw.get("edgekit_version")
        writer = f"edgekit {writer}" if isinstance(writer, str) else "an unknown edgekit"
        if version > FORMAT_VERSION:
            raise ArtifactError(f"artifact {root} is newer than this edgekit: format version {version}, written by "
                                f"{writer}; edgekit {__version__} reads format version {FORMAT_VERSION} "
                                "(upgrade edgekit to load it)")
        raise ArtifactError(f"artifact {root} has the old format version {version} (written by {writer}); edgekit "
                            f"{__version__} reads format version {FORMAT_VERSION} (re-export it with this edgekit)")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise ArtifactError(f"{mpath} is malformed: {where}: {err['msg']}") from None


def load_artifact(path: str | os.PathLike, verify: bool = True) -> Artifact:
    """Read ``manifest.json``, check that every path it names stays inside the folder, and (unless
    ``verify=False``) check every file's sha256.

    The path checks always run and read nothing (lstat / stat / readlink only): every entry of ``files``,
    ``formats`` and ``tokenizer`` must be relative, without ``..``, resolve inside the folder through any
    symbolic links, and be a regular file (formats and the tokenizer may be folders); no file in the folder
    may be a FIFO, device or socket, or a symbolic link leading outside. With ``verify`` every file in the
    folder must be listed with its sha256 and match it, and every format must point at listed files, so
    everything a runtime reads is checked.

    >>> load_artifact("out/bbc").manifest.formats        # doctest: +SKIP
    {'torch': 'torch', 'onnx': 'onnx/model.onnx', 'openvino': 'openvino/model.xml', 'native': 'native'}
    """
    root = Path(path)
    if not root.is_dir():
        why = "not a folder" if root.exists() else "no such folder"
        raise ArtifactError(f"{root} is not an edgekit artifact ({why})")
    manifest = _read_manifest(root)
    for rel in manifest.files:
        check_entry(root, f"files[{rel!r}]", rel)
    for fmt, rel in manifest.formats.items():
        check_entry(root, f"formats.{fmt} = {rel!r}", rel, want="any")
    if manifest.tokenizer is not None:
        check_entry(root, f"tokenizer = {manifest.tokenizer!r}", manifest.tokenizer, want="any")
    present = _walk(root)  # refuses FIFOs, devices and symbolic links leading outside, anywhere in the folder
    if verify:
        extra = sorted(set(present) - set(manifest.files))
        if extra:
            raise ArtifactError(f"artifact {root} has files not in its manifest: {', '.join(extra[:3])}")
        listed = {os.path.normpath(r) for r in manifest.files}
        for fmt, rel in manifest.formats.items():
            rel = os.path.normpath(rel)
            if rel not in listed and not any(f.startswith(rel + "/") for f in listed):
                raise ArtifactError(f"artifact {root}: manifest entry formats.{fmt} = {rel!r} names no file listed "
                                    "with a checksum in the manifest")
        for rel, digest in manifest.files.items():
            if sha256_file(root / rel) != digest:
                raise ArtifactError(f"checksum mismatch for {rel} in {root}: the file was modified or corrupted")
        for rel in manifest.files:
            if rel.endswith(".safetensors"):
                check_safetensors(root / rel, ArtifactError)
    return Artifact(root, manifest)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would set it for every thread meanwhile)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _share_modes(root: Path) -> None:
    """Folders 0755 and files 0644 (less what the umask removes): temporary-file helpers create 0700 / 0600,
    and an artifact copied for a service account must be readable by it."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirnames, filenames in os.walk(root):
        for name, mode in [(d, 0o777) for d in dirnames] + [(f, 0o666) for f in filenames]:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):  # a link's own mode means nothing; its target is checked on load
                os.chmod(full, mode & ~mask)


def finalize_manifest(root: Path, manifest: Manifest) -> Manifest:
    """Hash every file under ``root``, write ``manifest.json`` and make the folder readable by others."""
    manifest.files = {rel: sha256_file(root / rel) for rel in _all_files(root)}
    (root / MANIFEST).write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
    _share_modes(root)
    return manifest


def check_output(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Check that ``out_dir`` may be written (before any work): it does not exist, is an empty folder, or
    is an edgekit artifact and ``overwrite`` is set. A non-empty folder that is not an artifact is never
    replaced, so a mistyped ``-o`` cannot delete someone's files."""
    out = Path(out_dir).absolute()
    if not out.exists() and not out.is_symlink():
        return out
    if not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder; choose another -o")
    if not any(out.iterdir()):
        return out
    if not is_artifact(out):
        raise InputError(f"output folder {out} is not empty and is not an edgekit artifact; choose another -o "
                         "(edgekit replaces only artifacts, with --overwrite)")
    if not overwrite:
        raise InputError(f"output folder {out} already holds an edgekit artifact; pass --overwrite to replace it")
    return out


@contextlib.contextmanager
def staging_dir(out_dir: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``out_dir``; on success it replaces ``out_dir`` by rename.

    On any exception (or KeyboardInterrupt) the temporary folder is removed and ``out_dir`` is untouched.
    An existing ``out_dir`` is replaced only if it is an artifact (or empty) and ``overwrite`` is set.
    The folder ends up 0755 (less the umask), not the 0700 of a temporary folder.
    """
    out = check_output(out_dir, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
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
