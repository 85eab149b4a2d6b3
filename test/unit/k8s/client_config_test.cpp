#include "egressd/k8s/client_config.hpp"

#include <cstdlib>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "temp_dir.hpp"

namespace egressd::k8s {
namespace {

using test::read_file;
using test::TempDir;
using test::write_file;
using ::testing::HasSubstr;

std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const auto byte = [&](std::size_t i) -> unsigned {
    return i < in.size() ? static_cast<unsigned char>(in[i]) : 0U;
  };
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (byte(i) << 16U) | (byte(i + 1) << 8U) | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63U]);
  }
  if (i + 1 == in.size()) {
    const unsigned v = byte(i) << 16U;
    out += {kAlphabet[(v >> 18U) & 63U], kAlphabet[(v >> 12U) & 63U], '=', '='};
  } else if (i + 2 == in.size()) {
    const unsigned v = (byte(i) << 16U) | (byte(i + 1) << 8U);
    out +=
        {kAlphabet[(v >> 18U) & 63U], kAlphabet[(v >> 12U) & 63U], kAlphabet[(v >> 6U) & 63U], '='};
  }
  return out;
}

// A CA and two client key pairs, made once with the openssl CLI.
class Certs {
 public:
  Certs() {
    const std::string d = dir_.path().string();
    const std::string cmd =
        "cd '" + d +
        "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca >/dev/null 2>&1"
        " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout client.key -out client.crt -days 2 -subj /CN=client >/dev/null 2>&1"
        " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout other.key -out other.crt -days 2 -subj /CN=other >/dev/null 2>&1";
    ok_ = std::system(cmd.c_str()) == 0;  // NOLINT(concurrency-mt-unsafe)
    if (ok_) {
      ca = read_file(dir_.file("ca.crt"));
      client_crt = read_file(dir_.file("client.crt"));
      client_key = read_file(dir_.file("client.key"));
      other_key = read_file(dir_.file("other.key"));
    }
  }
  [[nodiscard]] bool ok() const { return ok_; }
  std::string ca, client_crt, client_key, other_key;

 private:
  TempDir dir_;
  bool ok_ = false;
};

const Certs& certs() {
  static const Certs c;
  return c;
}

// A kubeconfig with one context; `cluster` and `user` are the YAML bodies
// (indented by 4) of the cluster and user entries.
std::string kubeconfig(const std::string& cluster, const std::string& user) {
  return "apiVersion: v1\nkind: Config\ncurrent-context: ctx\n"
         "contexts:\n- name: other\n  context: {cluster: nope, user: nope}\n"
         "- name: ctx\n  context:\n    cluster: c1\n    user: u1\n"
         "clusters:\n- name: c1\n  cluster:\n" +
         cluster + "users:\n- name: u1\n  user:\n" + user;
}

class KubeconfigTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(certs().ok()) << "openssl CLI failed"; }

  ClientConfigResult load(const std::string& cluster, const std::string& user) {
    const std::string path = dir.file("kubeconfig");
    write_file(path, kubeconfig(cluster, user));
    return load_kubeconfig(path);
  }
  std::string ca_data() const {
    return "    certificate-authority-data: " + base64(certs().ca) + "\n";
  }

  TempDir dir;
};

TEST_F(KubeconfigTest, TokenUserWithCaData) {
  const auto r = load("    server: https://10.1.2.3:6443\n" + ca_data(), "    token: abc.def\n");
  ASSERT_TRUE(r.ok()) << r.error;
  const auto& c = *r.config;
  EXPECT_EQ(c.host, "10.1.2.3");
  EXPECT_EQ(c.port, 6443);
  EXPECT_EQ(c.path_prefix, "");
  EXPECT_EQ(c.ca_pem, certs().ca);
  EXPECT_EQ(c.verify_name(), "10.1.2.3");
  std::string token, error;
  ASSERT_TRUE(c.read_token(token, error)) << error;
  EXPECT_EQ(token, "abc.def");
}

