#include "uzswap/device/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>
#include <utility>

#include "uzswap/common/text_file.h"

namespace uzswap {

LoopDevice LoopDevice::attach(int backing_fd, const std::string& name, unsigned block_size) {
  const int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (control < 0) throw std::system_error(errno, std::generic_category(), "open /dev/loop-control");
  // Another process may take the free device between GET_FREE and CONFIGURE.
  for (int attempt = 0; attempt < 16; ++attempt) {
    const int index = ioctl(control, LOOP_CTL_GET_FREE);
    if (index < 0) {
      const int err = errno;
      close(control);
      throw std::system_error(err, std::generic_category(), "LOOP_CTL_GET_FREE");
    }
    LoopDevice dev;
    dev.index_ = index;
    dev.path_ = "/dev/loop" + std::to_string(index);
    dev.fd_ = open(dev.path_.c_str(), O_RDWR | O_CLOEXEC);
    if (dev.fd_ < 0) {
      if (errno == ENOENT) continue;  // udev has not made the node yet
      const int err = errno;
      close(control);
      throw std::system_error(err, std::generic_category(), "open " + dev.path_);
    }
    loop_config config{};
    config.fd = static_cast<__u32>(backing_fd);
    config.block_size = block_size;
    config.info.lo_flags = LO_FLAGS_DIRECT_IO | LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), name.c_str(),
                 LO_NAME_SIZE - 1);
    if (ioctl(dev.fd_, LOOP_CONFIGURE, &config) == 0) {
      close(control);
      return dev;
    }
    const int err = errno;
    close(dev.fd_);
    dev.fd_ = -1;
    if (err == EBUSY) continue;
    close(control);
    throw std::system_error(err, std::generic_category(), "LOOP_CONFIGURE " + dev.path_);
  }
  close(control);
  throw std::system_error(EBUSY, std::generic_category(), "no free loop device after 16 tries");
}

Result<LoopDevice> LoopDevice::open_existing(const std::string& path) {
  if (path.rfind("/dev/loop", 0) != 0) return failure(std::make_error_code(std::errc::invalid_argument));
  LoopDevice dev;
  const char* const end = path.c_str() + path.size();
  if (const auto [ptr, ec] = std::from_chars(path.c_str() + 9, end, dev.index_); ec != std::errc{} || ptr != end)
    return failure(std::make_error_code(std::errc::invalid_argument));
  dev.path_ = path;
  dev.fd_ = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (dev.fd_ < 0) return failure(errno_error());
  return dev;
}

LoopDevice::~LoopDevice() { detach(); }

LoopDevice::LoopDevice(LoopDevice&& other) noexcept { *this = std::move(other); }

LoopDevice& LoopDevice::operator=(LoopDevice&& other) noexcept {
  if (this != &other) {
    detach();
    fd_ = std::exchange(other.fd_, -1);
    index_ = std::exchange(other.index_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

Result<bool> LoopDevice::direct_io() const {
  const auto value = read_text_file("/sys/block/loop" + std::to_string(index_) + "/loop/dio");
  if (!value) return failure(value.error());
  const std::string_view text(*value);
  return text.substr(0, text.find_first_of(" \n")) == "1";
}

void LoopDevice::release() noexcept {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

void LoopDevice::detach() noexcept {
  if (fd_ < 0) return;
  ioctl(fd_, LOOP_CLR_FD, 0);
  close(fd_);
  fd_ = -1;
}

}  // namespace uzswap
