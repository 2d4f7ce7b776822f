// The C API of the native engine (edgekit/engine.h): an artifact folder's manifest checked and its native/ folder
// read into an Encoder, with the checks edgekit/artifact.py and edgekit's native_format make in Python (paths stay
// inside the folder; sha256 of what is read; format and version; the task), then runs behind a per-engine lock.
#include "edgekit/engine.h"

#include <limits.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "c_api_util.h"
#include "encoder.h"

using ek::capi::Json;

struct ek_engine {
  std::unique_ptr<ek::engine::Encoder> enc;
  std::string task;
  int64_t max_len = 0;
  std::mutex mu;  // an Encoder keeps its input and activations between set_input and forward: one run at a time
};

namespace {
thread_local std::string g_error;

struct Failure {
  int code;
  std::string msg;
};
[[noreturn]] void fail(int code, const std::string& msg) { throw Failure{code, msg}; }

// Runs f, turning every exception into a status and g_error; `input_code` is the status of std::invalid_argument
// (the engine's "bad input": an argument at run time, the model's contents at load time).
template <typename F>
int guarded(int input_code, F&& f) {
  try {
    f();
    return EK_ENGINE_OK;
  } catch (const Failure& e) {
    g_error = e.msg;
    return e.code;
  } catch (const std::invalid_argument& e) {
    g_error = e.what();
    return input_code;
  } catch (const std::bad_alloc&) {
    g_error = "out of memory";
    return EK_ENGINE_ENOMEM;
  } catch (const std::exception& e) {
    g_error = e.what();
    return EK_ENGINE_ERUNTIME;
  } catch (...) {
    g_error = "unknown failure in the native engine";
    return EK_ENGINE_ERUNTIME;
  }
}

// "a//b/./c/" -> "a/b/c" (the spelling the manifest's keys are compared in; ".." is refused before this)
std::string normalize(const std::string& rel) {
  std::string out, part;
  for (size_t i = 0; i <= rel.size(); ++i) {
    if (i == rel.size() || rel[i] == '/') {
      if (!part.empty() && part != ".") out += (out.empty() ? "" : "/") + part;
      part.clear();
    } else {
      part.push_back(rel[i]);
    }
  }
  return out;
}

class ArtifactReader {
 public:
  explicit ArtifactReader(const std::string& dir) : root_(dir) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0)
      fail(EK_ENGINE_ENOENT, dir + " is not an edgekit artifact (no such folder)");
    if (!S_ISDIR(st.st_mode)) fail(EK_ENGINE_ENOENT, dir + " is not an edgekit artifact (not a folder)");
    char buf[PATH_MAX];
    if (!realpath(dir.c_str(), buf)) fail(EK_ENGINE_ENOENT, dir + ": " + std::strerror(errno));
    root_real_ = buf;
  }

  // The path of manifest entry `entry` = `rel`, checked without reading it: relative, no "..", inside the folder
  // through any symbolic links, a regular file (or a folder when `folder_ok`).
  std::string check(const std::string& entry, const Json* rel, bool folder_ok) const {
    const std::string pre = "artifact " + root_ + ": manifest entry " + entry + " ";
    const std::string post = "; every path in a manifest must name a file inside the artifact folder";
    if (!rel || rel->kind != Json::kString) fail(EK_ENGINE_EFORMAT, pre + "is not a path" + post);
    const std::string& r = rel->str;
    if (r.empty()) fail(EK_ENGINE_EFORMAT, pre + "is empty" + post);
    if (r.find('\0') != std::string::npos) fail(EK_ENGINE_EFORMAT, pre + "contains a NUL character" + post);
    if (r[0] == '/') fail(EK_ENGINE_EFORMAT, pre + "is an absolute path" + post);
    if (("/" + r + "/").find("/../") != std::string::npos) fail(EK_ENGINE_EFORMAT, pre + "contains '..'" + post);
    if (normalize(r).empty()) fail(EK_ENGINE_EFORMAT, pre + "names the artifact folder itself" + post);
    const std::string path = root_ + "/" + r;
    char buf[PATH_MAX];
    if (!realpath(path.c_str(), buf)) {
      if (errno == ENOENT) fail(EK_ENGINE_ENOENT, pre + "is missing" + post);
      fail(EK_ENGINE_EFORMAT, pre + "cannot be looked up (" + std::strerror(errno) + ")" + post);
    }
    const std::string real = buf;
    if (real != root_real_ && real.compare(0, root_real_.size() + 1, root_real_ + "/") != 0)
      fail(EK_ENGINE_EFORMAT, pre + "leads to " + real + ", outside the artifact folder (through a symbolic link)" + post);
    struct stat st;
    if (stat(path.c_str(), &st) != 0) fail(EK_ENGINE_ENOENT, pre + "is missing" + post);
    if (!S_ISREG(st.st_mode) && !(folder_ok && S_ISDIR(st.st_mode)))
      fail(EK_ENGINE_EFORMAT, pre + (S_ISDIR(st.st_mode) ? "is a folder" : "is a special file") + ", not a regular file" + post);
    return path;
  }

  Json read_manifest() {
    Json name;
    name.kind = Json::kString;
    name.str = "manifest.json";
    const std::vector<uint8_t> bytes = slurp(check("manifest.json", &name, false), "manifest.json");
    Json m = parse(bytes, root_ + "/manifest.json");
    if (m.kind != Json::kObject) fail(EK_ENGINE_EFORMAT, root_ + "/manifest.json is malformed: not a JSON object");
    const Json* v = m.get("format_version");
    if (!v || !v->is_int()) fail(EK_ENGINE_EFORMAT, root_ + "/manifest.json is malformed: format_version missing");
    if (v->num != 1)
      fail(EK_ENGINE_EFORMAT, "artifact " + root_ + " has format version " + std::to_string((long long)v->num) +
                                  "; this edgekit reads format version 1");
    const Json* files = m.get("files");
    if (!files || files->kind != Json::kObject) fail(EK_ENGINE_EFORMAT, root_ + "/manifest.json is malformed: files missing");
    for (const auto& kv : files->fields) {
      Json rel;
      rel.kind = Json::kString;
      rel.str = kv.first;
      check("files['" + kv.first + "']", &rel, false);
      if (kv.second.kind != Json::kString || kv.second.str.size() != 64)
        fail(EK_ENGINE_EFORMAT, root_ + "/manifest.json is malformed: files['" + kv.first + "'] is not a sha256");
      digests_[normalize(kv.first)] = kv.second.str;
    }
    return m;
  }

  // The bytes of `rel` (inside the folder), which the manifest must list and whose sha256 must match.
  std::vector<uint8_t> read_verified(const std::string& rel) const {
    Json r;
    r.kind = Json::kString;
    r.str = rel;
    const std::string path = check("files['" + rel + "']", &r, false);
    auto it = digests_.find(normalize(rel));
    if (it == digests_.end())
      fail(EK_ENGINE_EFORMAT, "artifact " + root_ + ": " + rel + " is not listed with a checksum in the manifest");
    std::vector<uint8_t> bytes = slurp(path, rel);
    if (ek::capi::sha256_hex(bytes.data(), bytes.size()) != it->second)
      fail(EK_ENGINE_ECHECKSUM, "checksum mismatch for " + rel + " in " + root_ + ": the file was modified or corrupted");
    return bytes;
  }

  static Json parse(const std::vector<uint8_t>& bytes, const std::string& what) {
    Json j;
    std::string why;
    if (!ek::capi::parse_json((const char*)bytes.data(), bytes.size(), &j, &why))
      fail(EK_ENGINE_EFORMAT, what + " is malformed: " + why);
    return j;
  }

  const std::string& root() const { return root_; }

 private:
  std::vector<uint8_t> slurp(const std::string& path, const std::string& rel) const {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail(EK_ENGINE_ENOENT, "cannot read " + rel + " in " + root_ + ": " + std::strerror(errno));
    std::vector<uint8_t> out;
    uint8_t buf[1 << 16];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.insert(out.end(), buf, buf + n);
    const bool err = std::ferror(f);
    std::fclose(f);
    if (err) fail(EK_ENGINE_EFORMAT, "cannot read " + rel + " in " + root_);
    return out;
  }

  std::string root_, root_real_;
  std::map<std::string, std::string> digests_;
};

