// Thin Python binding over the C ABI. Every input is validated here (dtype, rank, shape, contiguity)
// so nothing from Python can reach a kernel with a bad pointer or size.
#include <cstring>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "edgekit/kernels.h"

namespace py = pybind11;

namespace {
template <typename T>
using arr = py::array_t<T, py::array::c_style>;

[[noreturn]] void bad(const std::string& msg) { throw py::value_error(msg); }

template <typename T>
arr<T> require(const py::handle& obj, const char* name, const char* dtype, int ndim) {
  if (!py::isinstance<py::array>(obj)) bad(std::string(name) + " must be a numpy array of " + dtype);
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>()))
    bad(std::string(name) + " must have dtype " + dtype + ", got " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim) bad(std::string(name) + " must have " + std::to_string(ndim) + " dimension(s), got " + std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) bad(std::string(name) + " must be C-contiguous (use np.ascontiguousarray)");
  return py::reinterpret_borrow<arr<T>>(a);
}

// A C-contiguous [rows, cols] array whose data start on a 64-byte boundary (a view into a numpy buffer 64 bytes
// larger; not zeroed), for the GEMM outputs, as the engine's buffers are: numpy's are 16-byte aligned, so each 64-byte
// store of a transposed output straddles two cache lines. In-process A/B (K 384, N 1,536, M 128, u8 transposed out,
// 2 threads, 12 rounds): a 16-byte offset made an all-zero 4x1 weight's call 1.15x slower, dense and 80% 1.00-1.01x.
template <typename T>
arr<T> aligned_array(int64_t rows, int64_t cols) {
  py::array_t<uint8_t> raw((py::ssize_t)(rows * cols * (int64_t)sizeof(T) + 64));
  const uintptr_t a = reinterpret_cast<uintptr_t>(raw.mutable_data());
  T* p = reinterpret_cast<T*>(raw.mutable_data() + ((64 - a % 64) % 64));
  return arr<T>({rows, cols}, {cols * (int64_t)sizeof(T), (int64_t)sizeof(T)}, p, raw);
}

void check_rc(int rc) {
  if (rc != EK_OK) bad(ek_last_error());
}

const char* pattern_name(int p) { return p == EK_BLOCK_4X1 ? "4x1" : "dense"; }

ek_pattern parse_pattern(const std::string& s) {
  if (s == "dense") return EK_DENSE;
  if (s == "4x1") return EK_BLOCK_4X1;
  bad("unknown pattern '" + s + "'; allowed: dense, 4x1");
}

struct Packed {
  std::shared_ptr<ek_packed> p;
  ek_packed_info info() const {
    ek_packed_info i;
    ek_packed_get_info(p.get(), &i);
    return i;
  }
};

Packed pack_s8(const py::handle& w, const std::string& pattern) {
  auto a = require<int8_t>(w, "w", "int8", 2);
  const ek_pattern pat = parse_pattern(pattern);
  if (a.shape(0) == 0 || a.shape(1) == 0) bad("w must not be empty");
  ek_packed* p;
  {
    py::gil_scoped_release nogil;
    p = ek_pack_s8(a.data(), a.shape(0), a.shape(1), pat);
  }
  if (!p) bad(ek_last_error());
  return Packed{std::shared_ptr<ek_packed>(p, ek_packed_free)};
}

Packed pack_f32(const py::handle& w, const std::string& pattern) {
  auto a = require<float>(w, "w", "float32", 2);
  const ek_pattern pat = parse_pattern(pattern);
  if (a.shape(0) == 0 || a.shape(1) == 0) bad("w must not be empty");
  ek_packed* p = ek_pack_f32(a.data(), a.shape(0), a.shape(1), pat);
  if (!p) bad(ek_last_error());
  return Packed{std::shared_ptr<ek_packed>(p, ek_packed_free)};
}

void check_x(const Packed& w, int64_t k_got, const char* what) {
  const auto i = w.info();
  if (k_got != i.k) bad(std::string(what) + " has " + std::to_string(k_got) + " columns but the weight has K=" + std::to_string(i.k));
}

arr<float> vec(const py::handle& obj, const char* name, int64_t n) {
  auto a = require<float>(obj, name, "float32", 1);
  if (a.shape(0) != n) bad(std::string(name) + " must have length N=" + std::to_string(n) + ", got " + std::to_string(a.shape(0)));
  return a;
}
// A GEMM call's epilogue from its Python arguments, checked; holds the arrays it points into.
struct Epilogue {
  arr<float> ws, b;
  ek_epilogue ep;
};

