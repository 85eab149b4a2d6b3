#pragma once
// How to reach the Kubernetes API server: where, which CA to trust, and who
// we are. Loaded once at start-up, either in-cluster or from a kubeconfig.
//
// In-cluster (kubernetes.kubeconfig = ""): KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT, and the service account's `token` and `ca.crt`
// in /var/run/secrets/kubernetes.io/serviceaccount (the directory can be
// changed, for tests).
//
// Kubeconfig: current-context -> its cluster and user.
// - cluster: `server` (https only: a bearer token is never sent in clear;
//   an optional path prefix is kept), `certificate-authority-data` (base64
//   PEM) or `certificate-authority` (a file, relative to the kubeconfig's
//   directory); neither = the system's trust store, as kubectl does;
//   `tls-server-name` overrides the name checked in the certificate and
//   sent as SNI. `insecure-skip-tls-verify: true` is REFUSED: identity
//   selectors grant rights, so the peer that tells us who holds an IP must
//   be authenticated. `proxy-url` is refused (egressd connects directly).
// - user: `token`, `tokenFile`, `client-certificate(-data)` with
//   `client-key(-data)`; token and certificate may be combined. `exec`,
//   `auth-provider`, `username`/`password` are refused (we run no plugins).
//   A user with none of them is anonymous (allowed: the server decides).
//
// Every error is one sentence naming the file it concerns. Nothing here
// throws. Certificates and keys are checked at load (PEM parses, the key
// matches the certificate), so a broken file fails start-up, not later.
//
// Token rotation: with a token file (in-cluster always, kubeconfig
// `tokenFile`), read_token() re-reads the file on every call; the watcher
// calls it on every (re)connect, so a 401 after a rotation heals itself.
//
// Threads: a ClientConfig is an immutable value; read_token() may be called
// from any thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "egressd/config/spec.hpp"

namespace egressd::k8s {

inline constexpr std::string_view kServiceAccountDir =
    "/var/run/secrets/kubernetes.io/serviceaccount";

struct ClientConfig {
  std::string host;  // DNS name or IP literal (IPv6 without brackets)
  std::uint16_t port = 443;
  std::string path_prefix;      // "" or "/prefix" (no trailing slash), before /api/...
  std::string tls_server_name;  // name checked in the certificate and sent as SNI; "" = host
  std::string ca_pem;           // PEM bundle; "" = the system's trust store
  std::string client_cert_pem;  // "" = no client certificate
  std::string client_key_pem;
  std::string token;       // static bearer token, "" = none
  std::string token_file;  // re-read by read_token(); wins over `token`
  std::string source;      // where it came from, for messages: "in-cluster" or the kubeconfig path

  // The bearer token to send now ("" = none): the token file's current
  // content (whitespace trimmed) when there is one, else `token`. False,
  // with one sentence in `error`, when the token file cannot be read or is
  // empty.
  bool read_token(std::string& token_out, std::string& error) const;

  // The name to verify in the server certificate: tls_server_name or host.
  [[nodiscard]] const std::string& verify_name() const noexcept {
    return tls_server_name.empty() ? host : tls_server_name;
  }
};

struct ClientConfigResult {
  std::optional<ClientConfig> config;  // set when there is no error
  std::string error;                   // one sentence otherwise
  [[nodiscard]] bool ok() const noexcept { return config.has_value(); }
};

struct InClusterSource {
  std::string host;  // KUBERNETES_SERVICE_HOST
  std::string port;  // KUBERNETES_SERVICE_PORT
  std::string dir = std::string(kServiceAccountDir);
  // Reads the two variables from the process environment.
  static InClusterSource from_environment();
};

ClientConfigResult load_in_cluster(const InClusterSource& source);
ClientConfigResult load_kubeconfig(const std::string& path);
// kubernetes.kubeconfig "" = in-cluster from the environment, else the file.
ClientConfigResult load_client_config(const config::KubernetesSpec& spec);

// Strict base64 (RFC 4648, padding required, whitespace between groups
// ignored): nullopt on anything else. Exposed for tests.
std::optional<std::string> decode_base64(std::string_view text);

}  // namespace egressd::k8s
