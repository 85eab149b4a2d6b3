#pragma once
// The command line (contract "Command line"). main() only calls run_cli.

#include <functional>
#include <iosfwd>
#include <string>

namespace egressd::cli {

// Exit codes of the contract.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // invalid config, failed test case, runtime error
inline constexpr int kExitUsage = 2;    // bad usage

// Runs the gateway for `egressd run`: (config path, log level, err) -> exit
// code. main() passes the data plane's entry point; the CLI itself stays
// free of sockets.
using RunGateway = std::function<int(const std::string& config_path, const std::string& log_level,
                                     std::ostream& err)>;

// Parses argv and runs the command; output goes to `out`, errors to `err`.
// Never throws: every error becomes a sentence on `err` and an exit code.
int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
            const RunGateway& run_gateway = {});

}  // namespace egressd::cli