Epilogue epilogue(const ek_packed_info& i, float x_scale, int x_zp, const py::handle& w_scale, const py::handle& bias,
                  bool gelu, bool out_u8, float out_scale, int out_zp) {
  Epilogue e;
  e.ws = vec(w_scale, "w_scale", i.n);
  if (!bias.is_none()) e.b = vec(bias, "bias", i.n);
  if (!(x_scale > 0)) bad("x_scale must be positive");
  if (x_zp < 0 || x_zp > 255) bad("x_zp must be in 0..255");
  if (out_u8 && !(out_scale > 0)) bad("out_scale must be positive when out_u8 is set");
  if (out_zp < 0 || out_zp > 255) bad("out_zp must be in 0..255");
  e.ep = ek_epilogue{x_scale, x_zp, e.ws.data(), bias.is_none() ? nullptr : e.b.data(), gelu, out_u8, out_scale, out_zp};
  return e;
}
}  // namespace

PYBIND11_MODULE(_kernels, m) {
  m.doc() = "edgekit int8/fp32 dense and 4x1 block-sparse GEMM kernels (see kernels/include/edgekit/kernels.h)";

  m.def("cpu_info", [] {
    py::dict d;
    const ek_isa best = ek_best_isa(), act = ek_active_isa();
    py::list avail;
    for (int i = 0; i <= (int)best; ++i) avail.append(ek_isa_name((ek_isa)i));
    d["isa"] = ek_isa_name(act);
    d["best"] = ek_isa_name(best);
    d["available"] = avail;
    const char* env = std::getenv("EDGEKIT_ISA");
    d["forced"] = act != best || (env && *env);
    d["threads"] = ek_get_num_threads();
    return d;
  });
  m.def("set_isa", [](const std::string& name) {
    for (int i = 0; i <= 3; ++i)
      if (name == ek_isa_name((ek_isa)i)) {
        check_rc(ek_set_isa((ek_isa)i));
        return;
      }
    bad("unknown ISA '" + name + "'; allowed: ref, avx2, avx512, avx512_vnni");
  });
  m.def("set_num_threads", [](int n) {
    if (n < 1) bad("threads must be >= 1");
    ek_set_num_threads(n);
  });
  m.def("get_num_threads", &ek_get_num_threads);
  m.def("pool_solo_jobs", &ek_pool_solo_jobs, "jobs the pool ran on the caller alone because its workers' cores "
        "were busy with other processes");
  m.attr("PACK_VERSION") = EK_PACK_VERSION;

  py::class_<Packed>(m, "PackedWeight")
      .def_property_readonly("info", [](const Packed& w) {
        const auto i = w.info();
        py::dict d;
        d["version"] = i.version;
        d["n"] = i.n;
        d["k"] = i.k;
        d["pattern"] = pattern_name(i.pattern);
        d["dtype"] = i.wtype == EK_W_S8 ? "int8" : "float32";
        d["isa"] = ek_isa_name((ek_isa)i.isa);
        d["nnz_blocks"] = i.nnz_blocks;
        d["kernel"] = i.kernel ? i.kernel : "";
        return d;
      })
      .def("unpack", [](const Packed& w) -> py::array {
        const auto i = w.info();
        if (i.wtype == EK_W_S8) {
          arr<int8_t> out({i.n, i.k});
          check_rc(ek_unpack_s8(w.p.get(), out.mutable_data()));
          return out;
        }
        arr<float> out({i.n, i.k});
        check_rc(ek_unpack_f32(w.p.get(), out.mutable_data()));
        return out;
      });

  m.def("pack_s8", &pack_s8, py::arg("w"), py::arg("pattern") = "dense");
  m.def("pack_f32", &pack_f32, py::arg("w"), py::arg("pattern") = "dense");

  m.def(
      "gemm_u8s8",
      [](const Packed& w, const py::handle& x, float x_scale, int x_zp, const py::handle& w_scale, const py::handle& bias,
         bool gelu, bool out_u8, float out_scale, int out_zp) -> py::array {
        auto xa = require<uint8_t>(x, "x", "uint8", 2);
        check_x(w, xa.shape(1), "x");
        const auto i = w.info();
        if (i.wtype != EK_W_S8) bad("gemm_u8s8 needs an int8 packed weight (pack_s8)");
        const Epilogue e = epilogue(i, x_scale, x_zp, w_scale, bias, gelu, out_u8, out_scale, out_zp);
        const int64_t m_ = xa.shape(0);
        py::array out = out_u8 ? (py::array)aligned_array<uint8_t>(m_, i.n) : (py::array)aligned_array<float>(m_, i.n);
        int rc;
        {
          py::gil_scoped_release nogil;
          rc = ek_gemm_u8s8(w.p.get(), xa.data(), m_, i.k, &e.ep, out.mutable_data(), i.n);
        }
        check_rc(rc);
        return out;
      },
      py::arg("w"), py::arg("x"), py::arg("x_scale"), py::arg("x_zp"), py::arg("w_scale"), py::arg("bias") = py::none(),
      py::arg("gelu") = false, py::arg("out_u8") = false, py::arg("out_scale") = 1.0f, py::arg("out_zp") = 0);

  m.def(
      "gemm_u8s8_t",
      [](const Packed& w, const py::handle& x, int64_t m_, bool x_transposed, bool y_transposed, float x_scale, int x_zp,
         const py::handle& w_scale, const py::handle& bias, bool gelu, bool out_u8, float out_scale,
         int out_zp, int64_t tile, int64_t n0, int64_t n1) -> py::array {
        auto xa = require<uint8_t>(x, "x", "uint8", 2);
        const auto i = w.info();
        if (tile >= 0 && !x_transposed) bad("tile needs x_transposed (ek_gemm_u8s8_t_tile reads a transposed x)");
        if (i.wtype != EK_W_S8) bad("gemm_u8s8_t needs an int8 packed weight (pack_s8)");
        const int64_t mp = ek_padded_m(m_);
        if (m_ < 0) bad("m must be >= 0");
        if (x_transposed) {
          if (xa.shape(0) != i.k || xa.shape(1) < mp)
            bad("transposed x must be [k, >= padded_m(m)] = [" + std::to_string(i.k) + ", >= " + std::to_string(mp) + "]");
        } else {
          check_x(w, xa.shape(1), "x");
          if (xa.shape(0) != m_) bad("x has " + std::to_string(xa.shape(0)) + " rows but m is " + std::to_string(m_));
        }
        const Epilogue e = epilogue(i, x_scale, x_zp, w_scale, bias, gelu, out_u8, out_scale, out_zp);
        const int64_t rows = y_transposed ? i.n : m_, cols = y_transposed ? mp : i.n;
        py::array out = out_u8 ? (py::array)aligned_array<uint8_t>(rows, cols) : (py::array)aligned_array<float>(rows, cols);
        if (tile >= 0 || (y_transposed && m_ < mp)) std::memset(out.mutable_data(), 0, out.nbytes());  // unwritten parts
        int rc;
        {
          py::gil_scoped_release nogil;
          rc = tile >= 0 ? ek_gemm_u8s8_t_part(w.p.get(), xa.data(), m_, xa.shape(1), &e.ep, out.mutable_data(), cols,
                                               y_transposed, tile, tile + 1, n0, n1 < 0 ? i.n : n1)
                         : ek_gemm_u8s8_t(w.p.get(), xa.data(), m_, xa.shape(1), x_transposed, &e.ep, out.mutable_data(),
                                          cols, y_transposed);
        }
        check_rc(rc);
        return out;
      },
      py::arg("w"), py::arg("x"), py::arg("m"), py::arg("x_transposed"), py::arg("y_transposed"), py::arg("x_scale"),
      py::arg("x_zp"), py::arg("w_scale"), py::arg("bias") = py::none(), py::arg("gelu") = false,
      py::arg("out_u8") = false, py::arg("out_scale") = 1.0f, py::arg("out_zp") = 0, py::arg("tile") = -1,
      py::arg("n0") = 0, py::arg("n1") = -1,
      "tile >= 0: only the 64 tokens of that tile and outputs n0..n1 (default all; ek_gemm_u8s8_t_part, x "
      "transposed, 4x1 on AVX-512 VNNI), the rest of the output left zero.");
  m.def("padded_m", &ek_padded_m, py::arg("m"));

  m.def(
      "buffer_u8",
      [](int64_t rows, int64_t cols) {
        if (rows < 0 || cols < 0) bad("buffer_u8: rows and cols must be >= 0");
        void* p = ek_alloc_buffer((size_t)(rows * cols));
        if (!p) throw std::bad_alloc();
        py::capsule owner(p, [](void* q) { ek_free_buffer(q); });
        return py::array_t<uint8_t>({rows, cols}, {cols, (int64_t)1}, static_cast<uint8_t*>(p), owner);
      },
      py::arg("rows"), py::arg("cols"),
      "A zeroed uint8 [rows, cols] array in kernel-allocated memory (ek_alloc_buffer: 2 MB pages from 64 KB up), "
      "e.g. for the x_transposed operand of gemm_u8s8_t, whose 4x1 gathers miss the TLB on 4 KB pages at large k.");

  m.def(
      "gemm_u8s8_acc",
      [](const Packed& w, const py::handle& x, int x_zp) {
        auto xa = require<uint8_t>(x, "x", "uint8", 2);
        check_x(w, xa.shape(1), "x");
        const auto i = w.info();
        if (i.wtype != EK_W_S8) bad("gemm_u8s8_acc needs an int8 packed weight (pack_s8)");
        if (x_zp < 0 || x_zp > 255) bad("x_zp must be in 0..255");
        arr<int32_t> out({xa.shape(0), i.n});
        int rc;
        {
          py::gil_scoped_release nogil;
          rc = ek_gemm_u8s8_acc(w.p.get(), xa.data(), xa.shape(0), x_zp, out.mutable_data());
        }
        check_rc(rc);
        return out;
      },
      py::arg("w"), py::arg("x"), py::arg("x_zp") = 0);

  m.def(
      "gemm_f32",
      [](const Packed& w, const py::handle& x, const py::handle& bias, bool gelu) {
        auto xa = require<float>(x, "x", "float32", 2);
        check_x(w, xa.shape(1), "x");
        const auto i = w.info();
        if (i.wtype != EK_W_F32) bad("gemm_f32 needs an fp32 packed weight (pack_f32)");
        arr<float> b;
        if (!bias.is_none()) b = vec(bias, "bias", i.n);
        arr<float> out({xa.shape(0), i.n});
        int rc;
        {
          py::gil_scoped_release nogil;
          rc = ek_gemm_f32(w.p.get(), xa.data(), xa.shape(0), i.k, bias.is_none() ? nullptr : b.data(), gelu,
                           out.mutable_data(), i.n);
        }
        check_rc(rc);
        return out;
      },
      py::arg("w"), py::arg("x"), py::arg("bias") = py::none(), py::arg("gelu") = false);

  m.def(
      "quantize_u8",
      [](const py::handle& x, float scale, int zp) {
        if (!py::isinstance<py::array>(x)) bad("x must be a numpy float32 array");
        py::array a = py::reinterpret_borrow<py::array>(x);
        if (!a.dtype().is(py::dtype::of<float>())) bad("x must have dtype float32");
        if (!(a.flags() & py::array::c_style)) bad("x must be C-contiguous");
        if (!(scale > 0)) bad("scale must be positive");
        if (zp < 0 || zp > 255) bad("zp must be in 0..255");
        py::array q(py::dtype::of<uint8_t>(), std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
        ek_quantize_u8(static_cast<const float*>(a.data()), a.size(), scale, zp, static_cast<uint8_t*>(q.mutable_data()));
        return q;
      },
      py::arg("x"), py::arg("scale"), py::arg("zp"));

  m.def(
      "quantize_u8_t",
      [](const py::handle& x, float scale, int zp) {
        auto a = require<float>(x, "x", "float32", 2);
        if (!(scale > 0)) bad("scale must be positive");
        if (zp < 0 || zp > 255) bad("zp must be in 0..255");
        const int64_t m_ = a.shape(0), k = a.shape(1), mp = ek_padded_m(m_);
        arr<uint8_t> q({k, mp});
        int rc;
        {
          py::gil_scoped_release nogil;
          rc = ek_quantize_u8_t(a.data(), m_, k, k, scale, zp, q.mutable_data(), mp);
        }
        check_rc(rc);
        return q;
      },
      py::arg("x"), py::arg("scale"), py::arg("zp"),
      "Quantise x [m, k] to u8 and transpose it in one pass: [k, padded_m(m)], padding tokens 0 "
      "(the x_transposed layout of gemm_u8s8_t).");

  m.def("peak_macs", [](double seconds) {
    py::gil_scoped_release nogil;
    return ek_peak_macs(seconds);
  }, py::arg("seconds") = 0.5, "int8 instruction-rate peak (MAC/s) of the active ISA's kernels; 0 if not measured");
}
