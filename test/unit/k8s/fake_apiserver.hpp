#pragma once
// Runs test/k8s/fake_apiserver.py (python3 + openssl CLI) on 127.0.0.1 with
// free ports, in a temporary directory, and drives its control interface.

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "temp_dir.hpp"

namespace egressd::k8s::test {

class FakeApiServer {
 public:
  explicit FakeApiServer(const std::string& token = "test-token", double bookmark_interval = 0) {
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    const std::string interval = std::to_string(bookmark_interval);
    const std::string d = dir_.path().string();
    const std::string log = dir_.file("server.log");
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      dup2(out[1], 1);
      const int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (err >= 0) dup2(err, 2);
      close(out[0]);
      close(out[1]);
      execl("/usr/bin/python3", "python3", EGRESSD_FAKE_APISERVER, "--dir", d.c_str(), "--token",
            token.c_str(), "--bookmark-interval", interval.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    // The first line says where it listens.
    std::string line;
    char c = 0;
    while (read(out[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    close(out[0]);
    if (line.empty()) throw std::runtime_error("fake_apiserver.py did not start");
    const auto v = boost::json::parse(line);
    port_ = static_cast<std::uint16_t>(v.at("port").as_int64());
    control_port_ = static_cast<std::uint16_t>(v.at("control_port").as_int64());
    kubeconfig_ = std::string(v.at("kubeconfig").as_string());
  }
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;
  ~FakeApiServer() { kill(); }

  // Stops the server process (the API server goes away).
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  [[nodiscard]] const std::string& kubeconfig() const { return kubeconfig_; }
  [[nodiscard]] const TempDir& dir() const { return dir_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }

  // POSTs one control command; returns the answer. Throws on failure.
  boost::json::value control(const boost::json::object& command) {
    namespace asio = boost::asio;
    namespace http = boost::beast::http;
    asio::io_context io;
    asio::ip::tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), control_port_});
    http::request<http::string_body> req{http::verb::post, "/", 11};
    req.set(http::field::host, "127.0.0.1");
    req.body() = boost::json::serialize(command);
    req.prepare_payload();
    http::write(socket, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(socket, buf, res);
    auto answer = boost::json::parse(res.body());
    if (res.result_int() != 200) {
      throw std::runtime_error("control: " + boost::json::serialize(answer));
    }
    return answer;
  }

  void put_pod(const std::string& ns, const std::string& name, boost::json::array ips,
               boost::json::object labels = {}, const std::string& phase = "Running") {
    control({{"op", "put_pod"},
             {"namespace", ns},
             {"name", name},
             {"ips", std::move(ips)},
             {"labels", std::move(labels)},
             {"phase", phase},
             {"serviceAccount", name + "-sa"}});
  }
  void put_namespace(const std::string& name, boost::json::object labels = {}) {
    control({{"op", "put_namespace"}, {"name", name}, {"labels", std::move(labels)}});
  }
  void delete_pod(const std::string& ns, const std::string& name, bool silent = false) {
    control({{"op", "delete"},
             {"resource", "pods"},
             {"namespace", ns},
             {"name", name},
             {"silent", silent}});
  }
  // How many requests of `kind` ("list pods", "watch namespaces", ...).
  std::int64_t requests(const std::string& kind) {
    const auto stats = control({{"op", "stats"}});
    const auto* n = stats.at("requests").as_object().if_contains(kind);
    return n != nullptr ? n->as_int64() : 0;
  }
  std::int64_t open_watches(const std::string& resource) {
    return control({{"op", "stats"}}).at("watches").at(resource).as_int64();
  }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t control_port_ = 0;
  std::string kubeconfig_;
};

}  // namespace egressd::k8s::test
