#!/usr/bin/env bash
# Build xt_pages.cpp against the kernels at release flags and run it on the FFN shapes, 1 and 2 threads: the 4x1
# kernel reading its transposed X from 4 KB pages vs ek_alloc_buffer's 2 MB pages, interleaved in one process.
# Needs an AVX-512 VNNI CPU and transparent huge pages in "madvise" or "always" mode.
# Usage: kernels/tools/xt_pages.sh              (the FFN shapes, 1 and 2 threads)
#        kernels/tools/xt_pages.sh K N THREADS [STRIDE]   (one point; STRIDE bytes per transposed row)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${TMPDIR:-/tmp}/edgekit-xt-pages"
mkdir -p "$out"
. "$here/tools/release_objs.sh"
g++ "${f[@]}" "$here/tools/xt_pages.cpp" "${objs[@]}" -lpthread -o "$out/xt_pages"
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"
if [ $# -ge 3 ]; then exec "$out/xt_pages" "$@"; fi
for threads in 1 2; do
  echo "== $threads thread(s)"
  for shape in "1536 384" "384 1536"; do "$out/xt_pages" $shape $threads; done
done
