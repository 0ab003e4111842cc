// The status JSON (`uzswapctl status --json`, and what the tables and
// OpenMetrics text of uzswapctl are made from: control/format.h), and the
// one-line summary systemd shows.
#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "instance.h"
#include "uzswap/backing/backing_cipher.h"
#include "uzswap/control/format.h"
#include "uzswap/version.h"

namespace uzswap {

using nlohmann::json;

std::string Instance::backing_name() const {
  return config_.backing_file.empty() ? config_.backing_nbd : config_.backing_file;
}

std::string Instance::swap_device() const { return kernel_nbd_ ? kernel_nbd_->path() : loop_.path(); }

std::string Instance::summary() const {
  if (!store_) return "starting";
  const PageStoreStats s = store_->stats();
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%llu pages stored, %.1f MiB data in %.1f MiB pool%s",
                static_cast<unsigned long long>(s.stored_pages), double(s.orig_bytes) / (1 << 20),
                double(s.pool_bytes) / (1 << 20), store_->pool_full() ? ", pool full" : "");
  return buf;
}

json Instance::status() const {
  MutexLock settings(settings_lock_);
  const PageStoreStats s = store_->stats();
  // The request counters of whichever front end serves.
  FuseStats f{};
  json frontend;
  if (server_) {
    f = server_->stats();
    frontend = {{"type", "fuse"}, {"requests", f.requests}, {"unsupported", f.unsupported}};
  } else if (nbd_server_) {
    const NbdStats n = nbd_server_->stats();
    f.requests = n.requests;
    f.read_pages = n.io.read_pages;
    f.written_pages = n.io.written_pages;
    f.discarded_pages = n.io.discarded_pages;
    f.discard_requests = n.io.discard_requests;
    f.write_errors = n.io.write_errors;
    f.bad_requests = n.error_replies;
    frontend = {{"type", "nbd"},
                {"listen", config_.nbd_listen_address()},
                {"export", config_.name},
                {"connections", {{"active", n.connections_active},
                                 {"total", n.connections_total},
                                 {"refused", n.connections_refused},
                                 {"max", nbd_listener_ ? nbd_listener_->connections() : 0}}},
                {"handshakes", n.handshakes},
                {"handshake_failures", n.handshake_failures},
                {"options_refused", n.options_refused},
                {"protocol_errors", n.protocol_errors},
                {"timeouts", n.timeouts},
                {"structured_connections", n.structured_connections},
                {"requests", n.requests},
                {"error_replies", n.error_replies},
                {"read_errors", n.io.read_errors}};
  }
  json j;
  j["name"] = config_.name;
  j["version"] = kVersion;
  j["pid"] = getpid();
  j["supervisor_pid"] = getppid();
  const StateHeader& sh = state_->header();
  const AdoptionReport& ar = store_->restart_side().report();
  j["restart"] = {{"serving_process", sh.adoptions + 1},
                  {"adopted", ar.adopted},
                  {"adopt_seconds", ar.seconds},
                  {"rolled_back", ar.rolled_back},
                  {"writebacks_reset", ar.writebacks_reset},
                  {"lost_pages", ar.lost},
                  {"state_layout", kStateLayoutVersion}};
  j["uptime_seconds"] = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now() - started_)
                            .count();
  j["frontend"] = frontend;
  j["device"] = {{"file", config_.nbd_frontend() ? std::string() : config_.swap_file()},
                 {"loop", swap_device()},
                 {"size_bytes", config_.size_bytes},
                 {"slots", store_->slots()},
                 {"swap_on", swap_on_.load()},
                 {"swap_type", swap_type_},
                 {"priority", config_.swap_priority},
                 {"direct_io", true},
                 {"workers", workers_ ? workers_->count() : 0},
                 {"fuse_io_uring", uring_ != nullptr},
                 {"ring_threads", uring_ ? uring_->threads() : 0},
                 {"ring_buffer_bytes", uring_ ? uring_->buffer_bytes() : 0}};
  j["compressor"] = std::string(codec_name(store_->settings().codec()));
  j["level"] = store_->settings().level();
  j["max_pool_percent"] = config_.max_pool_percent;
  j["accept_threshold_percent"] = store_->settings().accept_threshold_percent();
  j["max_pool_bytes"] = store_->settings().max_pool_bytes();
  j["pool_full"] = store_->pool_full();
  j["stored_pages"] = s.stored_pages;
  j["same_filled_pages"] = s.same_filled_pages;
  j["incompressible_pages"] = s.incompressible_pages;
  j["orig_bytes"] = s.orig_bytes;
  j["compressed_bytes"] = s.compressed_bytes;
  j["pool_bytes"] = s.pool_bytes;
  j["table_bytes"] = s.table_bytes;
  j["written_back_pages"] = s.written_back_pages;
  j["backing_file"] = config_.backing_file;
  j["backing_nbd"] = config_.backing_nbd;
  j["backing_encryption"] = backing_cipher_name(state_->cipher());
  const CgroupPolicy root_policy = store_->memcg().policy(kRootCgroup);
  json wb = {{"backing_file", config_.backing_file},
             {"enabled", backing_ != nullptr && root_policy.writeback},
             {"writebacks", s.writebacks},
             {"failures", s.writeback_failures},
             {"raced", s.writeback_raced},
             {"direct_writes", s.direct_writes},
             {"spilled_pages", s.spilled_pages},
             {"backing_reads", s.backing_reads},
             {"backing_read_errors", s.backing_read_errors},
             {"wiped_pages", s.wiped_pages},
             {"wipe_pending", store_->housekeeping().wipe_pending()}};
  if (shrinker_) {
    const ShrinkWorkerStats w = shrinker_->stats();
    wb["worker"] = {{"wakeups", w.wakeups}, {"runs", w.runs}, {"written", w.written},
                    {"backoffs", w.backoffs}, {"over_max_runs", w.over_max_runs}};
  }
  if (backing_nbd_ != nullptr) {
    const BackingNbdStatus r = backing_nbd_->status();
    wb["enabled"] = wb["enabled"].get<bool>() && r.up;
    wb["backing_nbd"] = {{"uri", r.uri},
                         {"state", r.up ? "up" : "down"},
                         {"connections", r.connections},
                         {"connections_up", r.connections_up},
                         {"export_bytes", r.export_bytes},
                         {"connects", r.connects},
                         {"disconnects", r.disconnects},
                         {"failed_connects", r.failed_connects},
                         {"write_requests", r.write_requests},
                         {"read_requests", r.read_requests},
                         {"refused_pages", r.refused_writes},
                         {"last_error", r.last_error}};
    if (!r.up) wb["stopped"] = "the remote tier is down: writeback waits for it to come back (" + r.last_error + ")";
  }
  j["writeback"] = wb;
  json nodes = json::array();
  for (unsigned node = 0; node < store_->nodes(); ++node) {
    const Writeback::NodeStats n = writeback_->node_stats(node);
    nodes.push_back({{"node", node}, {"lru_pages", n.lru_pages}, {"writebacks", n.writebacks}});
  }
  j["nodes"] = nodes;
  j["reclaim"] = reclaim_status();
  j["stores"] = s.stores;
  j["loads"] = s.loads;
  j["empty_loads"] = s.empty_loads;
  j["invalidations"] = s.invalidations;
  j["discarded_pages"] = f.discarded_pages;
  j["discard_requests"] = f.discard_requests;
  j["read_pages"] = f.read_pages;
  j["written_pages"] = f.written_pages;
  j["write_errors"] = f.write_errors;
  j["read_errors"] = f.read_errors;
  j["bad_requests"] = f.bad_requests;
  j["load_errors"] = s.load_errors;
  j["integrity_errors"] = s.integrity_errors + s.load_errors;
  j["lost_pages"] = s.lost_pages;
  j["pool_limit_hits"] = s.pool_limit_hits;
  j["rejects"] = {{"pool_full", s.reject_pool_full}, {"alloc_failed", s.reject_alloc_failed}};
  j["compactions"] = s.compactions;
  j["pool_reserve"] = {{"bytes", s.pool.reserve_bytes},
                       {"hits", s.pool.reserve_hits},
                       {"misses", s.pool.reserve_misses},
                       {"refills", s.pool.reserve_refills},
                       {"refill_failures", s.pool.reserve_refill_failures}};
  // Attribution to cgroups arrives with the reclaim engine: until then every
  // page is the root cgroup's.
  json cgroups = json::array();
  for (const CgroupId id : store_->memcg().cgroups()) {
    const CgroupStats c = store_->memcg().stats(id);
    const CgroupPolicy p = store_->memcg().policy(id);
    cgroups.push_back({{"path", escape_name(cgroup_path(id))},
                       {"stored_pages", c.stored_pages},
                       {"compressed_bytes", c.compressed_bytes},
                       {"written_back_pages", c.written_back_pages},
                       {"writeback", backing_ != nullptr && p.writeback},
                       {"max_bytes", p.max_bytes}});
  }
  j["cgroups"] = cgroups;
  j["threads"] = threads_status();
  {
    MutexLock guard(paths_lock_);
    j["cgroup_ids"] = {{"live", cgroup_ids_.live},
                       {"free", cgroup_ids_.free},
                       {"untracked", cgroup_ids_.untracked.count},
                       {"untracked_writeback_off", cgroup_ids_.untracked.writeback_off},
                       {"untracked_with_max", cgroup_ids_.untracked.with_max}};
  }
  return j;
}

