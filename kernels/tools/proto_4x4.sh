#!/usr/bin/env bash
# Build the 4x4 prototype (proto_4x4.cpp) against the kernels at release flags and run it on the FFN shapes at 80%.
# Needs an AVX-512 VNNI CPU. Usage: kernels/tools/proto_4x4.sh [ROUNDS]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${TMPDIR:-/tmp}/edgekit-proto44"
mkdir -p "$out"
. "$here/tools/release_objs.sh"
g++ "${f[@]}" -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mfma "$here/tools/proto_4x4.cpp" "${objs[@]}" \
  -lpthread -o "$out/proto_4x4"
for shape in "384 1536" "1536 384" "384 384" "384 1152"; do "$out/proto_4x4" $shape 0.8 "${1:-15}"; done
