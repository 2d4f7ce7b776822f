"""An artifact cannot make edgekit read outside its folder.

Artifacts are copied between machines and downloaded from colleagues, so a manifest is untrusted input:
every path it names must stay inside the folder, and the check must come before any file is read. The
tests watch every file the process opens (a Python audit hook) while an artifact loads.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgekit.artifact import FORMAT_VERSION, load_artifact
from edgekit.cli import main
from edgekit.errors import ArtifactError, EdgekitError

# ----------------------------------------------------------------------------------------- open audit
_OPENED: list[str] | None = None


def _audit(event: str, args) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # hooks cannot be removed; this one records only while a test asks it to


class opened_files:
    """``with opened_files() as seen:`` lists (real paths of) every file opened inside the block."""

    def __enter__(self) -> list[str]:
        global _OPENED
        _OPENED = []
        return _OPENED

    def __exit__(self, *exc) -> None:
        global _OPENED
        _OPENED = None


def _outside(seen: list[str], root: Path) -> list[str]:
    base = os.path.realpath(root) + os.sep
    return [p for p in seen if not p.startswith(base)]


# ----------------------------------------------------------------------------------------- a small artifact
@pytest.fixture()
def art(tmp_path, make_standin) -> Path:
    return make_standin(tmp_path / "art")


@pytest.fixture()
def secret(tmp_path) -> Path:
    """A file next to the artifact that it must never be able to make us read."""
    s = tmp_path / "elsewhere" / "model.onnx"
    s.parent.mkdir()
    s.write_bytes(b"onnx bytes")  # the same content as the real one: a checksum alone would not notice
    return s


def _edit(root: Path, **changes) -> None:
    m = json.loads((root / "manifest.json").read_text())
    for key, value in changes.items():
        m[key] = value
    (root / "manifest.json").write_text(json.dumps(m))


def _rehash(root: Path, rel: str) -> None:
    """Record ``rel``'s current content in the manifest, as an attacker writing the manifest would."""
    import hashlib

    m = json.loads((root / "manifest.json").read_text())
    m["files"][rel] = hashlib.sha256(Path(root, rel).read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(m))


def test_intact_artifact_loads_and_reads_only_inside(art):
    with opened_files() as seen:
        loaded = load_artifact(art)
    assert loaded.path("onnx") == art / "onnx" / "model.onnx"
    assert _outside(seen, art) == []
    assert any(p.endswith("model.safetensors") for p in seen)  # the checksums were really computed


@pytest.mark.parametrize("rel, why", [
    ("../elsewhere/model.onnx", "contains '..'"),
    ("onnx/../../elsewhere/model.onnx", "contains '..'"),
    ("{secret}", "is an absolute path"),
    ("", "is empty"),
    (".", "names the artifact folder itself"),
    ("onnx/missing.onnx", "is missing"),
])
def test_format_path_must_stay_inside(art, secret, rel, why):
    _edit(art, formats={"torch": "torch", "onnx": rel.replace("{secret}", str(secret))})
    with opened_files() as seen, pytest.raises(ArtifactError) as exc:
        load_artifact(art)
    assert "manifest entry formats.onnx" in str(exc.value) and why in str(exc.value)
    assert _outside(seen, art) == []


def test_files_entry_with_dotdot_is_refused_before_reading(art, secret):
    m = json.loads((art / "manifest.json").read_text())
    m["files"]["../elsewhere/model.onnx"] = m["files"]["onnx/model.onnx"]
    (art / "manifest.json").write_text(json.dumps(m))
    with opened_files() as seen, pytest.raises(ArtifactError, match=r"files\['../elsewhere/model.onnx'\] .* '\.\.'"):
        load_artifact(art)
    assert str(secret) not in seen


def test_symlink_to_outside_file_with_the_right_content_is_refused(art, secret):
    onnx = art / "onnx" / "model.onnx"
    onnx.unlink()
    onnx.symlink_to(secret)  # same bytes, so the recorded sha256 still matches
    leaves = r"files\['onnx/model.onnx'\] leads to .*/elsewhere/model.onnx, outside the artifact folder"
    with opened_files() as seen, pytest.raises(ArtifactError, match=leaves):
        load_artifact(art)
    assert os.path.realpath(secret) not in seen


def test_symlink_to_etc_passwd_is_refused_without_reading_it(art):
    vocab = art / "tokenizer" / "vocab.txt"
    vocab.unlink()
    vocab.symlink_to("/etc/passwd")
    with opened_files() as seen, pytest.raises(ArtifactError) as exc:
        load_artifact(art, verify=False)  # even without checksums: the paths are always checked
    assert "/etc/passwd" in str(exc.value) and "outside the artifact folder" in str(exc.value)
    assert "/etc/passwd" not in seen