json Instance::reclaim_status() const {
  if (!reclaimer_) return {{"enabled", false}};
  json nodes = json::array();
  for (const KswapdStats& k : reclaimer_->node_stats()) {
    json wakeups = json::object();
    for (unsigned c = 0; c < kWakeCauses; ++c)
      wakeups[wake_cause_name(static_cast<WakeCause>(c))] = k.wakeups[c];
    nodes.push_back({{"node", k.node},
                     {"pool_bytes", k.pool_bytes},
                     {"share_bytes", k.watermarks.share},
                     {"watermarks", {{"min", k.watermarks.min}, {"low", k.watermarks.low},
                                     {"high", k.watermarks.high}}},
                     {"wakeups", wakeups},
                     {"balance_runs", k.balance_runs},
                     {"scanned", k.scanned},
                     {"written", k.written},
                     {"idle_written", k.idle_written},
                     {"min_wmark_hits", k.min_wmark_hits},
                     {"low_wmark_hit_quickly", k.low_wmark_hit_quickly},
                     {"high_wmark_hit_quickly", k.high_wmark_hit_quickly},
                     {"compactions", k.compactions},
                     {"giveups", k.giveups},
                     {"given_up", k.given_up}});
  }
  json j = {{"enabled", true},
            {"watermark_scale_factor", reclaimer_->watermark_scale_factor()},
            {"idle_writeback_seconds", reclaimer_->idle_seconds()},
            {"hold_unattributed", reclaimer_->hold_root()},
            {"nodes", nodes}};
  if (const auto p = reclaimer_->pressure_status())
    j["pressure"] = {{"system_trigger", p->system_trigger},
                     {"system_error", p->system_error},
                     {"fell_back_to_2s", p->fell_back},
                     {"stall_us", p->stall_us},
                     {"window_us", p->window_us},
                     {"cgroup_triggers", p->cgroup_triggers},
                     {"memory_events_files", p->events_files},
                     {"psi_events", p->psi_events},
                     {"psi_events_ignored", reclaimer_->psi_events_ignored()},
                     {"cgroup_psi_events", p->cgroup_psi_events},
                     {"memory_events", p->memory_events}};
  return j;
}

json Instance::threads_status() const {
  json list = json::array();
  unsigned stuck = 0, down = 0;
  std::uint64_t errors = 0;
  const auto seconds = [](std::chrono::nanoseconds d) {
    return std::round(std::chrono::duration_cast<std::chrono::duration<double>>(d).count() * 10) / 10;
  };
  for (const LivenessMonitor::Thread& t : liveness_.threads()) {
    const ThreadReport& r = t.report;
    if (t.stuck) ++stuck;
    if (r.state == ThreadState::failed || r.state == ThreadState::dead) ++down;
    errors += r.errors;
    list.push_back({{"name", r.name},
                    {"state", thread_state_name(r.state)},
                    {"stuck", t.stuck},
                    {"progress", r.progress},
                    {"last_progress_seconds", seconds(r.since_progress)},
                    {"working_seconds", seconds(r.working_for)},
                    {"errors", r.errors},
                    {"last_error", r.last_error}});
  }
  return {{"count", list.size()},
          {"stuck", stuck},
          {"down", down},
          {"errors", errors},
          {"stuck_after_checks", liveness_.stuck_checks()},
          {"list", list}};
}

}  // namespace uzswap
