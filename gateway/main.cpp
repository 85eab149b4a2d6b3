// egressd's entry point: only wiring. Everything testable lives in the
// libraries, which the unit tests link.
#include <iostream>

#include "egressd/cli/cli.hpp"
#include "egressd/server/gateway.hpp"

int main(int argc, char** argv) {
  const egressd::cli::RunGateway run = [](const std::string& config_path,
                                          const std::string& log_level, std::ostream& err) {
    return egressd::server::run_gateway({config_path, log_level}, err);
  };
  return egressd::cli::run_cli(argc, argv, std::cout, std::cerr, run);
}
