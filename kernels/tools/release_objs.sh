# Sourced by the tools that link a driver against the kernels: compiles every kernel source at the flags
# kernels/CMakeLists.txt gives it (release: -O3, each ISA file with its own target flags) into "$out" and leaves the
# objects in the array "objs" and the common flags in "f". Needs "here" (the kernels folder) and "out" set.
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
