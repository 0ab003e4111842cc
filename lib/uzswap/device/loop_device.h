// A loop device over an open file, configured in one LOOP_CONFIGURE call:
// direct I/O, 4096-byte logical blocks, auto-clear on last close.
#pragma once

#include <string>
#include <system_error>

namespace uzswap {

class LoopDevice {
 public:
  // Attaches the first free loop device to `backing_fd` (opened O_DIRECT).
  // Throws std::system_error. `name` goes into the device's lo_file_name.
  static LoopDevice attach(int backing_fd, const std::string& name, unsigned block_size);

  // Opens a loop device another process attached (to detach it later).
  // Throws std::system_error.
  static LoopDevice open_existing(const std::string& path);

  LoopDevice() = default;
  ~LoopDevice();
  LoopDevice(LoopDevice&& other) noexcept;
  LoopDevice& operator=(LoopDevice&& other) noexcept;

  const std::string& path() const noexcept { return path_; }
  int index() const noexcept { return index_; }
  bool attached() const noexcept { return fd_ >= 0; }

  // /sys/block/loopN/loop/dio: "1" when the loop driver really does direct I/O.
  bool direct_io() const;

  // Detaches: the device goes away when its last opener (swap, if still on)
  // closes it.
  void detach() noexcept;
  // Closes this handle without detaching the device.
  void release() noexcept;

 private:
  int fd_ = -1;
  int index_ = -1;
  std::string path_;
};

}  // namespace uzswap