TEST_F(KubeconfigTest, ServerUrlForms) {
  struct Case {
    const char* url;
    const char* host;
    std::uint16_t port;
    const char* prefix;
  };
  for (const auto& c : {Case{"https://api.example.com", "api.example.com", 443, ""},
                        Case{"https://[fd00::1]:8443/", "fd00::1", 8443, ""},
                        Case{"https://[fd00::1]", "fd00::1", 443, ""},
                        Case{"https://rancher.example/k8s/clusters/c-1/", "rancher.example", 443,
                             "/k8s/clusters/c-1"}}) {
    const auto r = load(std::string("    server: ") + c.url + "\n" + ca_data(), "    token: t\n");
    ASSERT_TRUE(r.ok()) << c.url << ": " << r.error;
    EXPECT_EQ(r.config->host, c.host);
    EXPECT_EQ(r.config->port, c.port);
    EXPECT_EQ(r.config->path_prefix, c.prefix);
  }
  for (const char* bad :
       {"http://10.0.0.1", "https://", "https://h:0", "https://h:70000", "https://h:x",
        "https://[fd00::1", "https://[10.0.0.1]", "https://u@h", "https://h/?q", "10.0.0.1:443"}) {
    const auto r = load(std::string("    server: \"") + bad + "\"\n" + ca_data(), "");
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.error, HasSubstr("kubeconfig: cluster \"c1\"")) << bad;
  }
}

TEST_F(KubeconfigTest, CaFileRelativeToTheKubeconfig) {
  write_file(dir.file("ca.pem"), certs().ca);
  const auto r = load("    server: https://h\n    certificate-authority: ca.pem\n", "");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->ca_pem, certs().ca);
  EXPECT_TRUE(r.config->token.empty());
  EXPECT_TRUE(r.config->client_cert_pem.empty());
}

TEST_F(KubeconfigTest, NoCaMeansTheSystemStore) {
  const auto r = load("    server: https://h\n    tls-server-name: api.internal\n", "");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.config->ca_pem.empty());
  EXPECT_EQ(r.config->verify_name(), "api.internal");
}

TEST_F(KubeconfigTest, BadCa) {
  auto r = load("    server: https://h\n    certificate-authority-data: '%%%'\n", "");
  EXPECT_THAT(r.error, HasSubstr("certificate-authority-data is not valid base64"));
  r = load("    server: https://h\n    certificate-authority-data: " + base64("not a pem") + "\n",
           "");
  EXPECT_THAT(r.error, HasSubstr("holds no PEM certificate"));
  r = load("    server: https://h\n    certificate-authority: missing.pem\n", "");
  EXPECT_THAT(r.error, HasSubstr("missing.pem: cannot read"));
  EXPECT_THAT(r.error, HasSubstr(dir.file("kubeconfig")));
}

TEST_F(KubeconfigTest, InsecureSkipTlsVerifyIsRefused) {
  const auto r = load("    server: https://h\n    insecure-skip-tls-verify: true\n", "");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.error, HasSubstr("insecure-skip-tls-verify"));
  // false is the default and fine.
  EXPECT_TRUE(
      load("    server: https://h\n    insecure-skip-tls-verify: false\n" + ca_data(), "").ok());
}

TEST_F(KubeconfigTest, TokenFileIsReReadOnEveryCall) {
  write_file(dir.file("token"), "first\n");
  const auto r = load("    server: https://h\n" + ca_data(), "    tokenFile: token\n");
  ASSERT_TRUE(r.ok()) << r.error;
  std::string token, error;
  ASSERT_TRUE(r.config->read_token(token, error));
  EXPECT_EQ(token, "first");
  write_file(dir.file("token"), "second");
  ASSERT_TRUE(r.config->read_token(token, error));
  EXPECT_EQ(token, "second");
  write_file(dir.file("token"), "  \n");
  EXPECT_FALSE(r.config->read_token(token, error));
  EXPECT_THAT(error, HasSubstr("empty"));
  std::filesystem::remove(dir.file("token"));
  EXPECT_FALSE(r.config->read_token(token, error));
  EXPECT_THAT(error, HasSubstr(dir.file("token")));
}

