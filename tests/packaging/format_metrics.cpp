// Prints what `uzswapctl stats --prometheus` prints for the status JSON on
// stdin (uzswap::format_prometheus), so tests can learn the metric names the
// daemon exports without a running daemon.
#include <cstdio>
#include <iostream>
#include <string>
#include <nlohmann/json.hpp>

#include "uzswap/control/format.h"

int main() {
  // fread rather than istreambuf_iterator: GCC 12 warns on the latter
  // (-Wnull-dereference inside <streambuf>), and CI builds with -Werror.
  std::string text;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0;) text.append(buffer, n);
  nlohmann::json status;
  try {
    status = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "format-metrics: stdin is not JSON: " << e.what() << "\n";
    return 2;
  }
  std::cout << uzswap::format_prometheus(status);
  return 0;
}