int64_t int_field(const Json& cfg, const char* key, const std::string& where, bool required = true) {
  const Json* v = cfg.get(key);
  if (!v || v->kind == Json::kNull) {
    if (required) fail(EK_ENGINE_EFORMAT, where + ": " + key + " is missing");
    return 0;
  }
  if (!v->is_int() || v->num < 0 || v->num > 1e12) fail(EK_ENGINE_EFORMAT, where + ": " + key + " is not a count");
  return (int64_t)v->num;
}

std::string str_field(const Json& cfg, const char* key, const std::string& where) {
  const Json* v = cfg.get(key);
  if (!v || v->kind != Json::kString) fail(EK_ENGINE_EFORMAT, where + ": " + key + " is missing or not a string");
  return v->str;
}

// The tensors of a safetensors file held in `bytes`: 8 bytes of header length (little-endian), a JSON header
// {name: {dtype, shape, data_offsets}}, then the data. Offsets and sizes are checked against the file; a tensor not
// aligned for its dtype is copied into `aligned`.
std::map<std::string, ek::engine::Tensor> read_safetensors(const std::vector<uint8_t>& bytes, const std::string& what,
                                                          std::vector<std::vector<uint64_t>>* aligned) {
  auto bad = [&](const std::string& why) { fail(EK_ENGINE_EFORMAT, what + " is not a valid safetensors file: " + why); };
  if (bytes.size() < 8) bad("it has only " + std::to_string(bytes.size()) + " bytes");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | bytes[i];
  if (n > bytes.size() - 8) bad("its header claims more bytes than the file has");
  Json header;
  std::string why;
  if (!ek::capi::parse_json((const char*)bytes.data() + 8, n, &header, &why) || header.kind != Json::kObject)
    bad("its header is not a JSON object");
  const uint8_t* data = bytes.data() + 8 + n;
  const uint64_t data_len = bytes.size() - 8 - n;
  std::map<std::string, ek::engine::Tensor> out;
  for (const auto& kv : header.fields) {
    if (kv.first == "__metadata__") continue;
    const Json& info = kv.second;
    const Json* dt = info.get("dtype");
    const Json* shape = info.get("shape");
    const Json* off = info.get("data_offsets");
    if (!dt || dt->kind != Json::kString || !shape || shape->kind != Json::kArray || !off ||
        off->kind != Json::kArray || off->items.size() != 2 || !off->items[0].is_int() || !off->items[1].is_int())
      bad("tensor '" + kv.first + "' has a malformed entry");
    ek::engine::Tensor t;
    size_t esize = 0;
    if (dt->str == "F32") t.dtype = ek::engine::DType::kFloat32, esize = 4;
    else if (dt->str == "I32") t.dtype = ek::engine::DType::kInt32, esize = 4;
    else if (dt->str == "I8") t.dtype = ek::engine::DType::kInt8, esize = 1;
    else esize = 0;  // another dtype: reported by the engine as "the wrong dtype" if it needs this tensor
    uint64_t count = 1;
    for (const Json& d : shape->items) {
      if (!d.is_int() || d.num < 0 || d.num > 1e12) bad("tensor '" + kv.first + "' has a malformed shape");
      t.shape.push_back((int64_t)d.num);
      count *= (uint64_t)d.num;
    }
    const double a = off->items[0].num, b = off->items[1].num;
    if (a < 0 || b < a || b > (double)data_len) bad("tensor '" + kv.first + "' lies outside the file (truncated?)");
    if (esize && (uint64_t)(b - a) != count * esize) bad("tensor '" + kv.first + "' has a size that does not match its shape");
    const uint8_t* p = data + (uint64_t)a;
    if (esize > 1 && (uintptr_t)p % esize != 0) {
      aligned->emplace_back((count * esize + 7) / 8);
      std::memcpy(aligned->back().data(), p, count * esize);
      p = (const uint8_t*)aligned->back().data();
    }
    t.data = p;
    out[kv.first] = t;
  }
  return out;
}

