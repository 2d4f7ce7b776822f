// edgekit._engine: the native engine (kernels/engine/encoder.h in libedgekit.so) for Python. Reads the config
// dict and the tensors dict of a native model, checks the arrays it is given, and releases the GIL while a
// run executes; runs of one Encoder take turns (a per-encoder lock), runs of different ones overlap.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../engine/encoder.h"
#include "edgekit/kernels.h"

namespace py = pybind11;
using ek::engine::DType;
using ek::engine::Encoder;

namespace {
// An Encoder keeps a run's input and activations from set_input to the end of forward, so two Python threads
// running one session at once would overwrite each other's (and its buffers): each Encoder gets a lock, taken
// with the GIL released (a thread holding the GIL never waits for it).
struct LockedEncoder : Encoder {
  using Encoder::Encoder;
  std::mutex run_mu;
};

[[noreturn]] void bad(const std::string& m) { throw py::value_error(m); }

DType dtype_of(const py::array& a) {
  if (a.dtype().is(py::dtype::of<int8_t>())) return DType::kInt8;
  if (a.dtype().is(py::dtype::of<int32_t>())) return DType::kInt32;
  if (a.dtype().is(py::dtype::of<float>())) return DType::kFloat32;
  return DType::kOther;
}

ek::engine::EncoderConfig read_config(const py::dict& cfg) {
  ek::engine::EncoderConfig c;
  c.hidden = cfg["hidden"].cast<int64_t>();
  c.heads = cfg["heads"].cast<int64_t>();
  c.layers = cfg["layers"].cast<int64_t>();
  c.intermediate = cfg["intermediate"].cast<int64_t>();
  c.vocab_size = cfg["vocab_size"].cast<int64_t>();
  c.max_position = cfg["max_position"].cast<int64_t>();
  c.layer_norm_eps = cfg["layer_norm_eps"].cast<float>();
  c.sparse_4x1 = cfg["pattern"].cast<std::string>() == "4x1";
  if (cfg.contains("dense_linears") && !cfg["dense_linears"].is_none())
    c.dense_linears = cfg["dense_linears"].cast<std::vector<std::string>>();
  c.type_vocab_size = cfg["type_vocab_size"].cast<int64_t>();
  // fields added after version 1 first shipped: absent means what a folder without them meant (see set_architecture)
  auto str = [&](const char* key) {
    return cfg.contains(key) && !cfg[key].is_none() ? cfg[key].cast<std::string>() : std::string();
  };
  const int normalize = cfg.contains("normalize") && !cfg["normalize"].is_none() ? (int)cfg["normalize"].cast<bool>() : -1;
  if (cfg.contains("position_offset") && !cfg["position_offset"].is_none())
    c.position_offset = cfg["position_offset"].cast<int64_t>();
  try {
    ek::engine::set_architecture(&c, str("activation"), str("pooling"), normalize, str("head"), str("head_activation"));
  } catch (const std::invalid_argument& ex) {
    bad(std::string("native model: ") + ex.what());
  }
  if (c.head != ek::engine::Head::kNone) c.num_labels = cfg["num_labels"].cast<int64_t>();
  // a ViT (edgekit/formats/native.py): pre-LN layers and image input, sized from the "image" entry
  c.pre_ln = str("norm") == "pre";
  if (cfg.contains("image") && !cfg["image"].is_none()) {
    const py::dict im = cfg["image"].cast<py::dict>();
    const auto size = im["image_size"].cast<std::vector<int64_t>>(), patch = im["patch_size"].cast<std::vector<int64_t>>();
    if (size.size() != 2 || patch.size() != 2 || patch[0] < 1 || patch[1] < 1 || size[0] % patch[0] || size[1] % patch[1])
      bad("native model: image_size must be a whole number of patch_size patches ([height, width] each)");
    c.patches = (size[0] / patch[0]) * (size[1] / patch[1]);
    c.patch_dim = im["num_channels"].cast<int64_t>() * patch[0] * patch[1];
    c.prefix_tokens = im["prefix_tokens"].cast<int64_t>();
  }
  return c;
}

std::unique_ptr<LockedEncoder> make_encoder(const py::dict& cfg, const py::dict& tensors, int threads,
                                      const std::string& attention) {
  Encoder::check_options(threads, attention);
  const ek::engine::EncoderConfig c = read_config(cfg);
  std::vector<py::array> keep;  // C-contiguous copies (where needed) of the tensors handed out, alive until loaded
  auto lookup = [&](const std::string& name, bool required, ek::engine::Tensor* out) {
    if (!tensors.contains(name)) {
      if (required) throw py::key_error(name);
      return false;
    }
    py::array a = tensors[name.c_str()].cast<py::array>();
    out->dtype = dtype_of(a);
    out->shape.assign(a.shape(), a.shape() + a.ndim());
    if (out->dtype != DType::kOther) {
      py::array c = py::array::ensure(a, py::array::c_style);
      if (!c) throw py::error_already_set();
      keep.push_back(c);
      out->data = c.data();
    }
    return true;
  };
  return std::make_unique<LockedEncoder>(c, lookup, threads, attention);
}

// A run's step times added into the caller's dict (when it passed one): microseconds, summed over calls.
void add_profile(const py::object& profile, const ek::engine::Profile& prof) {
  if (profile.is_none()) return;
  py::dict d = profile.cast<py::dict>();
  for (auto& kv : prof) {
    const double before = d.contains(kv.first.c_str()) ? d[kv.first.c_str()].cast<double>() : 0.0;
    d[kv.first.c_str()] = before + kv.second;
  }
}

py::array_t<float> run(LockedEncoder& e, py::array_t<int64_t, py::array::c_style> ids,
                       py::array_t<int64_t, py::array::c_style> mask, py::object profile, py::object token_types) {
  if (ids.ndim() != 2 || mask.ndim() != 2 || ids.shape(0) != mask.shape(0) || ids.shape(1) != mask.shape(1))
    bad("input_ids and attention_mask must both be [batch, seq]");
  py::array_t<int64_t, py::array::c_style> types;  // empty unless given (None: every token in segment 0)
  if (!token_types.is_none()) {
    types = token_types.cast<py::array_t<int64_t, py::array::c_style | py::array::forcecast>>();
    if (types.ndim() != 2 || types.shape(0) != ids.shape(0) || types.shape(1) != ids.shape(1))
      bad("token_type_ids must be [batch, seq] like input_ids");
  }
  const int64_t B = ids.shape(0), S = ids.shape(1);
  py::array_t<float> out = e.per_token() ? py::array_t<float>({B, S, e.out_width()}) : py::array_t<float>({B, e.out_width()});
  ek::engine::Profile prof;
  const int64_t* id = ids.data();  // ids, mask and out stay alive (held by this frame) while the GIL is released
  const int64_t* mk = mask.data();
  const int64_t* ty = token_types.is_none() ? nullptr : types.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(e.run_mu);
    e.set_input(id, mk, ty, B, S);  // std::invalid_argument (bad ids, mask or types) -> ValueError, with the GIL back
    e.forward(dst, profile.is_none() ? nullptr : &prof);
  }
  add_profile(profile, prof);
  return out;
}

