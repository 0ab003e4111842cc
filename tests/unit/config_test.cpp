#include "uzswap/daemon/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace uzswap {
namespace {

// Never reads the machine's own config file: an empty one stands in.
std::expected<ParsedArgs, std::string> parse(std::vector<std::string> args) {
  const std::string empty = "/tmp/uzswap-config-empty-" + std::to_string(getpid()) + ".conf";
  std::ofstream{empty};
  args.insert(args.begin(), "uzswapd");
  args.push_back("--config");
  args.push_back(empty);
  auto parsed = parse_daemon_args(args);
  std::filesystem::remove(empty);
  return parsed;
}

TEST(DaemonConfig, DefaultsWorkOutOfTheBox) {
  const auto p = parse({});
  ASSERT_TRUE(p.has_value()) << p.error();
  const DaemonConfig& c = p->config;
  EXPECT_EQ(c.name, "uzswap");
  EXPECT_EQ(c.codec, Codec::lz4);
  EXPECT_EQ(c.level, kDefaultLz4Acceleration);
  EXPECT_EQ(c.max_pool_percent, 20u);
  EXPECT_EQ(c.accept_threshold_percent, 90u);
  EXPECT_GT(c.swap_priority, 0) << "above disk swap";
  EXPECT_TRUE(c.swapon);
  EXPECT_GT(c.size_bytes, 0u);
  EXPECT_EQ(c.size_bytes % 4096, 0u);
  EXPECT_EQ(c.swap_file(), "/run/uzswap/uzswap/swap");
  EXPECT_EQ(c.control_socket(), "/run/uzswap/uzswap/control");
}

TEST(DaemonConfig, FlagsSetEveryKey) {
  const auto p = parse({"--name", "fast", "--size", "2G", "--compressor", "zstd", "--level", "5",
                        "--max-pool-percent", "30", "--accept-threshold-percent", "80",
                        "--swap-priority", "50", "--no-swapon", "--workers", "4",
                        "--backing-file", "/var/lib/uzswap/backing"});
  ASSERT_TRUE(p.has_value()) << p.error();
  const DaemonConfig& c = p->config;
  EXPECT_EQ(c.name, "fast");
  EXPECT_EQ(c.size_bytes, 2ull << 30);
  EXPECT_EQ(c.codec, Codec::zstd);
  EXPECT_EQ(c.level, 5);
  EXPECT_EQ(c.max_pool_percent, 30u);
  EXPECT_EQ(c.accept_threshold_percent, 80u);
  EXPECT_EQ(c.swap_priority, 50);
  EXPECT_FALSE(c.swapon);
  EXPECT_EQ(c.workers, 4u);
  EXPECT_EQ(c.backing_file, "/var/lib/uzswap/backing");
}

TEST(DaemonConfig, BadValuesAreRefusedNamingTheKey) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--compressor", "deflate"}, "--compressor"},
      {{"--max-pool-percent", "0"}, "--max-pool-percent"},
      {{"--max-pool-percent", "95"}, "--max-pool-percent"},
      {{"--accept-threshold-percent", "101"}, "--accept-threshold-percent"},
      {{"--swap-priority", "-5"}, "--swap-priority"},
      {{"--size", "lots"}, "--size"},
      {{"--size", "1000"}, "--size"},
      {{"--size", "100K"}, "--size"},
      {{"--name", "../etc"}, "--name"},
      {{"--name", ""}, "--name"},
      {{"--frontend", "ublk"}, "--frontend"},
      {{"--nbd-listen", "unix:/run/x.sock"}, "--nbd-listen"},  // needs --frontend nbd
      {{"--frontend", "nbd", "--nbd-listen", "tcp:0.0.0.0:10809"}, "--nbd-listen"},  // off the loopback
      {{"--frontend", "nbd", "--nbd-listen", "tcp:127.0.0.1"}, "--nbd-listen"},
      {{"--frontend", "nbd", "--nbd-listen", "unix:relative"}, "--nbd-listen"},
      {{"--frontend", "nbd", "--nbd-connections", "0"}, "--nbd-connections"},
      {{"--backing-nbd", "http://x/"}, "--backing-nbd"},
      {{"--backing-nbd", "nbd://127.0.0.1/", "--backing-file", "/var/tmp/b"}, "--backing-nbd"},
      {{"--compressor", "zstd", "--level", "40"}, "--level"},
      {{"--backing-file", "relative/path"}, "--backing-file"},
      {{"--max-pool-percent", "twenty"}, "--max-pool-percent"},
      {{"--no-such-flag"}, "--no-such-flag"},
  };
  for (const auto& [args, key] : cases) {
    const auto p = parse(args);
    ASSERT_FALSE(p.has_value()) << args[0];
    EXPECT_NE(p.error().find(key), std::string::npos) << "error '" << p.error() << "' should name " << key;
  }
}