ek_engine* load(const std::string& dir, int threads) {
  if (threads < 1) fail(EK_ENGINE_EINVAL, "threads must be >= 1, not " + std::to_string(threads));
  ArtifactReader art(dir);
  const Json manifest = art.read_manifest();
  const Json* formats = manifest.get("formats");
  const Json* native = formats ? formats->get("native") : nullptr;
  if (!native)
    fail(EK_ENGINE_EFORMAT, "artifact " + dir + " has no 'native' format (the native format is written by "
                            "`edgekit compress MODEL -o DIR`)");
  art.check("formats.native", native, true);
  const std::string ndir = normalize(native->str);
  const std::string where = "native model " + dir + "/" + ndir;

  const Json cfg = ArtifactReader::parse(art.read_verified(ndir + "/config.json"), dir + "/" + ndir + "/config.json");
  if (cfg.kind != Json::kObject) fail(EK_ENGINE_EFORMAT, where + ": config.json is not a JSON object");
  const Json* version = cfg.get("version");
  if (str_field(cfg, "format", where) != "edgekit-native" || !version || !version->is_int() || version->num != 1)
    fail(EK_ENGINE_EFORMAT, where + " is not edgekit-native version 1, the format this edgekit reads");
  const std::string task = str_field(cfg, "task", where);
  const Json* mtask = manifest.get("task");
  if (!mtask || mtask->kind != Json::kString || mtask->str != task)
    fail(EK_ENGINE_EFORMAT, where + ": task " + task + " differs from the artifact's");

  const Json* image = cfg.get("image");
  if (image && image->kind != Json::kNull)
    fail(EK_ENGINE_EFORMAT, where + ": an image model (ViT); the C API runs token-id models only (use the Python "
                                    "native runtime)");
  ek::engine::EncoderConfig c;
  c.hidden = int_field(cfg, "hidden", where);
  c.heads = int_field(cfg, "heads", where);
  c.layers = int_field(cfg, "layers", where);
  c.intermediate = int_field(cfg, "intermediate", where);
  c.vocab_size = int_field(cfg, "vocab_size", where);
  c.max_position = int_field(cfg, "max_position", where);
  c.type_vocab_size = int_field(cfg, "type_vocab_size", where);
  const Json* eps = cfg.get("layer_norm_eps");
  if (!eps || eps->kind != Json::kNumber) fail(EK_ENGINE_EFORMAT, where + ": layer_norm_eps is missing");
  c.layer_norm_eps = (float)eps->num;
  c.sparse_4x1 = str_field(cfg, "pattern", where) == "4x1";
  if (const Json* dl = cfg.get("dense_linears"); dl && dl->kind != Json::kNull) {  // added after version 1 shipped
    if (dl->kind != Json::kArray) fail(EK_ENGINE_EFORMAT, where + ": dense_linears must be a list of Linear names");
    for (const Json& n : dl->items) {
      if (n.kind != Json::kString) fail(EK_ENGINE_EFORMAT, where + ": dense_linears must be a list of Linear names");
      c.dense_linears.push_back(n.str);
    }
  }
  // fields added after version 1 first shipped: absent (or null) means what a folder without them meant
  auto opt_str = [&](const char* key) {
    const Json* v = cfg.get(key);
    if (v && v->kind == Json::kString) return v->str;
    if (v && v->kind != Json::kNull) fail(EK_ENGINE_EFORMAT, where + ": " + key + " must be a string");
    return std::string();
  };
  const Json* norm = cfg.get("normalize");
  const int normalize = norm && norm->kind == Json::kBool ? (int)norm->b : -1;
  if (cfg.get("position_offset")) c.position_offset = int_field(cfg, "position_offset", where);
  try {
    ek::engine::set_architecture(&c, opt_str("activation"), str_field(cfg, "pooling", where), normalize,
                                 opt_str("head"), opt_str("head_activation"));
  } catch (const std::invalid_argument& ex) {
    fail(EK_ENGINE_EFORMAT, where + ": " + ex.what());
  }
  if (c.head != ek::engine::Head::kNone) c.num_labels = int_field(cfg, "num_labels", where);

  const std::vector<uint8_t> weights = art.read_verified(ndir + "/weights.safetensors");
  std::vector<std::vector<uint64_t>> aligned;
  const auto tensors = read_safetensors(weights, dir + "/" + ndir + "/weights.safetensors", &aligned);
  auto lookup = [&](const std::string& name, bool required, ek::engine::Tensor* out) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      if (required) fail(EK_ENGINE_EFORMAT, where + ": missing tensor " + name);
      return false;
    }
    *out = it->second;
    return true;
  };
  // the attention the Python runtime picks with no hint (runtimes/native_backend.py, DEFAULT_ATTENTION)
  const std::string attention = task == "text-classification" ? "auto" : "fp32";
  std::unique_ptr<ek_engine> e(new ek_engine);
  try {
    e->enc.reset(new ek::engine::Encoder(c, lookup, threads, attention));
  } catch (const std::invalid_argument& ex) {
    fail(EK_ENGINE_EFORMAT, "native engine could not load " + dir + "/" + ndir + ": " + ex.what());
  }
  e->task = task;
  const Json* msl = manifest.get("max_sequence_length");
  const int64_t manifest_max = msl && msl->is_int() && msl->num > 0 ? (int64_t)msl->num : 512;
  e->max_len = std::min(c.max_position - c.position_offset, manifest_max);
  return e.release();
}
}  // namespace

