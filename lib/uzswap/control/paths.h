// Where a uzswapd instance keeps its files, for the daemon's configuration
// (lib/uzswap/daemon/config.h) and uzswapctl alike: constants only, so that
// a client needs nothing of the daemon to find it.
//
//   <run dir>/<name>.lock      the instance lock
//   <run dir>/<name>/swap      the FUSE file (--frontend fuse)
//   <run dir>/<name>/device    a link to the device that is swap
//   <run dir>/<name>/control   the control socket (protocol.h)
//   <run dir>/<name>/nbd       the NBD socket (--frontend nbd, by default)
#pragma once

namespace uzswap::paths {

inline constexpr char kConfigFile[] = "/etc/uzswap/uzswapd.conf";
inline constexpr char kRunDir[] = "/run/uzswap";  // --run-dir
inline constexpr char kDefaultName[] = "uzswap";  // --name: 1-32 of [A-Za-z0-9_-]

inline constexpr char kLockSuffix[] = ".lock";
inline constexpr char kSwapFile[] = "swap";
inline constexpr char kDeviceLink[] = "device";
inline constexpr char kControlSocket[] = "control";
inline constexpr char kNbdSocket[] = "nbd";

}  // namespace uzswap::paths
