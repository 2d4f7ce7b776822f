# edgekit: `make demo` and `make test` are the two commands a newcomer needs (see README).
SHELL := /bin/bash
PY    := .venv/bin/python
PIP   := .venv/bin/pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

KERNEL_SOURCES := $(shell find kernels -type f \( -name '*.cpp' -o -name '*.c' -o -name '*.h' -o -name '*.hpp' -o -name '*.inc' -o -name '*.map' -o -name 'CMakeLists.txt' \) 2>/dev/null) CMakeLists.txt
DEMO_DIR ?= out/demo

.PHONY: .venv demo test test-all sanitize bench-kernels c-example install-size clean

# One set-up target; a no-op once done. torch==2.13.0 (CPU build) goes in FIRST so that no other
# package can make pip resolve a different (CUDA) torch. Then edgekit with every extra (`.[all,test]`: the
# runtime-only base set plus onnxruntime, openvino, eval, compress and the test tools); its kernel build is reused
# by .venv/.built, which rebuilds incrementally when a kernel source changes.
.venv: .venv/.built .venv/.text

.venv/.deps: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "scikit-build-core>=1.0" "pybind11>=2.12" cmake ninja
	$(PIP) install -q --no-build-isolation -e '.[all,test]'
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $@

# The C++ kernels compile inside this pip install (scikit-build-core + CMake).
.venv/.built: .venv/.deps $(KERNEL_SOURCES)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

# English text for distillation (README, "Text sources") and image data (Fashion-MNIST; real photos for int8
# calibration and agreement from the Plasma and MATE wallpapers, gnome-backgrounds' renders as the fallback):
# Debian packages, installed only when run as root (CI is); otherwise edgekit uses the gensim corpora alone and
# the image data says in one line which package is missing. Never fails the set-up.
DEBIAN_TEXT := linux-doc python3-doc dict-gcide wordnet-base fortunes dataset-fashion-mnist gnome-backgrounds \
  plasma-workspace-wallpapers mate-backgrounds
.venv/.text:
	@mkdir -p .venv
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; apt="apt-get install -y -q --no-install-recommends $(DEBIAN_TEXT)"; \
	  $$apt >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && $$apt >/dev/null 2>&1; } \
	  || echo "data sources: apt-get install $(DEBIAN_TEXT) failed; those sources are skipped"; \
	else echo "data sources: Debian packages $(DEBIAN_TEXT) need root; skipped (the gensim corpora remain)"; fi
	@touch $@

demo: .venv
	$(PY) -m edgekit.demo --out $(DEMO_DIR)

# CI subset: the import-layer contracts (pyproject.toml, [tool.importlinter]), fast tests plus the real-model
# tests marked `ci`, then the kernels under ASan + UBSan. `make test-all` runs every slow test too.
test: .venv
	.venv/bin/lint-imports
	$(PY) -m pytest -m "not slow or ci" -q --durations=25
	bash tests/kernels/sanitize.sh

test-all: .venv
	$(PY) -m pytest -q

sanitize: .venv
	bash tests/kernels/sanitize.sh

bench-kernels: .venv
	$(PY) bench/kernels.py --quick --json out/kernels.jsonl

# The C API's example (kernels/examples/run_artifact.c) against the libedgekit.so the set-up built (found next to
# edgekit._engine; linked with an RPATH to it).
c-example: .venv
	@mkdir -p build/c-example
	lib=$$($(PY) -c "import importlib.util as u, os; print(os.path.dirname(u.find_spec('edgekit._engine').origin))") && \
	$(CC) -O2 -Wall -Wextra -std=c11 -Ikernels/include kernels/examples/run_artifact.c -o build/c-example/run_artifact \
	  -L"$$lib" -ledgekit -Wl,-rpath,"$$lib"

# Installed size and cold start of the runtime-only install (a wheel in a fresh venv, then + [onnxruntime] from
# PyPI; never torch). Needs network to PyPI; takes minutes (the wheel compiles the kernels).
install-size: .venv
	$(PY) bench/install_size.py --json out/install_size.json

clean:
	rm -rf build out .venv
