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
g++ "${flags[@]}" "$here/tools/sanitize_driver.cpp" "${objs[@]}" -lpthread -o "$out/driver"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/driver"
