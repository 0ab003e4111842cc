// A loop device over an open file, configured in one LOOP_CONFIGURE call:
// direct I/O, 4096-byte logical blocks, auto-clear on last close.
#pragma once

#include <string>
#include <system_error>

#include "uzswap/common/result.h"

namespace uzswap {

class LoopDevice {
 public:
  // Attaches the first free loop device to `backing_fd` (opened O_DIRECT).
  // `name` goes into the device's lo_file_name. A start-up step whose failure
  // aborts the start: throws std::system_error naming the step and the device
  // (EBUSY when no device was free after a few tries).
  static LoopDevice attach(int backing_fd, const std::string& name, unsigned block_size);

  // Opens a loop device another process attached (to detach it later).
  // EINVAL for a path that is not /dev/loopN.
  static Result<LoopDevice> open_existing(const std::string& path);

  LoopDevice() = default;
  ~LoopDevice();
  LoopDevice(LoopDevice&& other) noexcept;
  LoopDevice& operator=(LoopDevice&& other) noexcept;

  const std::string& path() const noexcept { return path_; }
  int index() const noexcept { return index_; }
  bool attached() const noexcept { return fd_ >= 0; }

  // /sys/block/loopN/loop/dio: "1" when the loop driver really does direct
  // I/O; an error when that file cannot be read.
  Result<bool> direct_io() const;

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
