#!/usr/bin/env bash
# The kernels under AddressSanitizer + UndefinedBehaviorSanitizer: builds the library's kernel sources and the C++
# check driver beside this script (every ISA path the CPU has vs the reference, through the C ABI) and runs it.
# Also checks that no per-ISA translation unit defines weak symbols (see below). Run by `make test` / `make sanitize`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
k="$root/kernels"
out="${TMPDIR:-/tmp}/edgekit-sanitize"
mkdir -p "$out"

# Target flags of a source file, from the ISA in its name (<op>__<isa>.cpp; kernels/CMakeLists.txt gives each file
# these, some with a narrower AVX-512 set or an extra -mf16c / -ffp-contract=off).
isa_flags() {
  case "$(basename "$1")" in
    *__avx2.cpp) echo "-mavx2 -mfma" ;;
    *__avx512.cpp) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma" ;;
    *__avx512vnni.cpp) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma" ;;
    *__avx512bf16.cpp) echo "-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma" ;;
    *__ref.cpp) echo "" ;;
    *__*.cpp) echo "UNKNOWN" ;;
    *) echo "" ;;
  esac
}

# The kernels behind the C ABI (not the engine, its attention and LayerNorm kernels: the driver does not call them).
srcs=()
for f in "$k"/src/*.cpp; do
  case "$(basename "$f")" in
    *attention*|*layer_norm*) ;;
    *) srcs+=("$f") ;;
  esac
done
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -fopenmp-simd -I"$k/include")
objs=()
for f in "${srcs[@]}"; do
  fl="$(isa_flags "$f")"
  [ "$fl" != UNKNOWN ] || { echo "sanitize.sh: no ISA flags known for $f; add its ISA here"; exit 1; }
  o="$out/$(basename "${f%.*}").o"
  # shellcheck disable=SC2086
  g++ "${flags[@]}" $fl -c "$f" -o "$o"
  objs+=("$o")
done

# Per-ISA translation units must define no weak (COMDAT) symbols: the linker keeps one copy of each, possibly the one
# compiled for a wider ISA, which would then run on CPUs that lack it. Checked at release flags.
weak_fail=0
for f in "$k"/src/*__avx*.cpp; do
  o="$out/release_$(basename "${f%.*}").o"
  # shellcheck disable=SC2046
  g++ -std=c++17 -O3 -fno-math-errno -fopenmp-simd -I"$k/include" -I"$k/src" $(isa_flags "$f") -c "$f" -o "$o"
  weak="$(nm -C "$o" | grep -E ' [WVu] ' || true)"
  if [ -n "$weak" ]; then echo "weak symbols in $f:"; echo "$weak"; weak_fail=1; fi
done
[ "$weak_fail" = 0 ] || { echo "FAIL: per-ISA units with weak symbols (use ek::scratch or plain arrays, not std containers)"; exit 1; }
echo "per-ISA units: no weak symbols"

g++ "${flags[@]}" "$root/tests/kernels/sanitize_driver.cpp" "${objs[@]}" -lpthread -o "$out/driver"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/driver"
