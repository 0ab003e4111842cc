#include "uzswap/reclaim/reclaimer.h"
#include "uzswap/daemon/safety.h"

#include <system_error>
#include <thread>

#include "uzswap/common/liveness.h"
#include "uzswap/common/text_file.h"
#include "uzswap/reclaim/kernel_files.h"

namespace uzswap {

Reclaimer::Reclaimer(Writeback& writeback, ReclaimOptions options, std::function<void()> pressure_hook)
    : writeback_(writeback),
      store_(writeback.store()),
      options_(std::move(options)),
      pressure_hook_(std::move(pressure_hook)),
      registry_(store_.nodes()) {
  if (writeback_.register_shrinker(registry_) < 0)
    throw std::system_error(std::make_error_code(std::errc::no_space_on_device), "shrinker registry full");
  for (unsigned node = 0; node < store_.nodes(); ++node)
    kswapds_.push_back(std::make_unique<Kswapd>(writeback_, registry_, node, options_.kswapd));
  store_.hooks().node_grown = [this](unsigned node) { kswapds_[node]->wake_watermark(); };
  if (options_.start_threads)
    for (auto& k : kswapds_) k->start();
  if (options_.watch_pressure) {
    watcher_ = std::make_unique<PressureWatcher>(options_.pressure);
    watcher_thread_ = Thread("uzswap-pressure", [this] {
    (void)set_io_flusher();  // it frees pool room (see Kswapd::start)
    watch();
  });
  }
}

Reclaimer::~Reclaimer() {
  stop_.store(true);
  if (watcher_) {
    watcher_->interrupt();
    watcher_thread_.join();
  }
  store_.hooks().node_grown = nullptr;
  for (unsigned node = 0; node < store_.nodes(); ++node) store_.node(node).set_wake_bytes(0);
  for (auto& k : kswapds_) k->stop();
}

void Reclaimer::watch() noexcept {
  while (!stop_.load()) {
    try {
      liveness::waiting();
      const auto events = watcher_->poll(1000);
      liveness::working();
      for (const PressureEvent& event : events) handle(event);
    } catch (const std::exception& e) {
      // Allocation, or a watch the kernel refused; the next poll tries again.
      liveness::error(std::string("pressure watcher: ") + e.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    liveness::progressed();
  }
}

unsigned Reclaimer::post_split(WakeCause cause, std::optional<CgroupId> cgroup, std::uint64_t pages,
                               ReclaimCompletion* completion) {
  const unsigned nodes = store_.nodes();
  std::vector<std::uint64_t> on_list(nodes);
  std::uint64_t total = 0;
  for (unsigned node = 0; node < nodes; ++node) {
    on_list[node] = cgroup ? writeback_.lru_count(*cgroup, node) : writeback_.node_stats(node).lru_pages;
    total += on_list[node];
  }
  if (total == 0 || pages == 0) return 0;
  std::vector<std::uint64_t> share(nodes);
  std::uint64_t given = 0;
  unsigned largest = 0;
  for (unsigned node = 0; node < nodes; ++node) {
    share[node] = static_cast<std::uint64_t>(static_cast<double>(pages) * on_list[node] / total);
    given += share[node];
    if (on_list[node] > on_list[largest]) largest = node;
  }
  share[largest] += pages - std::min(pages, given);
  unsigned posted = 0;
  for (unsigned node = 0; node < nodes; ++node) posted += share[node] > 0;
  if (completion != nullptr) {
    MutexLock guard(completion->lock);
    completion->pending = posted;
  }
  for (unsigned node = 0; node < nodes; ++node)
    if (share[node] > 0) kswapds_[node]->post({cause, cgroup, share[node], completion});
  return posted;
}

WritebackResult Reclaimer::writeback(std::uint64_t pages, std::optional<CgroupId> cgroup) {
  ReclaimCompletion completion;
  if (post_split(WakeCause::request, cgroup, pages, &completion) == 0) return {};
  return completion.wait();
}

void Reclaimer::handle(const PressureEvent& event) {
  if (event.kind == PressureEvent::Kind::psi && !event.cgroup) {
    if (!machine_short_of_memory()) {
      // Tasks stall, but not for want of the machine's memory.
      psi_ignored_.fetch_add(1, std::memory_order_relaxed);
      if (pressure_hook_) pressure_hook_();
      return;
    }
    // The machine stalls on memory: every node gives back some of its pool.
    const std::uint64_t per_node = std::max<std::uint64_t>(1, options_.psi_reclaim_pages / store_.nodes());
    for (auto& k : kswapds_) k->post({WakeCause::psi, std::nullopt, per_node, nullptr});
  } else if (event.kind == PressureEvent::Kind::psi) {
    post_split(WakeCause::psi, event.cgroup, options_.psi_reclaim_pages, nullptr);
  } else {
    post_split(WakeCause::memory_events, event.cgroup, event.increment * options_.events_reclaim_pages,
               nullptr);
  }
  if (pressure_hook_) pressure_hook_();
}

bool Reclaimer::machine_short_of_memory() const {
  if (options_.psi_available_percent == 0) return true;
  const Result<std::string> text = read_text_file(options_.meminfo);
  if (!text) return true;
  const std::optional<MemInfo> m = parse_meminfo(*text);
  if (!m || m->total_kb == 0) return true;
  return m->available_kb * 100 < m->total_kb * options_.psi_available_percent;
}

Result<> Reclaimer::track(const std::vector<std::pair<CgroupId, std::string>>& cgroups) {
  if (!watcher_) return {};
  return watcher_->track(cgroups);
}

void Reclaimer::set_hold_root(bool hold) noexcept {
  for (auto& k : kswapds_) k->set_hold_root(hold);
}

void Reclaimer::set_watermark_scale_factor(unsigned factor) noexcept {
  for (auto& k : kswapds_) k->set_watermark_scale_factor(factor);
}

void Reclaimer::set_idle_seconds(unsigned seconds) noexcept {
  for (auto& k : kswapds_) k->set_idle_seconds(seconds);
}

std::vector<KswapdStats> Reclaimer::node_stats() const {
  std::vector<KswapdStats> out;
  for (const auto& k : kswapds_) out.push_back(k->stats());
  return out;
}

std::optional<PressureStatus> Reclaimer::pressure_status() const {
  if (!watcher_) return std::nullopt;
  return watcher_->status();
}

}  // namespace uzswap