TEST(DaemonConfig, NbdFrontEndAndRemoteTier) {
  auto p = parse({"--frontend", "nbd", "--name", "mem"});
  ASSERT_TRUE(p.has_value()) << p.error();
  EXPECT_TRUE(p->config.nbd_frontend());
  EXPECT_EQ(p->config.nbd_listen_address(), "unix:/run/uzswap/mem/nbd");
  EXPECT_EQ(p->config.nbd_connections, 8u);
  p = parse({"--frontend", "nbd", "--nbd-listen", "tcp:10.1.2.3:10809", "--nbd-allow-remote"});
  ASSERT_TRUE(p.has_value()) << p.error();
  EXPECT_EQ(p->config.nbd_listen_address(), "tcp:10.1.2.3:10809");
  p = parse({"--backing-nbd", "nbd+unix:///?socket=/run/uzswap/mem/nbd"});
  ASSERT_TRUE(p.has_value()) << p.error();
  EXPECT_TRUE(p->config.has_backing());
  EXPECT_FALSE(p->config.nbd_frontend());
}

TEST(DaemonConfig, ReclaimSettingsAreCheckedNamingTheKey) {
  auto p = parse({"--watermark-scale-factor", "1000", "--idle-writeback-seconds", "30", "--psi-stall-ms",
                  "150", "--psi-window-ms", "2000", "--psi-reclaim-pages", "0", "--events-reclaim-pages", "64"});
  ASSERT_TRUE(p.has_value()) << p.error();
  EXPECT_EQ(p->config.watermark_scale_factor, 1000u);
  EXPECT_EQ(p->config.idle_writeback_seconds, 30u);
  EXPECT_EQ(p->config.psi_stall_ms, 150u);
  EXPECT_EQ(p->config.psi_window_ms, 2000u);
  EXPECT_EQ(p->config.psi_reclaim_pages, 0u);
  EXPECT_EQ(p->config.events_reclaim_pages, 64u);
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--watermark-scale-factor", "0"}, {"--watermark-scale-factor", "5000"},
           {"--idle-writeback-seconds", "-1"}, {"--psi-window-ms", "100"}, {"--psi-stall-ms", "abc"}}) {
    p = parse({flag, value});
    ASSERT_FALSE(p.has_value()) << flag << " " << value;
    EXPECT_NE(p.error().find(flag), std::string::npos) << p.error();
  }
  p = parse({"--psi-stall-ms", "1000", "--psi-window-ms", "1000"});
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("--psi-stall-ms"), std::string::npos) << p.error();
}

TEST(DaemonConfig, TheConfigFileSetsKeysAndFlagsWin) {
  const std::string path = "/tmp/uzswap-config-test-" + std::to_string(getpid()) + ".conf";
  {
    std::ofstream f(path);
    f << "name = fromfile\nmax-pool-percent = 33\ncompressor = zstd\nno-swapon = true\n";
  }
  const auto p = parse_daemon_args({"uzswapd", "--config", path, "--max-pool-percent", "44"});
  std::filesystem::remove(path);
  ASSERT_TRUE(p.has_value()) << p.error();
  EXPECT_EQ(p->config.name, "fromfile");
  EXPECT_EQ(p->config.codec, Codec::zstd);
  EXPECT_EQ(p->config.max_pool_percent, 44u);
  EXPECT_FALSE(p->config.swapon);
}

TEST(DaemonConfig, ABadValueInTheConfigFileNamesTheKey) {
  const std::string path = "/tmp/uzswap-config-bad-" + std::to_string(getpid()) + ".conf";
  {
    std::ofstream f(path);
    f << "max-pool-percent = 500\n";
  }
  const auto p = parse_daemon_args({"uzswapd", "--config", path});
  std::filesystem::remove(path);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("max-pool-percent"), std::string::npos) << p.error();
}

TEST(DaemonConfig, UnknownKeysInTheConfigFileAreRefused) {
  const std::string path = "/tmp/uzswap-config-typo-" + std::to_string(getpid()) + ".conf";
  {
    std::ofstream f(path);
    f << "max-pool-precent = 20\n";
  }
  const auto p = parse_daemon_args({"uzswapd", "--config", path});
  std::filesystem::remove(path);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("max-pool-precent"), std::string::npos) << p.error();
}

