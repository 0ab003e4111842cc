#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "uzswap/control/control_server.h"
#include "uzswap/control/format.h"
#include "uzswap/control/paths.h"
#include "uzswap/control/protocol.h"

namespace uzswap {
namespace {

using nlohmann::json;

std::string socket_path() { return "/tmp/uzswap-control-test-" + std::to_string(getpid()); }

constexpr auto kWait = std::chrono::seconds(10);  // a failure, not a measurement

Result<std::string> ask(const std::string& path, std::string_view line) {
  auto client = ControlClient::connect(path, kWait);
  if (!client) return failure(client.error());
  return client->request(line, kWait);
}

// A raw connection that sends what a test says and reads when it says.
struct RawClient {
  int fd = -1;
  explicit RawClient(const std::string& path) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd);
      fd = -1;
    }
  }
  ~RawClient() {
    if (fd >= 0) close(fd);
  }
  void send_text(std::string_view text) const {
    ASSERT_EQ(::send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  }
  // Everything until the server closes the connection.
  std::string read_to_end() const {
    std::string all;
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) all.append(buf, static_cast<std::size_t>(n));
    return all;
  }
};

// Runs `body` in a child process with these credentials; returns what the
// child wrote to its pipe.
std::string as_user(uid_t uid, gid_t gid, std::vector<gid_t> groups,
                    const std::function<std::string()>& body) {
  int pipefd[2];
  EXPECT_EQ(pipe(pipefd), 0);
  const pid_t child = fork();
  if (child == 0) {
    close(pipefd[0]);
    if (setgroups(groups.size(), groups.data()) != 0 || setresgid(gid, gid, gid) != 0 ||
        setresuid(uid, uid, uid) != 0)
      _exit(3);
    const std::string out = body();
    (void)!write(pipefd[1], out.data(), out.size());
    _exit(0);
  }
  close(pipefd[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(pipefd[0]);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return out;
}

const char* access_name(Access a) {
  return a == Access::admin ? "admin" : a == Access::reader ? "reader" : "none";
}

TEST(ControlServer, AnswersEachLineAndPassesTheAccessLevel) {
  ControlServer server(socket_path(), std::nullopt, [](std::string_view req, Access access) {
    return std::string(req) + (access == Access::admin ? " as admin" : " as other");
  });
  auto client = ControlClient::connect(server.path(), kWait);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  EXPECT_EQ(client->request("hello", kWait), "hello as admin");
  EXPECT_EQ(client->request("{garbage", kWait), "{garbage as admin");
  EXPECT_EQ(client->request("", kWait), " as admin");
}

TEST(ControlServer, PipelinedRequestsAreAnsweredInOrder) {
  ControlServer server(socket_path(), std::nullopt,
                       [](std::string_view req, Access) { return "re:" + std::string(req); });
  RawClient raw(server.path());
  ASSERT_GE(raw.fd, 0);
  raw.send_text("a\nb\nc\n");
  shutdown(raw.fd, SHUT_WR);  // done sending: the server answers, then closes
  EXPECT_EQ(raw.read_to_end(), "re:a\nre:b\nre:c\n");
}

TEST(ControlServer, AHandlerThatThrowsGivesAnErrorReplyAndTheServerGoesOn) {
  ControlServer server(socket_path(), std::nullopt, [](std::string_view req, Access) -> std::string {
    if (req == "boom") throw std::runtime_error("boom");
    return "fine";
  });
  auto client = ControlClient::connect(server.path(), kWait);
  ASSERT_TRUE(client.has_value());
  EXPECT_EQ(client->request("boom", kWait), R"({"error":"internal error","ok":false})");
  EXPECT_EQ(client->request("again", kWait), "fine");
}

TEST(ControlServer, ANonRootPeerIsRefusedWithAReason) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  ControlServer server(socket_path(), std::nullopt, [](std::string_view, Access) { return "secret"; });
  const std::string reply = as_user(65534, 65534, {}, [&] {
    const auto line = ask(server.path(), R"({"cmd":"status"})");
    return line ? *line : ControlClient::describe(line.error(), server.path(), kWait);
  });
  EXPECT_NE(reply.find("permission denied: uid 65534 is not root"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("secret"), std::string::npos);
  EXPECT_EQ(server.stats().refused_access, 1u);
}

TEST(ControlServer, StatsGroupMembershipComesFromThePeersSupplementaryGroups) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  ControlServerOptions options;
  options.reader_group = 4242;
  ControlServer server(socket_path(), options,
                       [](std::string_view, Access access) { return access_name(access); });
  // Member through a supplementary group only (SO_PEERGROUPS), not the primary one.
  EXPECT_EQ(as_user(65534, 65534, {4242}, [&] { return ask(server.path(), "x").value_or("?"); }),
            "reader");
  EXPECT_EQ(as_user(65534, 4242, {}, [&] { return ask(server.path(), "x").value_or("?"); }), "reader");
  const std::string outsider =
      as_user(65534, 65534, {100}, [&] { return ask(server.path(), "x").value_or("?"); });
  EXPECT_NE(outsider.find("not in the stats group"), std::string::npos) << outsider;
}

TEST(ControlServer, AccessFollowsCredentials) {
  const std::vector<gid_t> none, member = {10, 4242}, other = {10, 20};
  EXPECT_EQ(ControlServer::access_for(0, 0, none, std::nullopt), Access::admin);
  EXPECT_EQ(ControlServer::access_for(1000, 1000, member, std::nullopt), Access::none);
  EXPECT_EQ(ControlServer::access_for(1000, 4242, none, gid_t{4242}), Access::reader);
  EXPECT_EQ(ControlServer::access_for(1000, 1000, member, gid_t{4242}), Access::reader);
  EXPECT_EQ(ControlServer::access_for(1000, 1000, other, gid_t{4242}), Access::none);
}

TEST(ControlServer, ARequestOverTheSizeCapIsRefusedAndTheConnectionClosed) {
  ControlServerOptions options;
  options.max_request_bytes = 1024;
  ControlServer server(socket_path(), options, [](std::string_view, Access) { return "handled"; });
  RawClient raw(server.path());
  ASSERT_GE(raw.fd, 0);
  raw.send_text(std::string(4000, 'x'));  // no newline, ever
  const std::string reply = raw.read_to_end();
  EXPECT_NE(reply.find("request line longer than 1024 bytes"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("handled"), std::string::npos);
  EXPECT_EQ(server.stats().oversized, 1u);
  EXPECT_EQ(ask(server.path(), "small"), "handled") << "the server goes on";
}

TEST(ControlServer, AHalfSentRequestIsDroppedAtItsDeadline) {
  ControlServerOptions options;
  options.request_timeout = std::chrono::milliseconds(50);
  ControlServer server(socket_path(), options, [](std::string_view, Access) { return "handled"; });
  RawClient raw(server.path());
  ASSERT_GE(raw.fd, 0);
  raw.send_text(R"({"cmd":"sta)");
  const std::string reply = raw.read_to_end();  // returns once the server closes
  EXPECT_NE(reply.find("request not complete within 0.05 s"), std::string::npos) << reply;
  EXPECT_EQ(server.stats().timed_out, 1u);
}

TEST(ControlServer, AnIdleConnectionIsClosedAtItsDeadline) {
  ControlServerOptions options;
  options.idle_timeout = std::chrono::milliseconds(50);
  ControlServer server(socket_path(), options, [](std::string_view, Access) { return "handled"; });
  RawClient raw(server.path());
  ASSERT_GE(raw.fd, 0);
  EXPECT_EQ(raw.read_to_end(), "");
  EXPECT_EQ(server.stats().timed_out, 1u);
}

TEST(ControlServer, AClientThatNeverReadsIsDroppedAtTheReplyDeadline) {
  ControlServerOptions options;
  options.reply_timeout = std::chrono::milliseconds(50);
  const std::string big(1u << 20, 'r');  // more than a socket buffer holds
  ControlServer server(socket_path(), options, [&](std::string_view req, Access) {
    return req == "big" ? big : std::string("small");
  });
  RawClient stuck(server.path());
  ASSERT_GE(stuck.fd, 0);
  stuck.send_text("big\n");
  while (server.stats().timed_out == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(ask(server.path(), "other"), "small");
}

TEST(ControlServer, ConnectionsPerUidAreCapped) {
  ControlServerOptions options;
  options.max_root_connections = 2;
  options.max_connections_per_uid = 2;
  ControlServer server(socket_path(), options, [](std::string_view, Access) { return "ok"; });
  RawClient a(server.path()), b(server.path());
  ASSERT_GE(a.fd, 0);
  ASSERT_GE(b.fd, 0);
  a.send_text("x\n");  // once answered, both are surely accepted
  b.send_text("x\n");
  char buf[8];
  ASSERT_GT(recv(a.fd, buf, sizeof(buf), 0), 0);
  ASSERT_GT(recv(b.fd, buf, sizeof(buf), 0), 0);
  // The third gets a reason as its reply, and is disconnected.
  EXPECT_NE(ask(server.path(), "x").value_or("").find("too many connections"), std::string::npos);
  RawClient c(server.path());
  const std::string refused = c.read_to_end();
  EXPECT_NE(refused.find("too many connections"), std::string::npos) << refused;
  EXPECT_GE(server.stats().refused_connections, 1u);
}

TEST(ControlServer, ASlowRequestDoesNotHoldUpStatus) {
  std::promise<void> status_answered;
  std::shared_future<void> released = status_answered.get_future().share();
  ControlServer server(socket_path(), std::nullopt, [&](std::string_view req, Access) {
    // The writeback waits until status was answered: if status queued
    // behind it, neither would ever finish (and the client would time out).
    if (req.find("writeback") != std::string_view::npos) {
      released.wait_for(kWait);
      return std::string("written");
    }
    return std::string("status");
  });
  auto writeback = std::async(std::launch::async, [&] {
    return ask(server.path(), R"({"cmd":"writeback","pages":10})");
  });
  while (server.stats().requests == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(ask(server.path(), R"({"cmd":"status"})"), "status");
  status_answered.set_value();
  EXPECT_EQ(writeback.get(), "written");
}

TEST(ControlServer, OtherUsersRequestsDoNotHoldUpRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
  ControlServerOptions options;
  options.reader_group = 4242;
  std::promise<void> root_answered;
  std::shared_future<void> released = root_answered.get_future().share();
  ControlServer server(socket_path(), options, [&](std::string_view, Access access) {
    if (access != Access::admin) released.wait_for(kWait);  // a reader's slow status
    return std::string(access_name(access));
  });
  auto reader = std::async(std::launch::async, [&] {
    return as_user(65534, 65534, {4242}, [&] { return ask(server.path(), "status").value_or("?"); });
  });
  while (server.stats().requests == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(ask(server.path(), "status"), "admin");
  root_answered.set_value();
  EXPECT_EQ(reader.get(), "reader");
}

TEST(ControlServer, APeerThatHangsUpMidRequestIsForgotten) {
  std::promise<void> hung_up;
  std::shared_future<void> released = hung_up.get_future().share();
  ControlServer server(socket_path(), std::nullopt, [&](std::string_view req, Access) {
    if (req == "slow") released.wait_for(kWait);
    return std::string("done");
  });
  {
    RawClient raw(server.path());
    raw.send_text("slow\n");
    while (server.stats().requests == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  hung_up.set_value();
  while (server.stats().open != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(ask(server.path(), "next"), "done");
}

TEST(ControlClient, ADaemonThatIsNotRunningGivesOneLine) {
  const auto client = ControlClient::connect("/tmp/uzswap-no-such-socket", kWait);
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error(), ControlClientError::not_running);
  const std::string message = ControlClient::describe(client.error(), "/tmp/uzswap-no-such-socket", kWait);
  EXPECT_NE(message.find("not running"), std::string::npos) << message;
}

TEST(ControlClient, ADaemonThatDoesNotAnswerIsReportedAtTheDeadline) {
  // A socket that listens but never accepts nor answers: a stopped daemon.
  const std::string path = socket_path() + "-mute";
  const int mute = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  unlink(path.c_str());
  ASSERT_EQ(bind(mute, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(mute, 4), 0);
  auto client = ControlClient::connect(path, std::chrono::milliseconds(50));
  const auto reply = client ? client->request(R"({"cmd":"status"})", std::chrono::milliseconds(50))
                            : Result<std::string>(failure(client.error()));
  ASSERT_FALSE(reply.has_value());
  EXPECT_TRUE(ControlClient::not_answering(reply.error())) << reply.error().message();
  const std::string message = ControlClient::describe(reply.error(), path, std::chrono::milliseconds(50));
  EXPECT_NE(message.find("not answering"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos);
  close(mute);
  unlink(path.c_str());
}

TEST(Protocol, ParsesEveryCommand) {
  auto r = control::parse_request(R"({"cmd":"status"})");
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_EQ(r->command, control::Command::status);
  r = control::parse_request(R"({"cmd":"set","key":"level","value":"3"})");
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_EQ(r->key, "level");
  EXPECT_EQ(r->value, "3");
  r = control::parse_request(R"( {"cmd":"writeback","pages":12,"cgroup":"/a\nb"} )");
  ASSERT_TRUE(r.has_value()) << r.error();
  EXPECT_EQ(r->pages, 12u);
  EXPECT_EQ(r->cgroup, "/a\nb");
  for (std::string_view name : control::kCommandNames) {
    const auto command = control::command_from_name(name);
    ASSERT_TRUE(command.has_value());
    EXPECT_EQ(control::command_name(*command), name);
  }
  EXPECT_TRUE(control::needs_admin(control::Command::set));
  EXPECT_FALSE(control::needs_admin(control::Command::stats));
  EXPECT_TRUE(control::is_slow(control::Command::attribute));
  EXPECT_FALSE(control::is_slow(control::Command::status));
}

TEST(Protocol, MalformedRequestsGetTheDaemonsOneLineErrors) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"\x01\xff garbage", "malformed request: not JSON"},
      {R"({"cmd": "status")", "malformed request: not JSON"},
      {R"({"cmd": "\xff"})", "malformed request: not JSON"},  // JSON is UTF-8
      {"[1,2,3]", R"(malformed request: expected {"cmd": ...})"},
      {R"({"cmd": 42})", R"(malformed request: expected {"cmd": ...})"},
      {R"({"cmd":"reboot"})", "unknown command 'reboot'"},
      {R"({"cmd":"writeback"})", R"(malformed request: writeback needs a positive "pages")"},
      {R"({"cmd":"writeback","pages":0})", R"(malformed request: writeback needs a positive "pages")"},
      {R"({"cmd":"writeback","pages":-5})", R"(malformed request: writeback needs a positive "pages")"},
      {R"({"cmd":"writeback","pages":1.5})", R"(malformed request: writeback needs a positive "pages")"},
      {R"({"cmd":"writeback","pages":5,"cgroup":7})", R"(malformed request: "cgroup" must be a path)"},
      {R"({"cmd":"set","key":"level"})", R"(malformed request: set needs string "key" and "value")"},
      {R"({"cmd":"set","key":1,"value":"x"})", R"(malformed request: set needs string "key" and "value")"},
  };
  for (const auto& [line, message] : cases) {
    const auto r = control::parse_request(line);
    ASSERT_FALSE(r.has_value()) << line;
    EXPECT_EQ(r.error(), message) << line;
  }
}

TEST(Protocol, RequestLinesReadBackAsTheSameRequest) {
  control::Request r;
  r.command = control::Command::writeback;
  r.pages = 77;
  r.cgroup = "/user.slice/\"quoted\"\nline";
  EXPECT_EQ(control::parse_request(control::request_line(r)), r);
  r = {};
  r.command = control::Command::set;
  r.key = "cgroup-max";
  r.value = "/a=1M";
  EXPECT_EQ(control::parse_request(control::request_line(r)), r);
  // JSON cannot carry bytes that are not UTF-8: they go in escaped form.
  r.value = "/bad\xff=1M";
  const auto back = control::parse_request(control::request_line(r));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->value, "/bad\\xff=1M");
}

TEST(Protocol, SocketPathAndNames) {
  EXPECT_EQ(control::socket_path(paths::kRunDir, paths::kDefaultName), "/run/uzswap/uzswap/control");
  EXPECT_TRUE(control::valid_instance_name("swap-1_A"));
  EXPECT_FALSE(control::valid_instance_name(""));
  EXPECT_FALSE(control::valid_instance_name("../etc"));
  EXPECT_FALSE(control::valid_instance_name(std::string(33, 'a')));
  EXPECT_EQ(control::error_line("bad \"x\""), R"({"error":"bad \"x\"","ok":false})");
}

TEST(EscapeName, PrintableUtf8IsKeptAndEverythingElseEscaped) {
  EXPECT_EQ(escape_name("/user.slice/app-1.scope"), "/user.slice/app-1.scope");
  EXPECT_EQ(escape_name("/tëst/日本"), "/tëst/日本");
  EXPECT_EQ(escape_name("/a\nb\tc\rd"), "/a\\nb\\tc\\rd");
  EXPECT_EQ(escape_name(std::string_view("/\x00\x1b[31m\x7f", 8)), "/\\x00\\x1b[31m\\x7f");
  EXPECT_EQ(escape_name("/bad\xff\xfe"), "/bad\\xff\\xfe");
  EXPECT_EQ(escape_name("/\xc3"), "/\\xc3");                  // truncated sequence
  EXPECT_EQ(escape_name("/\xc0\xaf"), "/\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(escape_name("/\xed\xa0\x80"), "/\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(escape_name("/a\u202eb"), "/a\\u{202e}b");       // right-to-left override
  EXPECT_EQ(escape_name("/a\u00adb"), "/a\\u{00ad}b");       // soft hyphen
  EXPECT_EQ(escape_name("q\"uote"), "q\"uote") << "JSON and Prometheus escape quotes themselves";
  EXPECT_EQ(escape_name("dev-disk-by\\x2duuid"), "dev-disk-by\\x2duuid") << "systemd's escapes read as in systemctl";
}

TEST(EscapeName, EscapingTwiceChangesNothingAndGivesValidUtf8) {
  for (const std::string& raw : {std::string("/a\"b\nc\xff\xc3"), std::string("\\x41\x01\u2028"),
                                std::string("\xf4\x90\x80\x80 past U+10FFFF")}) {
    const std::string once = escape_name(raw);
    EXPECT_TRUE(valid_utf8(once)) << once;
    EXPECT_EQ(escape_name(once), once);
    for (const char c : once) EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << once;
    EXPECT_NO_THROW((void)json(once).dump());
  }
  EXPECT_FALSE(valid_utf8("\xff"));
  EXPECT_TRUE(valid_utf8("ok ✓"));
}

TEST(EscapeName, PrometheusLabelsCannotInjectLines) {
  json status = json::parse(R"({"name": "uzswap", "cgroups": []})");
  status["cgroups"].push_back({{"path", escape_name("/evil\"} 1\nuzswap_stored_pages{name=\"x\xff")},
                               {"stored_pages", 5}});
  const std::string p = format_prometheus(status);
  EXPECT_NE(p.find(R"(uzswap_cgroup_stored_pages{name="uzswap",cgroup="/evil\"} 1\\nuzswap_stored_pages{name=\"x\\xff"} 5)"),
            std::string::npos)
      << p;
  std::size_t lines_with_5 = 0;
  std::istringstream in(p);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("uzswap_cgroup_stored_pages{", 0) == 0) ++lines_with_5;
  EXPECT_EQ(lines_with_5, 1u);
}

TEST(EscapeName, TablesShowNamesEscaped) {
  json status = json::parse(R"({"cgroups": []})");
  // What an old daemon (raw path) and a new one (escaped) would send: the
  // same cell either way.
  status["cgroups"].push_back({{"path", "/raw\"q\nx"}, {"stored_pages", 1}});
  status["cgroups"].push_back({{"path", escape_name("/raw\"q\nx")}, {"stored_pages", 2}});
  const std::string t = format_cgroups_table(status);
  EXPECT_EQ(t.find("/raw\"q\nx"), std::string::npos) << t;
  std::size_t at = 0, found = 0;
  while ((at = t.find("/raw\"q\\nx", at)) != std::string::npos) ++found, ++at;
  EXPECT_EQ(found, 2u) << t;
  EXPECT_EQ(std::count(t.begin(), t.end(), '\n'), 3) << "a header and two rows";
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

TEST(Format, NbdTableShowsTheFrontEndAndTheRemoteTier) {
  const json s = json::parse(R"({"device": {"file": "", "loop": ""},
    "frontend": {"type": "nbd", "listen": "unix:/run/uzswap/mem/nbd", "export": "mem",
                 "connections": {"active": 3, "max": 8, "total": 41, "refused": 2}, "requests": 900,
                 "error_replies": 4, "protocol_errors": 1, "handshake_failures": 5, "timeouts": 0},
    "writeback": {"backing_nbd": {"uri": "nbd://127.0.0.1:10809/", "state": "down", "connections": 4,
                                  "connections_up": 0, "refused_pages": 512, "last_error": "connect: refused"}}})");
  const std::string t = format_nbd_table(s);
  for (const char* want : {"unix:/run/uzswap/mem/nbd", "41", "REFUSED", "nbd://127.0.0.1:10809/", "down", "512",
                           "connect: refused"})
    EXPECT_NE(t.find(want), std::string::npos) << want << "\n" << t;
  EXPECT_NE(format_status_table(s).find("nbd unix:/run/uzswap/mem/nbd"), std::string::npos);
  EXPECT_TRUE(format_nbd_table(sample_status()).empty()) << "FUSE without a remote tier: no table";
}

TEST(Format, MissingOrMistypedFieldsDoNotThrow) {
  for (const char* text : {"{}", "[]", "42", "null", R"({"device": 5, "cgroups": {"a": 1}})",
                           R"({"cgroups": [{"writeback": "yes", "path": 7, "stored_pages": -3}]})",
                           R"({"reclaim": {"enabled": "true", "nodes": 3}})",
                           R"({"frontend": {"type": "nbd", "connections": 3}, "writeback": {"backing_nbd": 1}})",
                           R"({"reclaim": {"enabled": true, "nodes": [{"wakeups": [], "given_up": 1}]}})"}) {
    const json j = json::parse(text);
    EXPECT_NO_THROW(format_status_table(j)) << text;
    EXPECT_NO_THROW(format_cgroups_table(j)) << text;
    EXPECT_NO_THROW(format_reclaim_table(j)) << text;
    EXPECT_NO_THROW(format_nbd_table(j)) << text;
    EXPECT_NO_THROW(format_prometheus(j)) << text;
  }
  EXPECT_FALSE(format_status_table(json::object()).empty());
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
