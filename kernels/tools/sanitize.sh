#!/usr/bin/env bash
# Build the kernels + a C++ check driver with AddressSanitizer and UndefinedBehaviorSanitizer, run it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${TMPDIR:-/tmp}/edgekit-sanitize"
mkdir -p "$out"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -fopenmp-simd -I"$here/include")
objs=()
compile() { g++ "${flags[@]}" "${@:2}" -c "$here/src/$1" -o "$out/${1%.*}.o"; objs+=("$out/${1%.*}.o"); }
compile dispatch.cpp
compile pack.cpp
compile ref.cpp
compile u8s8_gemm__avx2.cpp -mavx2 -mfma
compile u8s8_gemm__avx2int8.cpp -mavx2 -mfma
compile u8s8_gemm__avx512.cpp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma
compile u8s8_gemm__avx512vnni.cpp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma

# Per-ISA translation units must define no weak (COMDAT) symbols: the linker keeps one copy of each, possibly
# the one compiled for a wider ISA, which would then run on CPUs that lack it. Checked at release flags.
weak_fail=0
isa_unit() {
  local obj="$out/release_$(basename "${1%.*}").o"
  g++ -std=c++17 -O3 -fno-math-errno -fopenmp-simd -I"$here/include" -I"$here/src" "${@:2}" -c "$here/$1" -o "$obj"
  local weak; weak="$(nm -C "$obj" | grep -E ' [WVu] ' || true)"
  if [ -n "$weak" ]; then echo "weak symbols in $1 (compiled with ${*:2}):"; echo "$weak"; weak_fail=1; fi
}
isa_unit src/u8s8_gemm__avx2.cpp -mavx2 -mfma
isa_unit src/u8s8_gemm__avx2int8.cpp -mavx2 -mfma
isa_unit src/u8s8_gemm__avx512.cpp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma
isa_unit src/u8s8_gemm__avx512vnni.cpp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma
for f in "$here"/engine/attention_*.cpp; do
  case "$(basename "$f")" in
    attention_avx2.cpp) isa_unit "engine/$(basename "$f")" -mavx2 -mfma ;;
    attention_avx512.cpp) isa_unit "engine/$(basename "$f")" -mavx512f -mavx512dq -mfma ;;
    attention_vnni.cpp) isa_unit "engine/$(basename "$f")" -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx512vnni -mfma ;;
    attention_bf16.cpp) isa_unit "engine/$(basename "$f")" -mavx512f -mavx512dq -mavx512bw -mavx512vl -mavx512bf16 -mfma ;;
    *) echo "sanitize.sh: no ISA flags known for $f; add it here"; weak_fail=1 ;;
  esac
done
[ "$weak_fail" = 0 ] || { echo "FAIL: per-ISA units with weak symbols (use ek::scratch or plain arrays, not std containers)"; exit 1; }
echo "per-ISA units: no weak symbols"

g++ "${flags[@]}" "$here/tools/sanitize_driver.cpp" "${objs[@]}" -lpthread -o "$out/driver"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/driver"
