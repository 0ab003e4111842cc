#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "uzswap/control/control_server.h"
#include "uzswap/control/format.h"

namespace uzswap {
namespace {

using nlohmann::json;

std::string socket_path() { return "/tmp/uzswap-control-test-" + std::to_string(getpid()); }

TEST(ControlServer, AnswersEachLineAndPassesTheAccessLevel) {
  ControlServer server(socket_path(), std::nullopt, [](std::string_view req, Access access) {
    return std::string(req) + (access == Access::admin ? " as admin" : " as other");
  });
  std::string error;
  auto client = ControlClient::connect(server.path(), error);
  ASSERT_TRUE(client.has_value()) << error;
  EXPECT_EQ(client->request("hello", error), "hello as admin");
  EXPECT_EQ(client->request("{garbage", error), "{garbage as admin");
  EXPECT_EQ(client->request("", error), " as admin");
}

TEST(ControlServer, AHandlerThatThrowsGivesAnErrorReplyAndTheServerGoesOn) {
  ControlServer server(socket_path(), std::nullopt, [](std::string_view req, Access) -> std::string {
    if (req == "boom") throw std::runtime_error("boom");
    return "fine";
  });
  std::string error;
  auto client = ControlClient::connect(server.path(), error);
  ASSERT_TRUE(client.has_value());
  EXPECT_NE(client->request("boom", error)->find("\"ok\":false"), std::string::npos);
  EXPECT_EQ(client->request("again", error), "fine");
}

TEST(ControlServer, ANonRootPeerIsRefusedWithAReason) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  ControlServer server(socket_path(), std::nullopt, [](std::string_view, Access) { return "secret"; });
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  const pid_t child = fork();
  if (child == 0) {
    close(pipefd[0]);
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(3);
    std::string error;
    auto client = ControlClient::connect(server.path(), error);
    std::string reply = client ? client->request("{\"cmd\":\"status\"}", error).value_or(error) : error;
    (void)!write(pipefd[1], reply.data(), reply.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string reply;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) reply.append(buf, static_cast<std::size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(reply.find("permission denied"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("secret"), std::string::npos);
}

TEST(ControlServer, AccessFollowsCredentials) {
  EXPECT_EQ(ControlServer::access_for(0, 0, getpid(), std::nullopt), Access::admin);
  EXPECT_EQ(ControlServer::access_for(1000, 1000, getpid(), std::nullopt), Access::none);
  EXPECT_EQ(ControlServer::access_for(1000, 1000, getpid(), gid_t{1000}), Access::reader);
  EXPECT_EQ(ControlServer::access_for(1000, 1000, getpid(), gid_t{4242}), Access::none);
}

TEST(ControlClient, ADaemonThatIsNotRunningGivesOneLine) {
  std::string error;
  EXPECT_FALSE(ControlClient::connect("/tmp/uzswap-no-such-socket", error).has_value());
  EXPECT_NE(error.find("not running"), std::string::npos) << error;
}

json sample_status() {
  return json::parse(R"({
    "name": "uzswap", "compressor": "lz4",
    "device": {"file": "/run/uzswap/uzswap/swap", "loop": "/dev/loop0", "size_bytes": 1073741824, "swap_on": true},
    "stored_pages": 1000, "same_filled_pages": 100, "incompressible_pages": 10,
    "orig_bytes": 4096000, "compressed_bytes": 1500000, "pool_bytes": 1600000,
    "written_back_pages": 0, "rejects": {"pool_full": 2, "alloc_failed": 1},
    "cgroups": [{"path": "/", "stored_pages": 1000, "compressed_bytes": 1500000, "written_back_pages": 0}],
    "reclaim": {"enabled": true, "nodes": [{"node": 0, "pool_bytes": 1600000, "share_bytes": 4000000,
      "watermarks": {"min": 100000, "low": 300000, "high": 500000},
      "wakeups": {"watermark": 3, "psi": 1, "memory_events": 0, "request": 2, "idle": 0},
      "balance_runs": 4, "scanned": 900, "written": 700, "idle_written": 0,
      "low_wmark_hit_quickly": 1, "high_wmark_hit_quickly": 0, "giveups": 0, "given_up": false}]}
  })");
}

TEST(Format, StatusTableShowsTheZramctlColumns) {
  const std::string t = format_status_table(sample_status());
  for (const char* column : {"LOOP", "DISKSIZE", "DATA", "COMPR", "POOL", "RATIO", "SAME", "INCOMP", "WB", "REJECTS"})
    EXPECT_NE(t.find(column), std::string::npos) << column;
  EXPECT_NE(t.find("/dev/loop0"), std::string::npos);
  EXPECT_NE(t.find("1G"), std::string::npos);
  EXPECT_NE(t.find("2.56"), std::string::npos) << t;  // 4096000 / 1600000
}

TEST(Format, PrometheusTextIsOpenMetrics) {
  const std::string p = format_prometheus(sample_status());
  EXPECT_NE(p.find("# TYPE uzswap_stored_pages gauge"), std::string::npos);
  EXPECT_NE(p.find("uzswap_stored_pages{name=\"uzswap\"} 1000"), std::string::npos);
  EXPECT_NE(p.find("uzswap_rejects_total{name=\"uzswap\",reason=\"pool_full\"} 2"), std::string::npos);
  EXPECT_EQ(p.substr(p.size() - 6), "# EOF\n");
}

TEST(Format, ReclaimTableHasARowPerNode) {
  const std::string t = format_reclaim_table(sample_status());
  EXPECT_NE(t.find("WAKE:WMARK"), std::string::npos) << t;
  EXPECT_NE(t.find("700"), std::string::npos) << t;
  EXPECT_TRUE(format_reclaim_table(json::object()).empty()) << "reclaim off: no table";
  const std::string p = format_prometheus(sample_status());
  EXPECT_NE(p.find("uzswap_reclaim_wakeups_total{name=\"uzswap\",node=\"0\",cause=\"psi\"} 1"),
            std::string::npos) << p;
  EXPECT_NE(p.find("uzswap_reclaim_written_total{name=\"uzswap\",node=\"0\"} 700"), std::string::npos);
}

TEST(Format, MissingFieldsDoNotCrash) {
  EXPECT_FALSE(format_status_table(json::object()).empty());
  EXPECT_FALSE(format_cgroups_table(json::object()).empty());
  EXPECT_FALSE(format_prometheus(json::object()).empty());
}

TEST(Format, HumanBytes) {
  EXPECT_EQ(human_bytes(0), "0B");
  EXPECT_EQ(human_bytes(4096), "4K");
  EXPECT_EQ(human_bytes(1536 * 1024), "1.5M");
  EXPECT_EQ(human_bytes(1ull << 30), "1G");
}

}  // namespace
}  // namespace uzswap