TEST(DaemonConfig, ANamedConfigFileThatIsMissingIsAnError) {
  const auto p = parse_daemon_args({"uzswapd", "--config", "/nonexistent/uzswapd.conf"});
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("/nonexistent/uzswapd.conf"), std::string::npos) << p.error();
}

TEST(DaemonConfig, HelpAndVersionExitAtOnce) {
  auto p = parse({"--help"});
  ASSERT_TRUE(p.has_value());
  EXPECT_TRUE(p->exit_now);
  EXPECT_NE(p->output.find("--max-pool-percent"), std::string::npos);
  p = parse({"--version"});
  ASSERT_TRUE(p.has_value());
  EXPECT_TRUE(p->exit_now);
}

TEST(DaemonConfig, SizesTakeBinarySuffixes) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("4K"), 4096u);
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("2g"), 2ull << 30);
  EXPECT_EQ(parse_size("1GiB"), 1ull << 30);
  EXPECT_EQ(parse_size("1T"), 1ull << 40);
  EXPECT_FALSE(parse_size("").has_value());
  EXPECT_FALSE(parse_size("-1G").has_value());
  EXPECT_FALSE(parse_size("1.5G").has_value());
  EXPECT_FALSE(parse_size("1X").has_value());
  EXPECT_FALSE(parse_size("999999999999999T").has_value());
}

TEST(DaemonConfig, BackingFileMustBeOnADiskFilesystem) {
  DaemonConfig c;
  c.backing_file = "/dev/shm/uzswap-backing";
  auto ok = check_backing_file(c);
  ASSERT_FALSE(ok.has_value());
  EXPECT_NE(ok.error().find("tmpfs"), std::string::npos) << ok.error();

  c.backing_file = "/run/uzswap/uzswap/backing";
  // Not tmpfs, so the own-directory check is what fires.
  c.run_dir = "/var/tmp/uzswap-run-" + std::to_string(getpid());
  std::filesystem::create_directories(c.run_dir + "/uzswap");
  c.backing_file = c.run_dir + "/uzswap/backing";
  ok = check_backing_file(c);
  std::filesystem::remove_all(c.run_dir);
  ASSERT_FALSE(ok.has_value());
  EXPECT_NE(ok.error().find("own run directory"), std::string::npos) << ok.error();

  c.backing_file = "/nonexistent-dir/backing";
  EXPECT_FALSE(check_backing_file(c).has_value());

  c.backing_file = "/var/tmp/uzswap-backing";
  c.run_dir = kDefaultRunDir;
  EXPECT_TRUE(check_backing_file(c).has_value()) << check_backing_file(c).error();
}

TEST(DaemonConfig, CopyOnWriteNetworkAndOverlayFilesystemsAreRefused) {
  EXPECT_NE(refused_backing_filesystem(0x9123683e).value_or("").find("btrfs"), std::string::npos);
  EXPECT_NE(refused_backing_filesystem(0x6969).value_or("").find("NFS"), std::string::npos);
  EXPECT_NE(refused_backing_filesystem(0x794c7630).value_or("").find("overlayfs"), std::string::npos);
  EXPECT_NE(refused_backing_filesystem(0x01021997).value_or("").find("9p"), std::string::npos);
  EXPECT_FALSE(refused_backing_filesystem(0xef53).has_value()) << "ext4";
  EXPECT_FALSE(refused_backing_filesystem(0x58465342).has_value()) << "xfs";
}

TEST(DaemonConfig, WorkersDefaultToOnePerCpuAndMoreWithABackingTier) {
  EXPECT_EQ(default_workers(1, false), 2u);
  EXPECT_EQ(default_workers(2, false), 2u);
  EXPECT_EQ(default_workers(16, false), 16u);
  EXPECT_EQ(default_workers(2, true), 8u);
  EXPECT_EQ(default_workers(32, true), 32u);
}

TEST(DaemonConfig, InstanceNames) {
  EXPECT_TRUE(valid_instance_name("uzswap"));
  EXPECT_TRUE(valid_instance_name("fast-1_b"));
  EXPECT_FALSE(valid_instance_name(""));
  EXPECT_FALSE(valid_instance_name("a/b"));
  EXPECT_FALSE(valid_instance_name(std::string(33, 'a')));
}

}  // namespace
}  // namespace uzswap
