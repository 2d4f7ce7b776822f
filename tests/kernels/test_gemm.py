"""Kernels vs the reference on every ISA path this machine has.

int32 accumulators must be bit-exact. fp32 outputs: the epilogue computes acc * (x_scale * w_scale)
+ bias in fp32, exactly as the reference, so they match to a few ulps. GELU: the VNNI path uses a piecewise
quartic for the normal CDF (32 segments on [-5.5, 5.5]), within 7.6e-7 of float64 GELU over -40..40
(test_gelu_epilogue_accuracy checks 1e-6); the AVX2 int8 path computes erf by Abramowitz & Stegun 7.1.28; the others call
std::erf like the reference; rtol 1e-5 / atol 1e-5 covers all. Requantised u8 outputs may differ by 1 where y / out_scale lands within an ulp of a .5 boundary.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import kernels as K

ISAS = K.available_isas()
rng = np.random.default_rng(1234)


def prune_4x1(w: np.ndarray, sparsity: float, gen=rng) -> np.ndarray:
    n, k = w.shape
    keep = gen.random(((n + 3) // 4, k)) >= sparsity
    return (w * np.repeat(keep, 4, axis=0)[:n]).astype(w.dtype)


def rand_w(shape, wbits=8, gen=rng) -> np.ndarray:
    """Random int8 weights: full range, or 7-bit ([-64, 64], which the AVX2 path runs on vpmaddubsw)."""
    lim = 128 if wbits == 8 else 64
    w = gen.integers(-lim, lim + (wbits == 7), shape, dtype=np.int16).astype(np.int8)
    if wbits == 8:  # make sure the full-range kernel is the one chosen
        w.flat[0] = -128
    return w


def expected_kernel(isa, pattern, w):
    if isa != "avx2":
        return None
    bits = "s7" if np.abs(w.astype(int)).max() <= 64 else "s8"
    return f"avx2-u8{bits}-{'dense' if pattern == 'dense' else '4x1'}"


def ref_acc(x, w, zp):
    return (x.astype(np.int64) - zp) @ w.astype(np.int64).T


def gelu(y):
    return 0.5 * y * (1 + np.vectorize(math.erf)(y / np.sqrt(2)))


# K below/at/above 4, 16, 64; N below/at/above 4 and 16; M = 1 and not a multiple of 6 or 64.
EDGE_SHAPES = [(1, 1, 1), (1, 3, 4), (2, 4, 5), (6, 16, 16), (7, 17, 15), (13, 63, 33), (64, 64, 64),
               (65, 65, 67), (130, 100, 20)]


@pytest.fixture(params=ISAS)
def isa(request):
    with K.using_isa(request.param):
        yield request.param


@pytest.mark.parametrize("shape", EDGE_SHAPES)
@pytest.mark.parametrize("pattern,sparsity", [("dense", 0.0), ("4x1", 0.0), ("4x1", 0.7), ("4x1", 1.0)])
@pytest.mark.parametrize("wbits", [8, 7])
def test_int32_accumulators_bit_exact(isa, shape, pattern, sparsity, wbits):
    m, k, n = shape
    w = rand_w((n, k), wbits)
    if pattern == "4x1":
        w = prune_4x1(w, sparsity)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    zp = int(rng.integers(0, 256))
    p = K.pack_s8(w, pattern)
    assert p.info["isa"] == isa
    if isa == "avx2":
        assert p.info["kernel"] == expected_kernel(isa, pattern, w)
    np.testing.assert_array_equal(K.gemm_u8s8_acc(p, x, zp), ref_acc(x, w, zp))



@pytest.mark.parametrize("out_zp", [0, 7, 128, 255])
def test_requantised_u8_output_with_bias_no_gelu(isa, out_zp):
    """u8 output without GELU (the AVX-512 VNNI epilogue folds scale, bias and zero point into one FMA) against
    round(fp32 output / out_scale) + zp: off by at most 1, and only near a rounding tie; both clamps reached."""
    m, k, n = 70, 200, 36
    w = prune_4x1(rng.integers(-128, 128, (n, k), dtype=np.int8), 0.6)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    ws = rng.uniform(1e-4, 3e-3, n).astype(np.float32)
    bias = rng.normal(0, 2, n).astype(np.float32)
    for pattern in ("dense", "4x1"):
        p = K.pack_s8(w, pattern)
        yf = K.gemm_u8s8(p, x, 0.02, 9, ws, bias)
        yq = K.gemm_u8s8(p, x, 0.02, 9, ws, bias, out_u8=True, out_scale=0.02, out_zp=out_zp)
        exact = yf.astype(np.float64) / np.float32(0.02) + out_zp
        expect = np.clip(np.round(exact), 0, 255)
        diff = np.abs(yq.astype(int) - expect)
        assert diff.max() <= 1, (pattern, diff.max())
        near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-3
        assert not (diff > 0)[~near_tie].any(), pattern
        assert (yq == 0).any() and (yq == 255).any()  # the clamps are exercised


@pytest.mark.parametrize("pattern", ["dense", "4x1"])
def test_u8_output_saturates_beyond_the_int32_range(isa, pattern):
    """Requantised values far above 2^31 (out_scale 1e-6) still give 255, below -2^31 give 0: the 4x1 kernel drops
    its upper clamp only when no value can get there, which it cannot show here."""
    m, k, n = 70, 96, 40
    w = prune_4x1(rng.integers(-128, 128, (n, k), dtype=np.int8), 0.5) if pattern == "4x1" else \
        rng.integers(-128, 128, (n, k), dtype=np.int8)
    w[3] = 0  # an output that is exactly the zero point
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    p = K.pack_s8(w, pattern)
    kw = dict(x_scale=1.0, x_zp=5, w_scale=np.ones(n, np.float32), out_u8=True, out_scale=1e-6, out_zp=17)
    acc = ref_acc(x, w, 5)
    want = np.where(acc > 0, 255, np.where(acc < 0, 0, 17)).astype(np.uint8)
    assert np.abs(acc).max() * 1e6 > 2**31 and (want == 255).any() and (want == 0).any()
    np.testing.assert_array_equal(K.gemm_u8s8(p, x, **kw), want)
    mp = K.padded_m(m)
    xt = np.zeros((k, mp), np.uint8)
    xt[:, :m] = x.T
    if pattern == "4x1":  # the engine's form: X and Y transposed
        np.testing.assert_array_equal(K.gemm_u8s8_t(p, xt, m, True, True, **kw)[:, :m].T, want)


@pytest.mark.parametrize("pattern", ["dense", "4x1"])
def test_extreme_values(isa, pattern):
    """255 x -128 everywhere: the largest |products|; vpmaddubsw would saturate here, we must not. 255 x +-64:
    the largest a 7-bit weight gives (vpmaddubsw pair sums of +-32640, just inside int16)."""
    for xv, wv in [(255, -128), (255, 127), (0, -128), (255, -64), (255, 64), (0, 64), (255, 63)]:
        w = np.full((20, 3072), wv, np.int8)
        x = np.full((9, 3072), xv, np.uint8)
        for zp in (0, 255):
            np.testing.assert_array_equal(K.gemm_u8s8_acc(K.pack_s8(w, pattern), x, zp), ref_acc(x, w, zp))


@pytest.mark.parametrize("wbits", [8, 7])
def test_empty_block_rows_and_ragged_density(isa, wbits):
    w = rand_w((37, 50), wbits)
    w[4:8] = 0  # a whole empty block-row
    w[12:16, :] = 0
    w[12:16, 7] = 5  # a block-row with a single kept block
    x = rng.integers(0, 256, (70, 50), dtype=np.uint8)
    np.testing.assert_array_equal(K.gemm_u8s8_acc(K.pack_s8(w, "4x1"), x, 7), ref_acc(x, w, 7))


@pytest.mark.parametrize("pattern,sparsity", [("dense", 0.0), ("4x1", 0.8)])
@pytest.mark.parametrize("gelu_on", [False, True])
@pytest.mark.parametrize("wbits", [8, 7])
def test_fused_epilogue_fp32(isa, pattern, sparsity, gelu_on, wbits):
    m, k, n = 67, 96, 44
    w = rand_w((n, k), wbits)
    if pattern == "4x1":
        w = prune_4x1(w, sparsity)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    ws = (rng.random(n, dtype=np.float32) + 0.5) * 1e-3
    b = rng.standard_normal(n).astype(np.float32)
    y = K.gemm_u8s8(K.pack_s8(w, pattern), x, 0.02, 9, ws, b, gelu_on)
    expect = (ref_acc(x, w, 9).astype(np.float32) * (np.float32(0.02) * ws) + b)
    if gelu_on:
        expect = gelu(expect.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern", ["dense", "4x1"])
def test_gelu_epilogue_accuracy(isa, pattern):
    """GELU over a fine grid of pre-activations, -40..40, in the plain and the transposed layout."""
    k, n = 1, 64
    x = np.arange(256, dtype=np.uint8).reshape(256, 1)
    w = np.ones((n, k), np.int8)
    ws = np.full(n, 1 / 16, np.float32)
    b = np.linspace(-32, 32, n).astype(np.float32)  # y = (x - 128) / 16 + b[n]: steps of 1/16, shifted per output
    p = K.pack_s8(w, pattern)
    pre = (x.astype(np.float64) - 128) / 16 + b  # exact in float32 too
    expect = gelu(pre)
    outs = [K.gemm_u8s8(p, x, 1.0, 128, ws, b, True),
            K.gemm_u8s8_t(p, x, 256, False, True, 1.0, 128, ws, b, gelu=True).T[:256]]
    for y in outs:
        np.testing.assert_array_less(np.abs(y.astype(np.float64) - expect), 1e-6 + 1e-6 * np.abs(expect))


def test_requantised_u8_output(isa):
    m, k, n = 33, 64, 24
    w = prune_4x1(rng.integers(-128, 128, (n, k), dtype=np.int8), 0.5)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    ws = np.full(n, 2e-3, np.float32)
    for pattern in ("dense", "4x1"):
        p = K.pack_s8(w, pattern)
        yf = K.gemm_u8s8(p, x, 0.02, 3, ws, None, True)
        yq = K.gemm_u8s8(p, x, 0.02, 3, ws, None, True, True, 0.01, 20)
        expect = np.clip(np.round(yf / np.float32(0.01)) + 20, 0, 255)
        assert yq.dtype == np.uint8
        assert np.abs(yq.astype(int) - expect).max() <= 1


@pytest.mark.parametrize("pattern", ["dense", "4x1"])
def test_fp32_gemm(isa, pattern):
    for m, k, n in [(1, 5, 3), (17, 64, 36), (64, 384, 20)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        if pattern == "4x1":
            w = prune_4x1(w, 0.6)
        x = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        # fp32 sums of k products in any order: error <= k * eps * sum|x*w| -> 1e-4 relative is ample.
        expect = x.astype(np.float64) @ w.T.astype(np.float64) + b
        scale = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64) + 1
        y = K.gemm_f32(K.pack_f32(w, pattern), x, b, False)
        assert (np.abs(y - expect) <= 1e-5 * k * scale / k + 1e-5 * scale).all()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 70), m=st.integers(1, 70), sparsity=st.floats(0, 1),
       seed=st.integers(0, 2**31 - 1))
def test_random_shapes_all_paths(n, k, m, sparsity, seed):
    gen = np.random.default_rng(seed)
    w = prune_4x1(rand_w((n, k), 7 if seed % 2 else 8, gen), sparsity, gen)
    x = gen.integers(0, 256, (m, k), dtype=np.uint8)
    zp = int(gen.integers(0, 256))
    expect = ref_acc(x, w, zp)
    for isa in ISAS:
        with K.using_isa(isa):
            for pattern in ("dense", "4x1"):
                p = K.pack_s8(w, pattern)
                np.testing.assert_array_equal(p.unpack(), w)
                np.testing.assert_array_equal(K.gemm_u8s8_acc(p, x, zp), expect)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 30), k=st.integers(1, 40), sparsity=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip_and_block_count(n, k, sparsity, seed):
    gen = np.random.default_rng(seed)
    w = prune_4x1(gen.integers(-128, 128, (n, k), dtype=np.int8), sparsity, gen)
    p = K.pack_s8(w, "4x1")
    np.testing.assert_array_equal(p.unpack(), w)
    nb = (n + 3) // 4
    padded = np.zeros((nb * 4, k), np.int8)
    padded[:n] = w
    kept = int((padded.reshape(nb, 4, k) != 0).any(axis=1).sum())
    assert p.info["nnz_blocks"] == kept and p.info["pattern"] == "4x1" and p.info["n"] == n
    wf = w.astype(np.float32) / 7
    np.testing.assert_array_equal(K.pack_f32(wf, "4x1").unpack(), wf)


def test_threads_do_not_change_results():
    w = prune_4x1(rng.integers(-128, 128, (1536, 384), dtype=np.int8), 0.8)
    x = rng.integers(0, 256, (128, 384), dtype=np.uint8)
    outs = []
    for t in (1, 2, 3):
        with K.using_threads(t):
            outs.append(K.gemm_u8s8_acc(K.pack_s8(w, "4x1"), x, 5))
    assert all((o == outs[0]).all() for o in outs)


def test_bad_inputs_raise_value_error():
    w = K.pack_s8(np.ones((8, 16), np.int8), "4x1")
    ws = np.ones(8, np.float32)
    cases = [
        (lambda: K.pack_s8(np.ones((8, 16), np.float32), "4x1"), "dtype int8"),
        (lambda: K.pack_s8(np.ones((8, 16), np.int8), "2:4"), "allowed: dense, 4x1"),
        (lambda: K.pack_s8(np.ones((0, 16), np.int8)), "empty"),
        (lambda: K.gemm_u8s8_acc(w, np.ones((2, 15), np.uint8)), "K=16"),
        (lambda: K.gemm_u8s8_acc(w, np.ones((2, 16), np.int8)), "dtype uint8"),
        (lambda: K.gemm_u8s8_acc(w, np.ones((2, 32), np.uint8)[:, ::2]), "C-contiguous"),
        (lambda: K.gemm_u8s8(w, np.ones((2, 16), np.uint8), 0.1, 0, np.ones(7, np.float32)), "length N=8"),
        (lambda: K.gemm_u8s8(w, np.ones((2, 16), np.uint8), -1.0, 0, ws), "x_scale must be positive"),
        (lambda: K.gemm_u8s8(w, np.ones((2, 16), np.uint8), 0.1, 300, ws), "x_zp"),
        (lambda: K.gemm_f32(w, np.ones((2, 16), np.float32)), "fp32 packed weight"),
        (lambda: K.set_isa("sse9"), "allowed: ref"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()


def test_weight_packed_for_another_isa_is_refused():
    if len(ISAS) < 2:
        pytest.skip("needs two ISA paths")
    with K.using_isa(ISAS[-1]):
        p = K.pack_s8(np.ones((8, 16), np.int8))
    with K.using_isa(ISAS[0]):
        with pytest.raises(ValueError, match="packed for ISA .* repack"):
            K.gemm_u8s8_acc(p, np.ones((1, 16), np.uint8))


def test_one_isa_state_for_the_gemms_and_the_engine():
    """Both Python modules run on one kernels library: a switch through either is seen by the other, and the C ABI's
    ek_set_isa is defined in exactly one of the package's shared objects (libedgekit.so)."""
    import pathlib
    import shutil
    import subprocess

    from edgekit import _engine

    for isa in ISAS:
        with K.using_isa(isa):
            assert _engine.isa() == K.cpu_info()["isa"] == isa
    if not shutil.which("nm"):
        pytest.skip("no nm to read the shared objects' symbol tables")
    sos = sorted(pathlib.Path(_engine.__file__).parent.glob("*.so"))  # where the built modules are installed
    defines = [so.name for so in sos
               if " T ek_set_isa\n" in subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True,
                                                        text=True, check=True).stdout + "\n"]
    assert defines == ["libedgekit.so"], (defines, [so.name for so in sos])