def test_symlinked_folder_leaving_the_artifact_is_refused(art, tmp_path):
    shutil.move(str(art / "tokenizer"), str(tmp_path / "tok"))
    (art / "tokenizer").symlink_to(tmp_path / "tok")
    with opened_files() as seen, pytest.raises(ArtifactError, match="tokenizer"):
        load_artifact(art)
    assert _outside(seen, art) == []


def test_unlisted_symlink_leaving_is_refused(art):
    (art / "onnx" / "extra.bin").symlink_to("/etc/hostname")
    with pytest.raises(ArtifactError, match=r"onnx/extra.bin is a symbolic link to /etc/hostname, outside"):
        load_artifact(art, verify=False)


def test_symlink_inside_the_folder_is_fine(art):
    (art / "onnx" / "model.onnx").rename(art / "onnx" / "real.onnx")
    (art / "onnx" / "model.onnx").symlink_to("real.onnx")
    _rehash(art, "onnx/real.onnx")
    load_artifact(art)


@pytest.mark.timeout(60)  # reading a FIFO would block forever
def test_fifo_is_refused_without_blocking(art):
    vocab = art / "tokenizer" / "vocab.txt"
    vocab.unlink()
    os.mkfifo(vocab)
    for verify in (True, False):
        with pytest.raises(ArtifactError, match=r"files\['tokenizer/vocab.txt'\] is a FIFO, not a regular file"):
            load_artifact(art, verify=verify)
    m = json.loads((art / "manifest.json").read_text())
    del m["files"]["tokenizer/vocab.txt"]  # unlisted, it is still found by the walk over the folder
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"tokenizer/vocab.txt is a FIFO; an artifact holds regular files"):
        load_artifact(art, verify=False)


@pytest.mark.timeout(60)
def test_fifo_manifest_is_refused_without_blocking(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    os.mkfifo(root / "manifest.json")
    with pytest.raises(ArtifactError, match="manifest entry manifest.json is a FIFO"):
        load_artifact(root)


def test_link_to_a_device_is_refused(art):
    (art / "torch" / "model.safetensors").unlink()
    (art / "torch" / "model.safetensors").symlink_to("/dev/zero")  # endless bytes if it were read
    with pytest.raises(ArtifactError, match=r"files\['torch/model.safetensors'\] leads to /dev/zero"):
        load_artifact(art)


def test_format_pointing_at_an_unlisted_file_is_refused(art):
    (art / "onnx" / "other.onnx").write_bytes(b"x")
    _edit(art, formats={"torch": "torch", "onnx": "onnx/other.onnx"})
    with pytest.raises(ArtifactError, match="other.onnx"):
        load_artifact(art)


def test_newer_format_version_says_so_and_names_the_writer(art):
    _edit(art, format_version=999, edgekit_version="9.1.0", brand_new_field=[1, 2])
    with pytest.raises(ArtifactError, match=r"newer than this edgekit: format version 999, written by edgekit 9.1.0"):
        load_artifact(art)


def test_written_artifact_is_readable_by_others(tmp_path, make_standin):
    old = os.umask(0o022)
    try:
        root = make_standin(tmp_path / "a")
    finally:
        os.umask(old)
    for p in [root, *root.rglob("*")]:
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_staging_folder_mode_is_not_0700(tmp_path):
    """mkdtemp makes 0700 folders; the artifact folder itself must come out 0755 (umask 022)."""
    from edgekit.artifact import staging_dir

    old = os.umask(0o022)
    try:
        with staging_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


# ----------------------------------------------------------------------------------------- through the CLI
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("edgekit: error: ")
    return err


@pytest.mark.parametrize("command", [["eval"], ["bench", "--runtime", "onnxruntime"]])
def test_cli_refuses_dotdot_format_with_exit_2(capsys, art, secret, command):
    _edit(art, formats={"torch": "torch", "onnx": "../elsewhere/model.onnx"})
    with opened_files() as seen:
        code = main([command[0], str(art), *command[1:]])
    assert code == 2
    err = _one_line_error(capsys)
    assert "manifest entry formats.onnx = '../elsewhere/model.onnx' contains '..'" in err
    assert str(secret) not in seen


def test_cli_refuses_symlink_to_etc_passwd_with_exit_2(capsys, art):
    (art / "tokenizer" / "vocab.txt").unlink()
    (art / "tokenizer" / "vocab.txt").symlink_to("/etc/passwd")
    with opened_files() as seen:
        assert main(["eval", str(art), "--runtime", "onnxruntime"]) == 2
    assert "files['tokenizer/vocab.txt'] leads to /etc/passwd, outside the artifact folder" in _one_line_error(capsys)
    assert "/etc/passwd" not in seen


# ----------------------------------------------------------------------------------------- fuzz
_names = st.sampled_from([
    "torch", "onnx/model.onnx", "tokenizer", "tokenizer/vocab.txt", "torch/model.safetensors", "manifest.json",
    "../elsewhere/model.onnx", "..", "/etc/passwd", "/dev/zero", "", ".", "./onnx/model.onnx", "onnx//model.onnx",
    "link_out", "link_out/x", "link_in", "fifo", "loop", "nul\x00byte", "onnx/../torch", "\ud800", "~/x",
    "onnx/model.onnx/", "a" * 300,
]) | st.text(max_size=12)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)
_digest = st.sampled_from(["0" * 64, "not-a-digest"]) | st.text(max_size=4)
_FIELDS = ("format_version", "edgekit_version", "task", "model", "inputs", "outputs", "formats", "tokenizer",
           "files", "extra")


