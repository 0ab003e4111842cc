// Prints what `uzswapctl stats --prometheus` prints for the status JSON on
// stdin (uzswap::format_prometheus), so tests can learn the metric names the
// daemon exports without a running daemon.
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "uzswap/control/format.h"

int main() {
  const std::string text(std::istreambuf_iterator<char>(std::cin), {});
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
