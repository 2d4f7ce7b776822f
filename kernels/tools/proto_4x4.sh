#!/usr/bin/env bash
# Build the 4x4 prototype (proto_4x4.cpp) against the kernels at release flags and run it on the FFN shapes at 80%.
# Needs an AVX-512 VNNI CPU. Usage: kernels/tools/proto_4x4.sh [ROUNDS]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${TMPDIR:-/tmp}/edgekit-proto44"
mkdir -p "$out"
f=(-std=c++17 -O3 -fno-math-errno -fopenmp-simd -I"$here/include" -I"$here/src")
objs=()
c() { g++ "${f[@]}" "${@:2}" -c "$here/src/$1" -o "$out/${1%.*}.o"; objs+=("$out/${1%.*}.o"); }
c dispatch.cpp
c pack.cpp
c ref.cpp
c u8s8_gemm__avx2.cpp -mavx2 -mfma -mf16c
c u8s8_gemm__avx2int8.cpp -mavx2 -mfma -ffp-contract=off
c u8s8_gemm__avx512.cpp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma
c u8s8_gemm__avx512vnni.cpp -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma
g++ "${f[@]}" -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma "$here/tools/proto_4x4.cpp" "${objs[@]}" \
  -lpthread -o "$out/proto_4x4"
for shape in "384 1536" "1536 384" "384 384" "384 1152"; do "$out/proto_4x4" $shape 0.8 "${1:-15}"; done
