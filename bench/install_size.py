"""Installed size and cold start of the runtime-only install (`pip install edgekit`, no torch).

Builds a wheel of this checkout, installs it into a fresh virtualenv with no extras, then adds
``[onnxruntime]`` (dependencies from PyPI; needs network), and after each step records:

- ``site_packages_mb``: ``du`` of the venv's site-packages (pip itself included, ``pip_mb`` says how much);
- ``forbidden``: any of torch, transformers, datasets, nncf, scikit-learn, onnx that pip pulled in (must be empty);
- ``cold_start_s``: wall time from starting a fresh Python process to its first result, for ``--runs`` runs: load
  the artifact on the native engine (checksums verified), load its tokenizer, tokenise one text, run one batch
  (``FIRST_RESULT`` below), after one untimed run that warms the file cache; and ``cli_info_s``: the same for ``edgekit info``.

The artifact (``--artifact DIR``, a folder with ``native/``) defaults to a native fp32 export of ``--model``
(default minilm-l6-bbc: 6 layers, 384 wide, dense fp32, so its weights are the largest a MiniLM native artifact
has), written once with this checkout's full environment. Measures, never asserts.

    python bench/install_size.py --json out/install_size.json          # make install-size
    python bench/install_size.py --wheel /tmp/wheels/edgekit-*.whl --artifact out/bbc --runs 5
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "transformers", "datasets", "nncf", "scikit-learn", "onnx", "openvino")

FIRST_RESULT = """
import sys
from edgekit.data import tokenize
from edgekit.runtimes import load, load_tokenizer
art = sys.argv[1]
session = load(art, "native", threads=int(sys.argv[2]))
feeds = tokenize(load_tokenizer(art), ["The first request of the day."], max_length=128, pad_to_max=False)
print(session.run(feeds).shape)
"""


def run(cmd, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0]) / 1024


def build_wheel(out: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", out])
    wheels = sorted(out.glob("edgekit-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise SystemExit(f"no edgekit wheel in {out}")
    return wheels[-1]


def native_artifact(model: str, dest: Path) -> Path:
    """A native fp32 export of ``model`` (plus its tokenizer), written with this checkout's full environment."""
    if (dest / "manifest.json").is_file():
        return dest
    code = f"""
from edgekit.export import export_artifact
from edgekit.formats.native import write_native
from edgekit.zoo import load_torch, resolve
ref = resolve({model!r})
model, tok = load_torch(ref)
export_artifact(model, tok, {str(dest)!r}, task=ref.task, model_name={model!r}, formats=(),
                extra_files=lambda d: (write_native(model, ref.task, None, d / "native"), {{"native": "native"}})[1],
                progress=False)
"""
    run([sys.executable, "-c", code])
    return dest


def site_packages(venv: Path) -> Path:
    return Path(glob.glob(str(venv / "lib" / "python3*" / "site-packages"))[0])


def installed(venv: Path) -> dict[str, str]:
    out = run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json"], capture_output=True).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


def timed(cmd, runs: int, env) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return times


def snapshot(venv: Path, label: str, artifact: Path, runs: int, threads: int) -> dict:
    pkgs = installed(venv)
    sp = site_packages(venv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = venv / "edgekit_first_result.py"
    script.write_text(FIRST_RESULT)
    # one untimed run: it fills the page cache, so the timed runs are new processes on a warm file cache (a
    # replica restarting on its host), not a first read from disk
    subprocess.run([str(venv / "bin" / "python"), str(script), str(artifact), str(threads)], check=True, env=env)
    cold = timed([venv / "bin" / "python", script, artifact, threads], runs, env)
    info = timed([venv / "bin" / "edgekit", "info"], runs, env)
    pip_mb = sum(du_mb(p) for p in sp.glob("pip*"))
    return {
        "install": label, "site_packages_mb": round(du_mb(sp), 1), "pip_mb": round(pip_mb, 1),
        "packages": len(pkgs), "forbidden": [p for p in FORBIDDEN if p in pkgs],
        "cold_start_s": {"median": round(statistics.median(cold), 3), "min": round(min(cold), 3),
                         "runs": [round(t, 3) for t in cold]},
        "cli_info_s": {"median": round(statistics.median(info), 3), "min": round(min(info), 3)},
        "largest": sorted(((p.name, round(du_mb(p), 1)) for p in sp.iterdir() if p.is_dir()),
                          key=lambda x: -x[1])[:8],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, help="An edgekit wheel (default: build one from this checkout).")
    ap.add_argument("--artifact", type=Path, help="A native artifact folder (default: a native export of --model).")
    ap.add_argument("--model", default="minilm-l6-bbc", help="Model of the default artifact.")
    ap.add_argument("--python", default="python3.11", help="Python for the fresh venv.")
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "rt-venv")
    ap.add_argument("--runs", type=int, default=5, help="Cold starts timed per install.")
    ap.add_argument("--threads", type=int, default=1, help="Native engine threads in the cold-start run.")
    ap.add_argument("--json", type=Path, help="Write the result as JSON here too.")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="edgekit-size-"))
    wheel = args.wheel or build_wheel(work / "wheels")
    artifact = args.artifact or native_artifact(args.model, work / "artifact")
    shutil.rmtree(args.venv, ignore_errors=True)
    run([args.python, "-m", "venv", args.venv])
    pip = [args.venv / "bin" / "python", "-m", "pip", "install", "-q"]
    run(pip + ["--upgrade", "pip"])
    run(pip + [wheel])
    rows = [snapshot(args.venv, "edgekit", artifact, args.runs, args.threads)]
    run(pip + [f"{wheel}[onnxruntime]"])
    rows.append(snapshot(args.venv, "edgekit[onnxruntime]", artifact, args.runs, args.threads))
    result = {"wheel": wheel.name, "wheel_mb": round(wheel.stat().st_size / 2**20, 1), "artifact": str(artifact),
              "artifact_mb": round(du_mb(artifact), 1), "python": platform.python_version(),
              "cpu": platform.processor() or platform.machine(), "rows": rows}
    cpu = Path("/proc/cpuinfo")
    if cpu.is_file():
        result["cpu"] = next((ln.split(":", 1)[1].strip() for ln in cpu.read_text().splitlines()
                              if ln.startswith("model name")), result["cpu"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
