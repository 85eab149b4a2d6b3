#pragma once
// The vocabulary shared by config, policy, the access log and metrics.

#include <cstdint>
#include <optional>
#include <string_view>

namespace egressd {

// What a flow was recognised as (the access log's `proto`).
enum class Proto : std::uint8_t { tls, http, h2c, tcp, connect };

std::string_view to_string(Proto p) noexcept;
std::optional<Proto> parse_proto(std::string_view text) noexcept;

}  // namespace egressd
