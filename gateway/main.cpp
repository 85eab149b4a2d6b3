// egressd's entry point: only wiring. Everything testable lives in the
// libraries, which the unit tests link.
#include <iostream>

#include "egressd/cli/cli.hpp"
#include "egressd/server/gateway.hpp"

#if defined(EGRESSD_JEMALLOC)
// Read by jemalloc at start-up: pages freed by closed flows go back to the
// system within about a second (its default keeps them 10 s), purged by a
// background thread so an idle gateway shrinks too.
extern "C" {
const char* malloc_conf = "dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true";
}
#endif

int main(int argc, char** argv) {
  const egressd::cli::RunGateway run = [](const std::string& config_path,
                                          const std::string& log_level, std::ostream& err) {
    return egressd::server::run_gateway({config_path, log_level}, err);
  };
  return egressd::cli::run_cli(argc, argv, std::cout, std::cerr, run);
}