extern "C" {

int ek_engine_load(const char* artifact_dir, int threads, ek_engine** out) {
  if (out) *out = nullptr;
  return guarded(EK_ENGINE_EFORMAT, [&] {
    if (!artifact_dir || !out) fail(EK_ENGINE_EINVAL, "ek_engine_load: artifact_dir and out must not be NULL");
    *out = load(artifact_dir, threads);
  });
}

int ek_engine_output_shape(const ek_engine* e, int batch, int64_t shape[2]) {
  return guarded(EK_ENGINE_EINVAL, [&] {
    if (!e || !shape) fail(EK_ENGINE_EINVAL, "ek_engine_output_shape: engine and shape must not be NULL");
    if (batch < 1) fail(EK_ENGINE_EINVAL, "batch must be >= 1, not " + std::to_string(batch));
    if (e->enc->per_token())
      fail(EK_ENGINE_EINVAL, "this model writes one row per token: use ek_engine_output_dims");
    shape[0] = batch;
    shape[1] = e->enc->out_width();
  });
}

int ek_engine_output_dims(const ek_engine* e, int batch, int seq, int64_t shape[3], int* rank) {
  return guarded(EK_ENGINE_EINVAL, [&] {
    if (!e || !shape || !rank) fail(EK_ENGINE_EINVAL, "ek_engine_output_dims: engine, shape and rank must not be NULL");
    if (batch < 1 || seq < 1) fail(EK_ENGINE_EINVAL, "batch and seq must be >= 1");
    shape[0] = batch;
    if (e->enc->per_token()) {
      shape[1] = seq;
      shape[2] = e->enc->out_width();
      *rank = 3;
    } else {
      shape[1] = e->enc->out_width();
      shape[2] = 1;
      *rank = 2;
    }
  });
}

int64_t ek_engine_max_sequence_length(const ek_engine* e) { return e ? e->max_len : 0; }

const char* ek_engine_task(const ek_engine* e) { return e ? e->task.c_str() : ""; }

int ek_engine_run(ek_engine* e, const int64_t* input_ids, const int64_t* attention_mask, int batch, int seq,
                  float* out, size_t out_len) {
  return ek_engine_run_with_types(e, input_ids, attention_mask, nullptr, batch, seq, out, out_len);
}

int ek_engine_run_with_types(ek_engine* e, const int64_t* input_ids, const int64_t* attention_mask,
                             const int64_t* token_type_ids, int batch, int seq, float* out, size_t out_len) {
  return guarded(EK_ENGINE_EINVAL, [&] {
    if (!e || !input_ids || !attention_mask || !out)
      fail(EK_ENGINE_EINVAL, "ek_engine_run: engine, input_ids, attention_mask and out must not be NULL");
    if (batch < 1 || seq < 1) fail(EK_ENGINE_EINVAL, "empty input: batch and seq must be at least 1");
    if (seq > e->max_len)
      fail(EK_ENGINE_EINVAL, "sequence length " + std::to_string(seq) + " is longer than the model's maximum " +
                                 std::to_string(e->max_len));
    const size_t need = (size_t)batch * (size_t)(e->enc->per_token() ? seq : 1) * (size_t)e->enc->out_width();
    if (out_len < need)
      fail(EK_ENGINE_EINVAL, "out holds " + std::to_string(out_len) + " floats; this run writes " + std::to_string(need));
    std::lock_guard<std::mutex> lock(e->mu);
    e->enc->set_input(input_ids, attention_mask, token_type_ids, batch, seq);
    e->enc->forward(out, nullptr);
  });
}

void ek_engine_free(ek_engine* e) { delete e; }

const char* ek_engine_last_error(void) { return g_error.c_str(); }
}
