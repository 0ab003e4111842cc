#include "supervisor.h"

#include "reclaim_safety.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "uzswap/device/swap.h"
#include "uzswap/nbd/nbd_listen.h"
#include "uzswap/pool/zpool.h"

extern char** environ;

namespace uzswap {

namespace {


// Requests as large as the kernel allows (fs.fuse.max_pages_limit, 256 pages
// by default), up to 4 MiB per worker buffer.
std::uint32_t fuse_max_request_bytes() {
  unsigned pages = 256;
  std::ifstream limit("/proc/sys/fs/fuse/max_pages_limit");
  if (unsigned v; limit >> v && v > 0) pages = std::min(v, 1024u);
  return pages * static_cast<std::uint32_t>(kPageSize);
}

std::string own_binary() {
  std::error_code ec;
  std::string path = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  // After an upgrade replaced the file, the link names the old inode.
  const std::string deleted = " (deleted)";
  if (path.size() > deleted.size() && path.ends_with(deleted)) path.resize(path.size() - deleted.size());
  return path;
}

bool in_proc_swaps(const std::string& device) {
  std::ifstream swaps("/proc/swaps");
  std::string line;
  while (std::getline(swaps, line))
    if (line.rfind(device + " ", 0) == 0 || line.rfind(device + "\t", 0) == 0) return true;
  return false;
}

void keep_across_exec(int fd) {
  const int flags = fcntl(fd, F_GETFD);
  if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
}

constexpr const char* kFdNameFuse = "uzswap-fuse";

}  // namespace

Supervisor::Supervisor(DaemonConfig config, std::vector<std::string> argv)
    : config_(std::move(config)), argv_(std::move(argv)), binary_(own_binary()) {}

Supervisor::~Supervisor() {
  if (fuse_fd_ >= 0) close(fuse_fd_);
  if (nbd_listen_fd_ >= 0) close(nbd_listen_fd_);
}

int Supervisor::run() {
  try {
    start();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    sd_notifyf(0, "STATUS=failed to start: %s", e.what());
    if (state_ != nullptr) SharedState::destroy(state_->ids());
    return kExitStartFailed;
  }

  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const int sfd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (sfd < 0) {
    spdlog::error("signalfd: {}", std::strerror(errno));
    return kExitStartFailed;
  }

  auto started = std::chrono::steady_clock::now();
  child_ = spawn();
  int code = kExitStopped;
  for (;;) {
    pollfd p{sfd, POLLIN, 0};
    poll(&p, 1, 200);
    hold_loop_device();
    signalfd_siginfo info;
    while (p.revents & POLLIN && read(sfd, &info, sizeof(info)) == sizeof(info)) {
      const int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGTERM || sig == SIGINT) {
        stopping_ = true;
        // The serving process detaches the loop device once swap is off;
        // an fd held here would keep it, and the FUSE mount, busy.
        loop_.release();
        spdlog::info("stopping: asking serving process {} to swap off", child_);
        if (child_ > 0) kill(child_, SIGTERM);
      } else if (sig == SIGHUP && child_ > 0) {
        spdlog::info("SIGHUP: replacing serving process {} with {}", child_, binary_);
        kill(child_, SIGHUP);
      }
      p.revents = 0;
      pollfd again{sfd, POLLIN, 0};
      if (poll(&again, 1, 0) > 0) p.revents = again.revents;
    }
    int status = 0;
    if (child_ > 0 && waitpid(child_, &status, WNOHANG) == child_) {
      const auto lived = std::chrono::steady_clock::now() - started;
      // A process that dies within a second of its start, again and again,
      // is not helped by more starts at once; one that served is.
      quick_deaths_ = lived < std::chrono::seconds(1) ? quick_deaths_ + 1 : 0;
      child_ = -1;
      if (!on_exit(status)) {
        code = WIFEXITED(status) && WEXITSTATUS(status) == kExitStopped ? kExitStopped : kExitStartFailed;
        break;
      }
      if (quick_deaths_ > 1) {
        // A serving process that dies at once again and again: do not spin.
        const auto pause = std::chrono::milliseconds(std::min(5000u, 200u * quick_deaths_));
        std::this_thread::sleep_for(pause);
      }
      started = std::chrono::steady_clock::now();
      child_ = spawn();
      if (stopping_ && child_ > 0) kill(child_, SIGTERM);
    }
  }
  close(sfd);
  if (code == kExitStopped && getenv("NOTIFY_SOCKET") != nullptr) {
    // Swap is off: nothing to keep for a restart.
    sd_notify(0, "FDSTOREREMOVE=1\nFDNAME=uzswap-fuse");
  }
  // The serving process unmounted and detached what it could; whatever is
  // left (a failed start) goes now.
  loop_.detach();
  mount_.reset();
  const bool attached = state_ != nullptr && state_->header().loop_device[0] != '\0';
  if (state_ != nullptr && (code == kExitStopped || !attached)) {
    // Nothing depends on the state any more: it goes with the last process
    // that has it attached, and its key with it.
    state_->forget_key();
    SharedState::destroy(state_->ids());
  }
  if (nbd_listen_fd_ >= 0) {
    close(nbd_listen_fd_);
    nbd_listen_fd_ = -1;
    remove_listener_path(nbd_address_);
  }
  if (code == kExitStopped || !attached) {
    std::error_code ignored;
    std::filesystem::remove(config_.swap_file(), ignored);
    std::filesystem::remove(config_.device_link(), ignored);
    // The instance's own directory, whoever made it (a dead instance may
    // have); only if empty.
    std::filesystem::remove(config_.instance_dir(), ignored);
  }
  return code;
}

