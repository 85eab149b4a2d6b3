#include "egressd/k8s/client_config.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "egressd/core/ip.hpp"

namespace egressd::k8s {

namespace {

// Credentials and CA bundles are small; a larger file is a mistake.
constexpr std::uintmax_t kMaxFileBytes = std::uintmax_t{4} << 20;

bool read_file(const std::string& path, std::string& out, std::string& error) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    error = path + ": cannot read: " + ec.message();
    return false;
  }
  if (size > kMaxFileBytes) {
    error = path + ": larger than 4 MiB, not a credential or CA file";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = path + ": cannot open";
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    error = path + ": read error";
    return false;
  }
  out = std::move(ss).str();
  return true;
}

std::string trim(std::string_view s) {
  const auto ws = " \t\r\n";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

void clear_openssl_errors() {
  ERR_clear_error();
}

struct BioDeleter {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const noexcept { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;

BioPtr memory_bio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Certificates in a PEM bundle (0 when none parses).
int count_certificates(const std::string& pem) {
  auto bio = memory_bio(pem);
  int n = 0;
  while (bio) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    ++n;
  }
  clear_openssl_errors();  // the loop ends on a "no start line" error
  return n;
}

// Checks that `cert_pem` and `key_pem` parse and belong together.
bool check_key_pair(const std::string& cert_pem, const std::string& key_pem,
                    const std::string& where, std::string& error) {
  auto cbio = memory_bio(cert_pem);
  X509Ptr cert(cbio ? PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr) : nullptr);
  auto kbio = memory_bio(key_pem);
  KeyPtr key(kbio ? PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr) : nullptr);
  bool ok = true;
  if (!cert) {
    error = where + ": the client certificate is not a PEM certificate";
    ok = false;
  } else if (!key) {
    error = where + ": the client key is not an unencrypted PEM private key";
    ok = false;
  } else if (X509_check_private_key(cert.get(), key.get()) != 1) {
    error = where + ": the client key does not match the client certificate";
    ok = false;
  }
  clear_openssl_errors();
  return ok;
}

