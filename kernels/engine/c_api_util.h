// Helpers of the C API (c_api.cpp): a small JSON reader for manifest.json and native/config.json, and SHA-256.
// Internal to libedgekit.so.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ek {
namespace capi {

// A parsed JSON value. Numbers keep their double value; objects keep their keys sorted (duplicates: the last wins,
// as in Python's json module).
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> items;
  std::map<std::string, Json> fields;

  const Json* get(const std::string& key) const;  // the field `key` of an object, or nullptr
  bool is_int() const;                              // a number with no fractional part
};

// Parses `text` (UTF-8) as one JSON value. Returns false and sets *why on malformed input.
bool parse_json(const char* text, size_t n, Json* out, std::string* why);

// The SHA-256 digest of `n` bytes, as 64 lowercase hex digits.
std::string sha256_hex(const uint8_t* data, size_t n);

}  // namespace capi
}  // namespace ek