void Supervisor::start() {
  if (auto ok = check_backing_file(config_); !ok) throw StartError(ok.error());
  std::filesystem::create_directories(config_.run_dir);
  try {
    lock_ = std::make_unique<InstanceLock>(config_.lock_file());
  } catch (const std::system_error& e) {
    if (e.code().value() == EWOULDBLOCK)
      throw StartError("an uzswapd named '" + config_.name + "' is already running (" + config_.lock_file() +
                       " is locked)");
    throw StartError(e.what());
  }
  // The supervisor is small; locking it costs little and keeps it out of
  // the swap it holds.
  enter_reclaim_path();
  for (int s : {SIGPIPE, SIGUSR1, SIGUSR2, SIGQUIT}) signal(s, SIG_IGN);

  adopt_or_create_state();
  if (config_.nbd_frontend()) {
    // The listening socket outlives a serving process, as the FUSE
    // connection does: clients reconnect to the next one.
    listen_nbd();
    return;
  }
  if (fuse_fd_ < 0) {
    clean_dead_area();
    mount_fuse();
  }
  store_fds_with_systemd();
}

void Supervisor::listen_nbd() {
  const auto address = parse_listen_address(config_.nbd_listen_address());
  if (!address)
    throw StartError("--nbd-listen: " + listen_address_message(config_.nbd_listen_address(), address.error()));
  if (address->kind == ListenAddress::Kind::unix_socket && address->path == config_.nbd_socket()) {
    const std::string dir = config_.instance_dir();
    if (!std::filesystem::exists(dir)) std::filesystem::create_directory(dir);
    chmod(dir.c_str(), 0755);
  }
  const auto fd = open_listener(*address, config_.nbd_allow_remote);
  if (!fd) throw StartError("--nbd-listen: " + listener_message(*address, fd.error()));
  nbd_listen_fd_ = *fd;
  nbd_address_ = *address;
  spdlog::info("NBD: listening on {}", address->to_string());
}

void Supervisor::adopt_or_create_state() {
  // systemd's file descriptor store gives back the FUSE connection an
  // earlier supervisor of this unit stored; the state lives on in shared
  // memory under this instance's name. Both together are the same swap
  // area, with every page.
  char** names = nullptr;
  const int n = getenv("LISTEN_FDS") != nullptr ? sd_listen_fds_with_names(1, &names) : 0;
  for (int i = 0; i < n; ++i) {
    const int fd = SD_LISTEN_FDS_START + i;
    const std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
    if (name == kFdNameFuse && fuse_fd_ < 0) fuse_fd_ = fd;
    else close(fd);
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) free(names[i]);
    free(names);
  }
  const std::optional<StateIds> left = SharedState::find(config_.name);
  if (left && fuse_fd_ >= 0) {
    auto adopted = SharedState::attach(*left);
    if (adopted) {
      state_ = std::make_unique<SharedState>(std::move(*adopted));
      spdlog::info("took over the swap area of an earlier uzswapd (its FUSE connection from systemd's file "
                   "descriptor store, its state from shared memory)");
      return;
    }
    spdlog::error("the state an earlier uzswapd left is unusable ({}): starting afresh", adopted.error());
  }
  if (fuse_fd_ >= 0) {
    close(fuse_fd_);
    fuse_fd_ = -1;
  }
  if (left) {
    // Its supervisor died without systemd keeping its FUSE connection: that
    // area cannot be served any more (clean_dead_area() takes it down).
    spdlog::warn("removing the shared memory an earlier uzswapd named '{}' left behind", config_.name);
    SharedState::destroy(*left);
  }
  const unsigned nodes = online_numa_nodes();
  // The pool's address space, sized by the configured limit: a serving
  // process refuses a larger one (ZPool::region_bytes_for_limit).
  const std::uint64_t ram = static_cast<std::uint64_t>(sysconf(_SC_PHYS_PAGES)) * kPageSize;
  const std::size_t region = ZPool::region_bytes_for_limit(pool_limit_bytes(ram, config_.max_pool_percent));
  try {
    state_ = std::make_unique<SharedState>(
        SharedState::create({config_.size_bytes / kPageSize, nodes, region,
                             config_.backing_encryption ? BackingCipher::xchacha20_poly1305 : BackingCipher::none},
                            config_.name));
  } catch (const std::system_error& e) {
    throw StartError(std::string("shared state: ") + e.what());
  }
}