@st.composite
def _manifests(draw):
    """Mostly well-formed manifests (so the path checks are reached) whose paths are fuzzed, sometimes with
    fields deleted or replaced by junk, sometimes junk altogether."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_json)
    m = {"format_version": draw(st.sampled_from([FORMAT_VERSION] * 8 + [0, 2, 999])), "edgekit_version": "0",
         "task": "feature-extraction", "model": "m",
         "inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
         "outputs": [{"name": "embeddings", "dtype": "float32", "shape": ["batch", 4]}]}
    m["formats"] = draw(st.dictionaries(st.sampled_from(["torch", "onnx", "openvino", "native", "x"]), _names,
                                        max_size=4))
    m["tokenizer"] = draw(_names | st.none() | st.just("tokenizer"))
    files = dict(_GOOD_FILES) if draw(st.booleans()) else {}  # the real listing: verify=True can pass
    files.update(draw(st.dictionaries(_names, _digest, max_size=3)))
    m["files"] = files
    for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=2)):
        if draw(st.booleans()):
            m.pop(key, None)
        else:
            m[key] = draw(_json)
    return m


_GOOD_FILES: dict[str, str] = {}  # filled by the fixture with the stand-in artifact's real sha256 listing


@pytest.fixture(scope="module")
def fuzz_roots(tmp_path_factory, make_standin) -> dict[str, Path]:
    """Two artifacts next to a file and a FIFO they must not reach: ``clean`` has only an inside symbolic
    link (so fuzzed manifests can load), ``traps`` also holds a FIFO, a link loop and a link leading out."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "elsewhere").mkdir()
    (base / "elsewhere" / "model.onnx").write_bytes(b"onnx bytes")
    os.mkfifo(base / "elsewhere" / "fifo")
    roots = {}
    for name in ("clean", "traps"):
        root = roots[name] = make_standin(base / name)
        (root / "link_in").symlink_to("onnx/model.onnx")
    shutil.copy(roots["clean"] / "manifest.json", base / "good-manifest.json")  # the fuzz overwrites both
    _GOOD_FILES.update(json.loads((base / "good-manifest.json").read_text())["files"])
    traps = roots["traps"]
    (traps / "loop").symlink_to("loop")
    os.mkfifo(traps / "fifo")
    (traps / "link_out").symlink_to(base / "elsewhere")
    return roots


@pytest.mark.timeout(900)  # a read of a FIFO would hang: the timeout turns that into a failure
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=_manifests(), verify=st.booleans(), which=st.sampled_from(["clean", "traps"]))
def test_fuzzed_manifests_never_read_outside_and_never_crash(fuzz_roots, manifest, verify, which):
    root = fuzz_roots[which]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with opened_files() as seen:
        try:
            art = load_artifact(root, verify=verify)
        except EdgekitError as exc:
            art = None
            event(str(exc).split(";")[0].split(":")[-1].strip()[:40])  # --hypothesis-show-statistics
        else:
            event("loaded")
    assert _outside(seen, root) == []
    assert not any(os.path.basename(p) == "fifo" for p in seen)
    if art is not None:  # whatever loaded names only things inside the folder
        real = os.path.realpath(root)
        for fmt in art.manifest.formats:
            assert os.path.realpath(art.path(fmt)).startswith(real + os.sep)
        if art.tokenizer_path is not None:
            assert os.path.realpath(art.tokenizer_path).startswith(real + os.sep)


def test_fuzz_fixture_really_contains_the_traps(fuzz_roots):
    """The fuzz test would prove little if the traps were not there, or if nothing could ever load."""
    good = fuzz_roots["clean"].parent / "good-manifest.json"
    for root in fuzz_roots.values():
        shutil.copy(good, root / "manifest.json")
    load_artifact(fuzz_roots["clean"], verify=False)
    with pytest.raises(ArtifactError, match="is a (FIFO|symbolic link)"):
        load_artifact(fuzz_roots["traps"], verify=False)


def test_empty_safetensors_in_an_artifact_is_exit_2_and_names_the_file(capsys, art):
    """Even re-hashed (so the checksum matches), an empty weights file is refused as bad input, by name."""
    weights = art / "torch" / "model.safetensors"
    weights.write_bytes(b"")
    _rehash(art, "torch/model.safetensors")
    assert main(["eval", str(art)]) == 2
    assert f"{weights} is not a valid safetensors file: it is empty" in _one_line_error(capsys)
