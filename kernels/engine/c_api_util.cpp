// A JSON reader (enough for edgekit's manifest and native config: RFC 8259 values, \u escapes to UTF-8, a depth
// limit) and SHA-256 (FIPS 180-4), for the C API's artifact loader.
#include "c_api_util.h"

#include <cstdlib>
#include <cstring>

namespace ek {
namespace capi {

const Json* Json::get(const std::string& key) const {
  if (kind != kObject) return nullptr;
  auto it = fields.find(key);
  return it == fields.end() ? nullptr : &it->second;
}

bool Json::is_int() const { return kind == kNumber && num == (double)(int64_t)num; }

namespace {
constexpr int kMaxDepth = 64;  // a manifest nests four levels; deeper input is refused, not recursed into

class Parser {
 public:
  Parser(const char* s, size_t n) : p_(s), end_(s + n) {}

  bool document(Json* out, std::string* why) {
    bool ok = value(out, 0);
    if (ok) {
      space();
      if (p_ != end_) ok = fail("unexpected text after the value");
    }
    if (!ok) *why = err_;
    return ok;
  }

 private:
  bool fail(const char* what) {
    if (err_.empty()) err_ = what;
    return false;
  }
  void space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if ((size_t)(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return fail("invalid literal");
    p_ += n;
    return true;
  }

  bool value(Json* out, int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply");
    space();
    if (p_ == end_) return fail("unexpected end of input");
    switch (*p_) {
      case '{': return object(out, depth);
      case '[': return array(out, depth);
      case '"': out->kind = Json::kString; return string(&out->str);
      case 't': out->kind = Json::kBool; out->b = true; return literal("true");
      case 'f': out->kind = Json::kBool; out->b = false; return literal("false");
      case 'n': out->kind = Json::kNull; return literal("null");
      default: return number(out);
    }
  }

  bool object(Json* out, int depth) {
    out->kind = Json::kObject;
    ++p_;
    space();
    if (p_ < end_ && *p_ == '}') return ++p_, true;
    for (;;) {
      space();
      if (p_ == end_ || *p_ != '"') return fail("expected a string key");
      std::string key;
      if (!string(&key)) return false;
      space();
      if (p_ == end_ || *p_ != ':') return fail("expected ':'");
      ++p_;
      Json v;
      if (!value(&v, depth + 1)) return false;
      out->fields[key] = std::move(v);
      space();
      if (p_ < end_ && *p_ == ',') { ++p_; continue; }
      if (p_ < end_ && *p_ == '}') return ++p_, true;
      return fail("expected ',' or '}'");
    }
  }

  bool array(Json* out, int depth) {
    out->kind = Json::kArray;
    ++p_;
    space();
    if (p_ < end_ && *p_ == ']') return ++p_, true;
    for (;;) {
      Json v;
      if (!value(&v, depth + 1)) return false;
      out->items.push_back(std::move(v));
      space();
      if (p_ < end_ && *p_ == ',') { ++p_; continue; }
      if (p_ < end_ && *p_ == ']') return ++p_, true;
      return fail("expected ',' or ']'");
    }
  }

  bool hex4(uint32_t* v) {
    if (end_ - p_ < 4) return fail("truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = *p_++;
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return fail("bad \\u escape");
      *v = *v * 16 + (uint32_t)d;
    }
    return true;
  }

  static void utf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back((char)cp);
    } else if (cp < 0x800) {
      s->push_back((char)(0xC0 | (cp >> 6)));
      s->push_back((char)(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back((char)(0xE0 | (cp >> 12)));
      s->push_back((char)(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back((char)(0x80 | (cp & 0x3F)));
    } else {
      s->push_back((char)(0xF0 | (cp >> 18)));
      s->push_back((char)(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back((char)(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back((char)(0x80 | (cp & 0x3F)));
    }
  }

  bool string(std::string* s) {
    ++p_;  // the opening quote
    while (p_ < end_ && *p_ != '"') {
      const unsigned char c = (unsigned char)*p_++;
      if (c < 0x20) return fail("control character in a string");
      if (c != '\\') { s->push_back((char)c); continue; }
      if (p_ == end_) break;
      const char e = *p_++;
      switch (e) {
        case '"': case '\\': case '/': s->push_back(e); break;
        case 'b': s->push_back('\b'); break;
        case 'f': s->push_back('\f'); break;
        case 'n': s->push_back('\n'); break;
        case 'r': s->push_back('\r'); break;
        case 't': s->push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00 && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            uint32_t lo;
            if (!hex4(&lo)) return false;
            if (lo < 0xDC00 || lo >= 0xE000) return fail("unpaired surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(cp, s);
          break;
        }
        default: return fail("bad escape in a string");
      }
    }
    if (p_ == end_) return fail("unterminated string");
    ++p_;
    return true;
  }

  bool number(Json* out) {
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ == end_ || !(*p_ >= '0' && *p_ <= '9')) return fail("invalid value");
    while (p_ < end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E' || *p_ == '+' || *p_ == '-')) ++p_;
    const std::string text(start, p_);
    char* stop = nullptr;
    out->kind = Json::kNumber;
    out->num = std::strtod(text.c_str(), &stop);
    if (stop != text.c_str() + text.size()) return fail("invalid number");
    return true;
  }

  const char* p_;
  const char* end_;
  std::string err_;
};

// ------------------------------------------------------------------------------------------------ SHA-256
constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
    0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
    0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
    0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int r) { return (x >> r) | (x << (32 - r)); }

// One 64-byte block into the state h.
void compress_block(uint32_t h[8], const uint8_t* blk) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 | (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}
}  // namespace

bool parse_json(const char* text, size_t n, Json* out, std::string* why) { return Parser(text, n).document(out, why); }

std::string sha256_hex(const uint8_t* data, size_t n) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  size_t done = 0;
  for (; n - done >= 64; done += 64) compress_block(h, data + done);
  // the tail, a 1 bit, zeros, and the message length in bits (big-endian) in one or two final blocks
  uint8_t last[128] = {0};
  const size_t rest = n - done;
  if (rest) std::memcpy(last, data + done, rest);
  last[rest] = 0x80;
  const size_t blocks = rest + 1 + 8 <= 64 ? 1 : 2;
  const uint64_t bits = (uint64_t)n * 8;
  for (int i = 0; i < 8; ++i) last[blocks * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
  for (size_t b = 0; b < blocks; ++b) compress_block(h, last + 64 * b);
  static const char* hex = "0123456789abcdef";
  std::string s(64, '0');
  for (int i = 0; i < 32; ++i) {
    const uint8_t byte = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
    s[2 * i] = hex[byte >> 4];
    s[2 * i + 1] = hex[byte & 15];
  }
  return s;
}

}  // namespace capi
}  // namespace ek