def test_env_override_selects_lower_path():
    """EDGEKIT_ISA is read once, when the library loads: one process per value."""
    import subprocess
    import sys

    code = "from edgekit import kernels; print(kernels.cpu_info()['isa'])"
    for isa in ISAS:
        out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "EDGEKIT_ISA": isa},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert out == isa


@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 1000])
def test_quantize_u8_matches_numpy(isa, n):
    """Every path: round half to even of x / scale in fp32, plus zp, clamped; identical bytes."""
    scale, zp = np.float32(0.05), 17
    ties = (np.arange(n, dtype=np.float32) - n // 2 + 0.5) * scale  # exact .5 cases after the division
    wide = rng.normal(0, 8, n).astype(np.float32)  # covers clamping at 0 and 255
    for x in (ties, wide):
        want = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(K.quantize_u8(x, float(scale), zp), want)


def test_quantize_u8_near_ties_and_extremes_match_division(isa):
    """The AVX-512 paths divide by multiplying with 1/scale plus one FMA correction: the bytes must still equal
    round-half-even(x / scale) of a true fp32 division, also a few ulps either side of every .5 tie, at awkward
    scales, and for huge, infinite and tiny inputs (clamped to 0 / 255 like the division's result)."""
    r = np.random.default_rng(11)
    for scale in (np.float32(0.05), np.float32(0.0123457), np.float32(3.7e-3), np.float32(1.9073486e-06), np.float32(7.1)):
        k = np.arange(-300, 300, dtype=np.float32) + np.float32(0.5)
        base = (k * scale).astype(np.float32)
        near = np.concatenate([np.nextafter(base, np.float32(np.inf)) if d > 0 else
                               np.nextafter(base, np.float32(-np.inf)) if d < 0 else base for d in (-1, 0, 1)])
        for _ in range(2):  # two and three ulps away as well
            near = np.concatenate([near, np.nextafter(near, np.float32(np.inf)), np.nextafter(near, np.float32(-np.inf))])
        wide = (r.uniform(-1000, 1000, 4000) * scale).astype(np.float32)
        extremes = np.array([0.0, -0.0, 1e-45, -1e-45, 1e30, -1e30, np.inf, -np.inf, 3.4e38, -3.4e38], np.float32)
        for x in (near.astype(np.float32), wide, extremes):
            with np.errstate(over="ignore"):
                want = np.clip(np.rint(x / scale) + 17, 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(K.quantize_u8(x, float(scale), 17), want)
            m = x.size // 16  # the transposed quantiser (the engine's) on the same values as [m, 16]
            if m:
                got_t = K.quantize_u8_t(x[: 16 * m].reshape(m, 16), float(scale), 17)[:, :m]
                np.testing.assert_array_equal(got_t, want[: 16 * m].reshape(m, 16).T)


@pytest.mark.parametrize("m,k", [(1, 16), (16, 16), (17, 33), (64, 384), (70, 15), (128, 1536)])
def test_quantize_transposed_equals_quantize_then_transpose(isa, m, k):
    """quantize_u8_t (one pass, the engine's input to the 4x1 kernel) = quantize_u8 then transpose, with the
    padding tokens zero, on every path; its output fed to gemm_u8s8_t equals the plain GEMM."""
    scale, zp = 0.05, 17
    x = rng.normal(0, 6, (m, k)).astype(np.float32)
    x.flat[: min(8, x.size)] = (np.arange(min(8, x.size)) + 0.5) * np.float32(scale)  # exact ties
    got = K.quantize_u8_t(x, scale, zp)
    mp = K.padded_m(m)
    want = np.zeros((k, mp), np.uint8)
    want[:, :m] = K.quantize_u8(x, scale, zp).T
    np.testing.assert_array_equal(got, want)
    w = prune_4x1(rng.integers(-128, 128, (20, k), dtype=np.int8), 0.7)
    p, ws = K.pack_s8(w, "4x1"), np.full(20, 0.01, np.float32)
    np.testing.assert_array_equal(K.gemm_u8s8_t(p, got, m, True, False, scale, zp, ws),
                                  K.gemm_u8s8(p, K.quantize_u8(x, scale, zp), scale, zp, ws))
    with pytest.raises(ValueError):
        K.quantize_u8_t(x, 0.0, zp)


def test_thread_pool_survives_resizes_and_back_to_back_jobs():
    """Resize the pool and run a job at once, many times over (a job published before a new worker first runs
    must still reach it), in a subprocess with a timeout so that a lost wake-up fails instead of hanging."""
    import subprocess
    import sys

    code = """
import numpy as np
from edgekit import kernels as K
rng = np.random.default_rng(0)
w = rng.integers(-128, 128, (64, 96), dtype=np.int8)
x = rng.integers(0, 256, (40, 96), dtype=np.uint8)
p, want = K.pack_s8(w, "dense"), (x.astype(np.int64) - 3) @ w.astype(np.int64).T
for i in range(300):
    K.set_num_threads(1 + i % 3)
    assert (K.gemm_u8s8_acc(p, x, 3) == want).all()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# N = 512 and 768: fp32 rows 2 and 3 KB apart, which the VNNI 4x1 kernel writes through its staging buffer (u8 rows
# always are); m = 17 and 130 end in partial 16-token groups.
@pytest.mark.parametrize("m,k,n", [(1, 16, 8), (13, 63, 33), (64, 384, 96), (130, 100, 20), (17, 40, 512),
                                   (130, 24, 768)])
@pytest.mark.parametrize("pattern,sparsity", [("dense", 0.0), ("4x1", 0.8)])
@pytest.mark.parametrize("gelu,out_u8", [(False, False), (True, True)])
@pytest.mark.parametrize("wbits", [8, 7])
def test_transposed_layouts_match_plain_gemm(isa, m, k, n, pattern, sparsity, gelu, out_u8, wbits):
    """gemm_u8s8_t with X given [k, padded m] and/or Y written [n, padded m] gives exactly the plain GEMM's values."""
    w = rand_w((n, k), wbits)
    if pattern == "4x1":
        w = prune_4x1(w, sparsity)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    p = K.pack_s8(w, pattern)
    kw = dict(x_scale=0.02, x_zp=7, w_scale=rng.uniform(0.001, 0.01, n).astype(np.float32),
              bias=rng.normal(0, 1, n).astype(np.float32), gelu=gelu, out_u8=out_u8, out_scale=0.05, out_zp=20)
    want = K.gemm_u8s8(p, x, **kw)
    mp = K.padded_m(m)
    assert mp % 64 == 0 and mp >= m
    xt = np.zeros((k, mp), np.uint8)
    xt[:, :m] = x.T
    for x_t in (False, True):
        for y_t in (False, True):
            got = K.gemm_u8s8_t(p, xt if x_t else x, m, x_t, y_t, **kw)
            got = got[:, :m].T if y_t else got
            np.testing.assert_array_equal(got, want, err_msg=f"x_t={x_t} y_t={y_t}")
    with pytest.raises(ValueError, match="transposed x"):
        K.gemm_u8s8_t(p, np.ascontiguousarray(xt[:, : mp - 1]), m, True, False, **kw)


@pytest.mark.parametrize("m,k,n", [(1, 16, 8), (130, 100, 22), (192, 384, 96)])
@pytest.mark.parametrize("gelu,out_u8,y_t", [(False, False, False), (True, True, True), (False, False, True)])
def test_tile_by_tile_gemm_matches_whole(isa, m, k, n, gelu, out_u8, y_t):
    """ek_gemm_u8s8_t_tile, run for each 64-token tile, gives the whole GEMM's values and writes nothing outside
    its tile (the engine runs tiles on different threads into one buffer); ek_gemm_u8s8_t_part likewise for a
    range of outputs; other paths refuse them."""
    w = prune_4x1(rand_w((n, k)), 0.8)
    p = K.pack_s8(w, "4x1")
    mp = K.padded_m(m)
    xt = np.zeros((k, mp), np.uint8)
    xt[:, :m] = rng.integers(0, 256, (k, m), dtype=np.uint8)
    kw = dict(x_scale=0.02, x_zp=7, w_scale=rng.uniform(0.001, 0.01, n).astype(np.float32),
              bias=rng.normal(0, 1, n).astype(np.float32), gelu=gelu, out_u8=out_u8, out_scale=0.05, out_zp=20)
    if isa != "avx512_vnni":
        with pytest.raises(ValueError, match="VNNI path only"):
            K.gemm_u8s8_t(p, xt, m, True, y_t, tile=0, **kw)
        return
    want = K.gemm_u8s8_t(p, xt, m, True, y_t, **kw)
    got = np.zeros_like(want)
    for t in range(mp // 64):
        part = K.gemm_u8s8_t(p, xt, m, True, y_t, tile=t, **kw)
        inside = (slice(None), slice(64 * t, 64 * t + 64)) if y_t else (slice(64 * t, 64 * t + 64),)
        got[inside] = part[inside]
        part[inside] = 0
        assert not part.any(), f"tile {t} wrote outside its tokens"
    if y_t:
        want, got = want[:, :m], got[:, :m]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="tile"):
        K.gemm_u8s8_t(p, xt, m, True, y_t, tile=mp // 64, **kw)
    # an output range (the engine's one attention head of q, k or v): those outputs only, the same values
    n0, n1 = 4, n - (n % 4 or 4) if n > 8 else n
    part = K.gemm_u8s8_t(p, xt, m, True, y_t, tile=0, n0=n0, n1=n1, **kw)
    full = K.gemm_u8s8_t(p, xt, m, True, y_t, tile=0, **kw)
    sel = (slice(n0, n1), slice(0, min(m, 64))) if y_t else (slice(0, min(m, 64)), slice(n0, n1))
    np.testing.assert_array_equal(part[sel], full[sel])
    part[(slice(n0, n1), slice(0, 64)) if y_t else sel] = 0  # (a transposed y's padding tokens: any value)
    assert not part.any(), "wrote outside its outputs"
    with pytest.raises(ValueError, match="output range"):
        K.gemm_u8s8_t(p, xt, m, True, y_t, tile=0, n0=2, n1=n, **kw)


def test_peak_macs_measures_the_active_path():
    """ek_peak_macs runs the active path's multiply loop (vpdpbusd / vpmaddwd); paths without one report 0."""
    for isa in ISAS:
        with K.using_isa(isa):
            peak = K.peak_macs(0.05)
            if isa in ("avx2", "avx512_vnni"):
                assert peak > 1e9, (isa, peak)  # any x86 core of the last decade does > 1 G int8 MAC/s
            else:
                assert peak == 0.0, (isa, peak)


@pytest.mark.parametrize("k", [40, 1536])
def test_buffer_u8_is_zeroed_aligned_and_feeds_the_transposed_gemm(isa, k):
    """buffer_u8: kernel memory (2 MB aligned from 64 KB up) that works as gemm_u8s8_t's transposed x, here with a
    stride of an odd number of cache lines as the engine uses."""
    m, n = 128, 64
    mp = K.padded_m(m)
    buf = K.buffer_u8(k, mp + 64)
    assert buf.shape == (k, mp + 64) and buf.dtype == np.uint8 and not buf.any()
    align = 2 << 20 if buf.nbytes >= 64 << 10 else 64
    assert buf.ctypes.data % align == 0
    w = prune_4x1(rand_w((n, k), 8), 0.8)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    buf[:, :m] = x.T
    p = K.pack_s8(w, "4x1")
    kw = dict(x_scale=0.02, x_zp=7, w_scale=np.full(n, 0.01, np.float32), out_u8=True, out_scale=0.05, out_zp=20)
    np.testing.assert_array_equal(K.gemm_u8s8_t(p, buf, m, True, False, **kw), K.gemm_u8s8(p, x, **kw))
    with pytest.raises(ValueError, match="rows and cols must be >= 0"):
        K.buffer_u8(-1, 4)


def test_gemm_outputs_start_on_a_cache_line():
    """The GEMM bindings return outputs whose data start on a 64-byte boundary (as the engine's buffers do), so a
    transposed output's 64-token rows are whole cache lines; the arrays own their memory and are writable."""
    m, k, n = 100, 72, 40
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = prune_4x1(rand_w((n, k), 8), 0.5)
    kw = dict(x_scale=0.02, x_zp=7, w_scale=np.full(n, 0.01, np.float32))
    for pattern in ("dense", "4x1"):
        p = K.pack_s8(w, pattern)
        outs = [K.gemm_u8s8(p, x, **kw), K.gemm_u8s8(p, x, **kw, out_u8=True, out_scale=0.05, out_zp=20),
                K.gemm_u8s8_t(p, x, m, False, True, **kw)]
        for y in outs:
            assert y.ctypes.data % 64 == 0 and y.flags.c_contiguous and y.flags.writeable
        np.testing.assert_array_equal(outs[2][:, :m].T, outs[0])
        del p
    y = K.gemm_u8s8(K.pack_s8(w, "dense"), x, **kw)
    y[:] = 1.0  # the view keeps its buffer alive after the call
    assert float(y.sum()) == m * n
