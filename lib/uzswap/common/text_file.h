// Reading a whole (small) kernel or config file as text. An unreadable or
// vanished file reads as empty: callers treat that as "gone".
#pragma once

#include <fstream>
#include <sstream>
#include <string>

namespace uzswap {

inline std::string read_text_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream text;
  text << f.rdbuf();
  return text.str();
}

}  // namespace uzswap
