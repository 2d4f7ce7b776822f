#!/usr/bin/env bash
# Standalone measurements behind "Where the sparse time goes" in docs/results-history.md (second night session of 2026-11-28):
# the quad step's port limit, the 4x1 quad loop with and without offsets multiplied in the loop, with random and
# L1-resident columns, and 1x4 blocks. One thread each; needs an AVX-512 VNNI CPU. Usage: kernels/tools/proto_quad.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${TMPDIR:-/tmp}/edgekit-protoquad"
mkdir -p "$out"
f=(-std=c++17 -O3 -mavx512f -mavx512bw -mavx512vnni)
g++ "${f[@]}" -O2 "$here/proto_ports.cpp" -o "$out/ports"
for v in 0 2; do g++ "${f[@]}" -DVARIANT=$v "$here/proto_quad.cpp" -o "$out/quad$v"; done
g++ "${f[@]}" "$here/proto_1x4.cpp" -o "$out/q14"
"$out/ports"
for v in 0 2; do
  "$out/quad$v" 384 0.2; "$out/quad$v" 384 0.8 1; "$out/quad$v" 1536 0.2
done
"$out/q14" 384 0.2; "$out/q14" 1536 0.2