void Supervisor::clean_dead_area() {
  // A swap area an earlier uzswapd of this name left when it died with its
  // supervisor: nothing can serve it any more (its memory is gone), and a
  // second area beside it would take half the swap-outs. Take it down.
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/block", ec)) {
    const std::string dev = entry.path().filename().string();
    if (dev.rfind("loop", 0) != 0) continue;
    std::ifstream backing(entry.path() / "loop" / "backing_file");
    std::string file;
    if (!std::getline(backing, file) || file != config_.swap_file()) continue;
    const std::string path = "/dev/" + dev;
    spdlog::warn("{} is a swap area a dead uzswapd named '{}' left behind: taking it down", path, config_.name);
    if (in_proc_swaps(path)) {
      if (auto off = swap_off(path); !off) spdlog::error("swapoff {}: {}", path, off.error().message());
    }
    if (auto stale = LoopDevice::open_existing(path)) stale->detach();
    else spdlog::error("open {}: {}", path, stale.error().message());
  }
  umount2(config_.swap_file().c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
}

void Supervisor::mount_fuse() {
  const std::string dir = config_.instance_dir();
  if (!std::filesystem::exists(dir)) std::filesystem::create_directory(dir);
  chmod(dir.c_str(), 0755);
  const int placeholder = open(config_.swap_file().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (placeholder < 0) throw StartError("cannot create " + config_.swap_file() + ": " + std::strerror(errno));
  close(placeholder);
  FuseConfig fuse;
  fuse.size_bytes = state_->header().slots * kPageSize;
  fuse.max_write = fuse_max_request_bytes();
  try {
    mount_ = std::make_unique<FuseMount>(config_.swap_file(), fuse);
  } catch (const std::system_error& e) {
    throw StartError(std::string(e.what()) + " (is the fuse module loaded and /dev/fuse present?)");
  }
  state_->header().fuse_max_write = fuse.max_write;
}

void Supervisor::store_fds_with_systemd() {
  if (getenv("NOTIFY_SOCKET") == nullptr) return;
  const int fuse = mount_ ? mount_->fd() : fuse_fd_;
  const auto store = [](const char* name, int fd) {
    const std::string msg = std::string("FDSTORE=1\nFDNAME=") + name;
    const int r = sd_pid_notify_with_fds(0, 0, msg.c_str(), &fd, 1);
    if (r <= 0) spdlog::warn("could not put {} into systemd's file descriptor store (FileDescriptorStoreMax=?)", name);
  };
  store(kFdNameFuse, fuse);
}

void Supervisor::hold_loop_device() {
  if (loop_.attached() || state_ == nullptr || stopping_) return;
  const StateHeader& h = state_->header();
  if (h.loop_device[0] == '\0') return;
  const std::string path(h.loop_device, strnlen(h.loop_device, sizeof(h.loop_device)));
  // Not there (yet): tried again on the next tick.
  if (auto existing = LoopDevice::open_existing(path)) loop_ = std::move(*existing);
}

pid_t Supervisor::spawn() {
  ServeFds fds;
  fds.lock = lock_->fd();
  fds.fuse = nbd_listen_fd_ >= 0 ? nbd_listen_fd_ : mount_ ? mount_->fd() : fuse_fd_;
  fds.meta_shm = state_->ids().meta;
  // Everything exec needs, made before fork.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view v(*e);
    if (v.starts_with(std::string(kServeEnv) + "=") || v.starts_with(std::string(kBinaryEnv) + "=") ||
        v.starts_with("LISTEN_FDS=") || v.starts_with("LISTEN_PID=") || v.starts_with("LISTEN_FDNAMES="))
      continue;
    env_strings.emplace_back(v);
  }
  env_strings.push_back(std::string(kServeEnv) + "=" + format_serve_fds(fds));
  env_strings.push_back(std::string(kBinaryEnv) + "=" + binary_);
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (auto& s : argv_) args.push_back(s.data());
  args.push_back(nullptr);

  const pid_t pid = fork();
  if (pid < 0) {
    spdlog::critical("fork: {}", std::strerror(errno));
    return -1;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGPIPE, SIGUSR1, SIGUSR2, SIGQUIT}) signal(s, SIG_DFL);
    keep_across_exec(fds.lock);
    keep_across_exec(fds.fuse);
    execve(binary_.c_str(), args.data(), envp.data());
    _exit(127);
  }
  spdlog::info("serving process {} started ({})", pid, binary_);
  return pid;
}

bool Supervisor::on_exit(int status) {
  const StateHeader& h = state_->header();
  const bool attached = h.loop_device[0] != '\0';
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    if (code == kExitStopped) {
      spdlog::info("serving process stopped cleanly");
      return false;
    }
    if (code == kExitHandover) {
      spdlog::info("serving process handed over; starting {}", binary_);
      quick_deaths_ = 0;
      return true;
    }
    if (code == kExitStartFailed && !attached) return false;  // it said why
    spdlog::error("serving process exited with {}; starting a new one", code);
  } else if (WIFSIGNALED(status)) {
    spdlog::error("serving process killed by signal {} ({}); starting a new one: no page is lost",
                  WTERMSIG(status), strsignal(WTERMSIG(status)));
  }
  if (!attached && quick_deaths_ > 5) {
    spdlog::error("serving process keeps dying before it attached the device: giving up");
    return false;
  }
  return true;
}

}  // namespace uzswap