// An image batch: patches [batch, patches, patch_dim] fp32 (the session flattens the pixels into patches).
py::array_t<float> run_image(LockedEncoder& e, py::array_t<float, py::array::c_style> patches, py::object profile) {
  if (patches.ndim() != 3) bad("image patches must be [batch, patches, patch_dim]");
  const int64_t B = patches.shape(0), P = patches.shape(1), K = patches.shape(2);
  py::array_t<float> out({B, e.out_width()});
  ek::engine::Profile prof;
  const float* px = patches.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(e.run_mu);
    e.set_image_input(px, B, P, K);
    e.forward(dst, profile.is_none() ? nullptr : &prof);
  }
  add_profile(profile, prof);
  return out;
}

py::array_t<float> attention_head(py::array_t<float, py::array::c_style | py::array::forcecast> q,
                                  py::array_t<float, py::array::c_style | py::array::forcecast> k,
                                  py::array_t<float, py::array::c_style | py::array::forcecast> v, int64_t nq,
                                  bool bf16, bool transposed, bool int8) {
  if (q.ndim() != 2 || k.ndim() != 2 || v.ndim() != 2) bad("q, k, v must be [n, d]");
  const int64_t n = q.shape(0), d = q.shape(1);
  if (n < 1 || d < 1 || k.shape(0) != n || v.shape(0) != n || k.shape(1) != d || v.shape(1) != d)
    bad("q, k, v must all be [n, d] with n, d >= 1");
  if (nq != 1 && nq != n) bad("nq must be 1 (first query row only) or n");
  py::array_t<float> out({n, d});
  ek::engine::attention_head(q.data(), k.data(), v.data(), n, d, nq, bf16, transposed, int8, out.mutable_data());
  return out;
}
}  // namespace

PYBIND11_MODULE(_engine, m) {
  m.doc() = "edgekit native engine: BERT-family encoders and ViTs on edgekit's int8 / 4x1-sparse kernels";
  py::class_<LockedEncoder>(m, "Encoder")
      .def(py::init(&make_encoder), py::arg("config"), py::arg("tensors"), py::arg("threads"),
           py::arg("attention") = "fp32")
      .def_property_readonly("attention", &Encoder::attention)
      .def("run", &run, py::arg("input_ids"), py::arg("attention_mask"), py::arg("profile") = py::none(),
           py::arg("token_type_ids") = py::none())
      .def("run_image", &run_image, py::arg("patches"), py::arg("profile") = py::none(),
           "logits of an image batch: patches [batch, patches, patch_dim] float32 (C-contiguous)")
      .def_property_readonly("image_input", &Encoder::image_input, "the model takes image patches (a ViT)")
      .def_property_readonly("out_width", &Encoder::out_width)
      .def_property_readonly("per_token", &Encoder::per_token, "one output row per input token ([batch, seq, width])")
      .def_property_readonly("fused_qkv", &Encoder::fused_qkv)
      .def_property_readonly("kernels", &Encoder::kernels)
      .def_property("tile_fusion", &Encoder::tile_fusion, &Encoder::set_tile_fusion,
                    "run each layer's steps after attention one 64-token tile per task when that applies "
                    "(results are identical either way; False is for comparisons)")
      .def_property("merge_chunks", &Encoder::merge_chunks, &Encoder::set_merge_chunks,
                    "run the attention head tasks of a batch's 64-aligned chunks in one parallel region "
                    "(results are identical either way; False is for comparisons)")
      .def_property_readonly("tile_fused_layers", &Encoder::tile_fused_layers,
                             "layers of the last run that ran tile by tile");
  m.def("isa", [] { return std::string(ek_isa_name(ek_active_isa())); });
  // For tests: softmax(q k^T / sqrt(d)) v for one head through the path the engine picks for this ISA and d.
  m.def("attention_head", &attention_head, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("nq"),
        py::arg("bf16") = false, py::arg("transposed") = false, py::arg("int8") = false);
  m.def("has_bf16", &ek::engine::cpu_has_avx512_bf16, "whether the CPU has AVX512_BF16 (for attention='bf16')");
}