// "https://host[:port][/prefix]". Plain http is refused: the bearer token
// would travel in clear.
bool parse_server(std::string_view url, ClientConfig& out, std::string& error) {
  constexpr std::string_view kScheme = "https://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    error = "the server URL \"" + std::string(url) + "\" is not https://";
    return false;
  }
  std::string_view rest = url.substr(kScheme.size());
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos ||
      path.find_first_of("?#") != std::string_view::npos) {
    error = "the server URL \"" + std::string(url) + "\" has user info, a query or a fragment";
    return false;
  }
  std::string_view host;
  std::string_view port;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      error = "the server URL \"" + std::string(url) + "\" has an unclosed '['";
      return false;
    }
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        error = "the server URL \"" + std::string(url) + "\" is malformed after ']'";
        return false;
      }
      port = after.substr(1);
      has_port = true;
    }
    if (!IpAddress::parse(host) || IpAddress::parse(host)->is_v4()) {
      error = "the server URL \"" + std::string(url) + "\" has an invalid IPv6 address";
      return false;
    }
  } else {
    const auto colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
  }
  if (host.empty()) {
    error = "the server URL \"" + std::string(url) + "\" has no host";
    return false;
  }
  out.port = 443;
  if (has_port) {
    unsigned value = 0;
    bool ok = !port.empty() && port.size() <= 5;
    for (char c : port) {
      if (c < '0' || c > '9') ok = false;
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (!ok || value == 0 || value > 65535) {
      error = "the server URL \"" + std::string(url) + "\" has an invalid port";
      return false;
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  out.host = std::string(host);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.path_prefix = std::string(path);
  return true;
}

// A kubeconfig list entry: [{name: X, <field>: {...}}, ...] -> the mapping
// under <field> of the entry named `name`: nullopt when there is no such
// entry, a null node when the entry has no (or an empty) <field>.
std::optional<YAML::Node> find_named(const YAML::Node& list, const std::string& name,
                                     const char* field) {
  if (!list || !list.IsSequence()) return std::nullopt;
  for (const auto& entry : list) {
    if (!entry.IsMap()) continue;
    const auto n = entry["name"];
    if (n && n.IsScalar() && n.Scalar() == name) {
      const auto v = entry[field];
      return v ? v : YAML::Node(YAML::NodeType::Null);
    }
  }
  return std::nullopt;
}

std::string scalar(const YAML::Node& map, const char* key) {
  if (!map || !map.IsMap()) return {};
  const auto v = map[key];
  return v && v.IsScalar() ? v.Scalar() : std::string();
}

bool has_key(const YAML::Node& map, const char* key) {
  return map && map.IsMap() && map[key] && !map[key].IsNull();
}

std::string relative_to(const std::filesystem::path& dir, const std::string& file) {
  std::filesystem::path p(file);
  if (p.is_relative()) p = dir / p;
  return p.string();
}

// `data` (base64) or `file` (read), whichever is set; data wins as in
// kubectl. False with `error` set on a problem; true with `out` empty when
// neither is set.
bool data_or_file(const YAML::Node& map, const char* data_key, const char* file_key,
                  const std::filesystem::path& dir, const std::string& where, std::string& out,
                  std::string& error) {
  if (const auto data = scalar(map, data_key); !data.empty()) {
    auto decoded = decode_base64(data);
    if (!decoded) {
      error = where + ": " + data_key + " is not valid base64";
      return false;
    }
    out = std::move(*decoded);
    return true;
  }
  if (const auto file = scalar(map, file_key); !file.empty()) {
    std::string read_error;
    if (!read_file(relative_to(dir, file), out, read_error)) {
      error = where + ": " + file_key + " " + read_error;
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<std::string> decode_base64(std::string_view text) {
  std::array<int, 256> table{};
  table.fill(-1);
  const std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
  }
  std::string out;
  out.reserve(text.size() / 4 * 3);
  std::array<int, 4> group{};
  std::size_t n = 0;
  int padding = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (padding > 0 && c != '=') return std::nullopt;  // data after padding
    int v = 0;
    if (c == '=') {
      if (n < 2) return std::nullopt;
      ++padding;
    } else {
      v = table[static_cast<unsigned char>(c)];
      if (v < 0) return std::nullopt;
    }
    group[n++] = v;
    if (n == 4) {
      const unsigned bits =
          (static_cast<unsigned>(group[0]) << 18) | (static_cast<unsigned>(group[1]) << 12) |
          (static_cast<unsigned>(group[2]) << 6) | static_cast<unsigned>(group[3]);
      out.push_back(static_cast<char>((bits >> 16) & 0xFF));
      if (padding < 2) out.push_back(static_cast<char>((bits >> 8) & 0xFF));
      if (padding < 1) out.push_back(static_cast<char>(bits & 0xFF));
      n = 0;
      if (padding > 0) padding = 3;  // nothing but more '=' may follow: refuse
    }
  }
  if (n != 0) return std::nullopt;
  return out;
}

bool ClientConfig::read_token(std::string& token_out, std::string& error) const {
  if (token_file.empty()) {
    token_out = token;
    return true;
  }
  std::string content;
  if (!read_file(token_file, content, error)) return false;
  content = trim(content);
  if (content.empty()) {
    error = token_file + ": the token file is empty";
    return false;
  }
  token_out = std::move(content);
  return true;
}

InClusterSource InClusterSource::from_environment() {
  InClusterSource s;
  // Read once at start-up, before any thread that could setenv exists.
  if (const char* h = std::getenv("KUBERNETES_SERVICE_HOST"))
    s.host = h;  // NOLINT(concurrency-mt-unsafe)
  if (const char* p = std::getenv("KUBERNETES_SERVICE_PORT"))
    s.port = p;  // NOLINT(concurrency-mt-unsafe)
  return s;
}

ClientConfigResult load_in_cluster(const InClusterSource& source) {
  ClientConfigResult r;
  if (source.host.empty() || source.port.empty()) {
    r.error =
        "in-cluster configuration needs KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT (not "
        "running in a pod? set kubernetes.kubeconfig)";
    return r;
  }
  ClientConfig c;
  c.source = "in-cluster";
  const bool v6 = source.host.find(':') != std::string::npos;
  const std::string url =
      "https://" + (v6 ? "[" + source.host + "]" : source.host) + ":" + source.port;
  if (!parse_server(url, c, r.error)) {
    r.error = "in-cluster configuration: " + r.error;
    return r;
  }
  const std::filesystem::path dir(source.dir);
  const std::string ca_path = (dir / "ca.crt").string();
  if (!read_file(ca_path, c.ca_pem, r.error)) return r;
  if (count_certificates(c.ca_pem) == 0) {
    r.error = ca_path + ": holds no PEM certificate";
    return r;
  }
  c.token_file = (dir / "token").string();
  std::string token;
  if (!c.read_token(token, r.error)) return r;
  r.config = std::move(c);
  return r;
}

ClientConfigResult load_kubeconfig(const std::string& path) {
  ClientConfigResult r;
  std::string text;
  if (!read_file(path, text, r.error)) return r;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    r.error = path + ":" + std::to_string(e.mark.line + 1) + ":" +
              std::to_string(e.mark.column + 1) + ": not valid YAML: " + e.msg;
    return r;
  }
  if (!root.IsMap()) {
    r.error = path + ": not a kubeconfig (the top level is not a mapping)";
    return r;
  }
  const std::string context_name = scalar(root, "current-context");
  if (context_name.empty()) {
    r.error = path + ": no current-context";
    return r;
  }
  const auto context_entry = find_named(root["contexts"], context_name, "context");
  if (!context_entry || !context_entry->IsMap()) {
    r.error = path + ": current-context \"" + context_name + "\" is not in contexts";
    return r;
  }
  const YAML::Node& context = *context_entry;
  const std::string cluster_name = scalar(context, "cluster");
  const auto cluster_entry = find_named(root["clusters"], cluster_name, "cluster");
  if (cluster_name.empty() || !cluster_entry || !cluster_entry->IsMap()) {
    r.error = path + ": cluster \"" + cluster_name + "\" of context \"" + context_name +
              "\" is not in clusters";
    return r;
  }
  const YAML::Node& cluster = *cluster_entry;
  const std::string user_name = scalar(context, "user");
  YAML::Node user(YAML::NodeType::Null);  // null = anonymous
  if (!user_name.empty()) {
    const auto user_entry = find_named(root["users"], user_name, "user");
    if (!user_entry || !(user_entry->IsMap() || user_entry->IsNull())) {
      r.error =
          path + ": user \"" + user_name + "\" of context \"" + context_name + "\" is not in users";
      return r;
    }
    user = *user_entry;
  }

  ClientConfig c;
  c.source = path;
  const std::string where = path + ": cluster \"" + cluster_name + "\"";
  const std::string server = scalar(cluster, "server");
  if (server.empty()) {
    r.error = where + " has no server";
    return r;
  }
  if (!parse_server(server, c, r.error)) {
    r.error = where + ": " + r.error;
    return r;
  }
  if (const auto skip = scalar(cluster, "insecure-skip-tls-verify"); skip == "true") {
    r.error = where +
              " sets insecure-skip-tls-verify, which egressd refuses: pod identity grants rights, "
              "so the API server's certificate is always verified (give its CA instead)";
    return r;
  }
  if (has_key(cluster, "proxy-url")) {
    r.error = where + " sets proxy-url, which egressd does not support (it connects directly)";
    return r;
  }
  c.tls_server_name = scalar(cluster, "tls-server-name");
  const auto dir = std::filesystem::path(path).parent_path();
  if (!data_or_file(cluster, "certificate-authority-data", "certificate-authority", dir, where,
                    c.ca_pem, r.error)) {
    return r;
  }
  if (!c.ca_pem.empty() && count_certificates(c.ca_pem) == 0) {
    r.error = where + ": the certificate authority holds no PEM certificate";
    return r;
  }

  if (user.IsMap()) {
    const std::string uwhere = path + ": user \"" + user_name + "\"";
    for (const char* unsupported : {"exec", "auth-provider", "username", "password"}) {
      if (has_key(user, unsupported)) {
        r.error = uwhere + " uses " + unsupported +
                  ", which egressd does not support (use token, tokenFile or a client "
                  "certificate)";
        return r;
      }
    }
    c.token = trim(scalar(user, "token"));
    if (const auto tf = scalar(user, "tokenFile"); !tf.empty()) {
      c.token_file = relative_to(dir, tf);
      std::string token;
      if (!c.read_token(token, r.error)) {
        r.error = uwhere + ": tokenFile " + r.error;
        return r;
      }
    }
    if (!data_or_file(user, "client-certificate-data", "client-certificate", dir, uwhere,
                      c.client_cert_pem, r.error) ||
        !data_or_file(user, "client-key-data", "client-key", dir, uwhere, c.client_key_pem,
                      r.error)) {
      return r;
    }
    if (c.client_cert_pem.empty() != c.client_key_pem.empty()) {
      r.error = uwhere + " has a client certificate without a key, or a key without a certificate";
      return r;
    }
    if (!c.client_cert_pem.empty() &&
        !check_key_pair(c.client_cert_pem, c.client_key_pem, uwhere, r.error)) {
      return r;
    }
  }
  r.config = std::move(c);
  return r;
}

ClientConfigResult load_client_config(const config::KubernetesSpec& spec) {
  if (spec.kubeconfig.empty()) return load_in_cluster(InClusterSource::from_environment());
  return load_kubeconfig(spec.kubeconfig);
}

}  // namespace egressd::k8s