TEST_F(KubeconfigTest, MissingTokenFileFailsAtLoad) {
  const auto r = load("    server: https://h\n" + ca_data(), "    tokenFile: /nonexistent/tok\n");
  EXPECT_THAT(r.error, HasSubstr("tokenFile /nonexistent/tok: cannot read"));
}

TEST_F(KubeconfigTest, ClientCertificateDataAndFiles) {
  auto r = load("    server: https://h\n" + ca_data(),
                "    client-certificate-data: " + base64(certs().client_crt) +
                    "\n    client-key-data: " + base64(certs().client_key) + "\n");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->client_cert_pem, certs().client_crt);
  EXPECT_EQ(r.config->client_key_pem, certs().client_key);

  write_file(dir.file("c.crt"), certs().client_crt);
  write_file(dir.file("c.key"), certs().client_key);
  r = load("    server: https://h\n" + ca_data(),
           "    client-certificate: c.crt\n    client-key: " + dir.file("c.key") +
               "\n    token: also\n");
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->client_key_pem, certs().client_key);
  EXPECT_EQ(r.config->token, "also");
}

TEST_F(KubeconfigTest, ClientCertificateProblems) {
  auto r = load("    server: https://h\n" + ca_data(),
                "    client-certificate-data: " + base64(certs().client_crt) + "\n");
  EXPECT_THAT(r.error, HasSubstr("without a key"));
  r = load("    server: https://h\n" + ca_data(),
           "    client-certificate-data: " + base64(certs().client_crt) +
               "\n    client-key-data: " + base64(certs().other_key) + "\n");
  EXPECT_THAT(r.error, HasSubstr("does not match"));
  r = load("    server: https://h\n" + ca_data(),
           "    client-certificate-data: " + base64("junk") +
               "\n    client-key-data: " + base64(certs().client_key) + "\n");
  EXPECT_THAT(r.error, HasSubstr("not a PEM certificate"));
}

TEST_F(KubeconfigTest, UnsupportedUsersAndClustersAreRefused) {
  for (const char* user : {"    exec: {command: aws}\n", "    auth-provider: {name: gcp}\n",
                           "    username: a\n    password: b\n"}) {
    const auto r = load("    server: https://h\n" + ca_data(), user);
    EXPECT_THAT(r.error, HasSubstr("user \"u1\" uses")) << user;
  }
  const auto r = load("    server: https://h\n    proxy-url: http://p:3128\n" + ca_data(), "");
  EXPECT_THAT(r.error, HasSubstr("proxy-url"));
}

TEST_F(KubeconfigTest, StructuralErrorsNameTheFile) {
  const std::string path = dir.file("kc");
  const auto try_text = [&](const std::string& text) {
    write_file(path, text);
    return load_kubeconfig(path).error;
  };
  EXPECT_THAT(try_text("a: [b"), HasSubstr(path + ":"));
  EXPECT_THAT(try_text("a: [b"), HasSubstr("not valid YAML"));
  EXPECT_THAT(try_text("- 1\n"), HasSubstr("not a kubeconfig"));
  EXPECT_THAT(try_text("kind: Config\n"), HasSubstr("no current-context"));
  EXPECT_THAT(try_text("current-context: x\ncontexts: []\n"),
              HasSubstr("current-context \"x\" is not in contexts"));
  EXPECT_THAT(try_text("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"),
              HasSubstr("cluster \"c\" of context \"x\" is not in clusters"));
  EXPECT_THAT(try_text("current-context: x\ncontexts: [{name: x, context: {cluster: c, user: "
                       "u}}]\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"),
              HasSubstr("user \"u\" of context \"x\" is not in users"));
  EXPECT_THAT(try_text("current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
                       "clusters: [{name: c, cluster: {}}]\n"),
              HasSubstr("has no server"));
  EXPECT_THAT(load_kubeconfig(dir.file("absent")).error, HasSubstr(dir.file("absent")));
}

