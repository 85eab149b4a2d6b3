#pragma once
// JSON text for the access log and the CLI. Names in records come from
// untrusted bytes, so every string goes through append_json_string.

#include <string>
#include <string_view>

namespace egressd::log {

// Appends `s` as a JSON string literal (with quotes). Escapes `"` and `\`,
// writes control bytes as \uXXXX (\n \r \t \b \f in short form), and
// replaces every byte sequence that is not valid UTF-8 (overlong forms,
// surrogates, code points above U+10FFFF, truncated sequences) with U+FFFD,
// one replacement per maximal invalid subpart as the Unicode standard
// recommends. The output is always valid UTF-8 and valid JSON.
void append_json_string(std::string& out, std::string_view s);

// Convenience: the quoted literal as a new string.
std::string json_string(std::string_view s);

}  // namespace egressd::log