// --- In-cluster ------------------------------------------------------------------

TEST(InCluster, ReadsServiceAccountDirectory) {
  ASSERT_TRUE(certs().ok());
  TempDir dir;
  write_file(dir.file("ca.crt"), certs().ca);
  write_file(dir.file("token"), "sa-token\n");
  InClusterSource src{"10.96.0.1", "443", dir.path().string()};
  const auto r = load_in_cluster(src);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->host, "10.96.0.1");
  EXPECT_EQ(r.config->port, 443);
  EXPECT_EQ(r.config->source, "in-cluster");
  EXPECT_EQ(r.config->ca_pem, certs().ca);
  std::string token, error;
  ASSERT_TRUE(r.config->read_token(token, error));
  EXPECT_EQ(token, "sa-token");
  // Rotation: the kubelet swaps the file; the next read sees it.
  write_file(dir.file("token"), "rotated");
  ASSERT_TRUE(r.config->read_token(token, error));
  EXPECT_EQ(token, "rotated");
}

TEST(InCluster, Ipv6ServiceHost) {
  ASSERT_TRUE(certs().ok());
  TempDir dir;
  write_file(dir.file("ca.crt"), certs().ca);
  write_file(dir.file("token"), "t");
  const auto r = load_in_cluster({"fd00:10:96::1", "6443", dir.path().string()});
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.config->host, "fd00:10:96::1");
  EXPECT_EQ(r.config->port, 6443);
}

TEST(InCluster, Errors) {
  ASSERT_TRUE(certs().ok());
  TempDir dir;
  EXPECT_THAT(load_in_cluster({"", "443", dir.path().string()}).error,
              HasSubstr("KUBERNETES_SERVICE_HOST"));
  EXPECT_THAT(load_in_cluster({"10.96.0.1", "443", dir.path().string()}).error,
              HasSubstr(dir.file("ca.crt")));
  write_file(dir.file("ca.crt"), "garbage");
  EXPECT_THAT(load_in_cluster({"10.96.0.1", "443", dir.path().string()}).error,
              HasSubstr("holds no PEM certificate"));
  write_file(dir.file("ca.crt"), certs().ca);
  EXPECT_THAT(load_in_cluster({"10.96.0.1", "443", dir.path().string()}).error,
              HasSubstr(dir.file("token")));
  write_file(dir.file("token"), "t");
  EXPECT_THAT(load_in_cluster({"10.96.0.1", "99999", dir.path().string()}).error,
              HasSubstr("invalid port"));
}

TEST(Base64, StrictDecoding) {
  EXPECT_EQ(decode_base64(""), "");
  EXPECT_EQ(decode_base64("YQ=="), "a");
  EXPECT_EQ(decode_base64("YWI="), "ab");
  EXPECT_EQ(decode_base64("YWJj"), "abc");
  EXPECT_EQ(decode_base64("YWJj\nZA=="), "abcd");
  for (const char* bad : {"YQ", "YQ=", "Y===", "YQ==YQ==", "YW=j", "YWJ*", "====", "YQ==="}) {
    EXPECT_EQ(decode_base64(bad), std::nullopt) << bad;
  }
  const std::string all = [] {
    std::string s;
    for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
    return s;
  }();
  EXPECT_EQ(decode_base64(base64(all)), all);
  EXPECT_EQ(decode_base64(base64(all.substr(1))), all.substr(1));
  EXPECT_EQ(decode_base64(base64(all.substr(2))), all.substr(2));
}

}  // namespace
}  // namespace egressd::k8s
