#include "uzswap/writeback/shrink_memcg.h"

#include <algorithm>
#include <vector>

#include "uzswap/compress/compressor.h"

namespace uzswap {

namespace {

// Writeback batches, two of them: one is prepared (claimed, decompressed)
// while the other's write is in flight.
struct WritebackBatch {
  std::vector<std::byte> pages;
  std::vector<PageWrite> writes;
  std::vector<std::uint64_t> versions;  // by slot order of `writes` at claim time
  std::vector<Slot> slots;
  std::size_t count = 0;
  explicit WritebackBatch(std::size_t batch)
      : pages(batch * kPageSize), writes(batch), versions(batch), slots(batch) {}
};

struct WritebackBuffers {
  CompressorSet compressors;
  WritebackBatch batches[2];
  explicit WritebackBuffers(std::size_t batch) : batches{WritebackBatch(batch), WritebackBatch(batch)} {}
  std::size_t capacity() const { return batches[0].writes.size(); }
};

// The page store as seen by the shrinker registry: its objects are the pages
// on a (cgroup, node) list, and scanning writes them back.
class StoreShrinker final : public Shrinker {
 public:
  explicit StoreShrinker(Writeback& writeback) : writeback_(writeback) { batch = 64; }
  std::uint64_t count(CgroupId cgroup, unsigned node) override {
    const std::uint64_t on_list = writeback_.lru_count(cgroup, node);
    if (on_list == 0) return kShrinkEmpty;
    const PageStore& store = writeback_.store();
    if (store.backing() == nullptr || !store.memcg().writeback_allowed(cgroup)) return 0;
    return on_list;
  }
  std::uint64_t scan(ShrinkControl& control) override {
    const WritebackResult r = writeback_.shrink_list(control.cgroup, control.node, control.nr_to_scan);
    control.nr_scanned = r.written + r.rotated + r.failed + r.raced;
    return r.written;
  }

 private:
  Writeback& writeback_;
};

}  // namespace

Writeback::Writeback(PageStore& store) : store_(store) {}

Writeback::~Writeback() {
  if (registry_ != nullptr) {
    store_.writeback_side().lru().set_populated_hook({});
    store_.memcg().attach_shrinker_registry(nullptr);
  }
}

int Writeback::register_shrinker(ShrinkerRegistry& registry) {
  shrinker_ = std::make_unique<StoreShrinker>(*this);
  shrinker_id_ = registry.add(*shrinker_);
  if (shrinker_id_ < 0) return -1;
  registry_ = &registry;
  const std::vector<CgroupId> cgroups = store_.memcg().cgroups();
  for (const CgroupId cg : cgroups) registry.add_cgroup(cg);
  store_.memcg().attach_shrinker_registry(&registry);
  store_.writeback_side().lru().set_populated_hook([this](CgroupId cgroup, unsigned node) {
    registry_->set_bit(cgroup, node, shrinker_id_);
  });
  // Lists that already hold pages.
  for (const CgroupId cg : cgroups)
    for (unsigned node = 0; node < store_.nodes(); ++node)
      if (lru_count(cg, node) > 0) registry.set_bit(cg, node, shrinker_id_);
  return shrinker_id_;
}

std::uint64_t Writeback::lru_pages(CgroupId cgroup) const noexcept {
  std::uint64_t total = 0;
  for (unsigned node = 0; node < store_.nodes(); ++node) total += lru_count(cgroup, node);
  return total;
}

Writeback::NodeStats Writeback::node_stats(unsigned node) const {
  NodeStats s;
  if (node >= store_.nodes()) return s;
  for (const CgroupId cg : store_.memcg().cgroups()) s.lru_pages += lru_count(cg, node);
  s.writebacks = store_.node(node).writebacks();
  return s;
}

WritebackResult Writeback::shrink_memcg(CgroupId cgroup, std::uint64_t nr_pages) {
  // Node by node, like shrink_memcg's one walk per node.
  WritebackResult total;
  for (unsigned node = 0; node < store_.nodes() && total.written < nr_pages; ++node) {
    const WritebackResult r = shrink_list(cgroup, node, nr_pages - total.written);
    total.written += r.written;
    total.raced += r.raced;
    total.failed += r.failed;
    total.rotated += r.rotated;
  }
  return total;
}

WritebackResult Writeback::shrink_list(CgroupId cgroup, unsigned node, std::uint64_t nr_pages,
                                       std::uint64_t max_walk) {
  BackingStore* backing = store_.backing();
  if (backing == nullptr || nr_pages == 0 || node >= store_.nodes()) return {};
  if (!store_.memcg().writeback_allowed(cgroup)) return {};
  // Up to four backing-store batches per walk, so that writeback_isolated()
  // can prepare one while another is being written.
  constexpr std::uint64_t kMaxIsolated = 1024;
  const std::uint64_t batch = std::min<std::uint64_t>({nr_pages, 4 * backing->max_batch(), kMaxIsolated});
  Slot isolated[kMaxIsolated];
  std::uint64_t count = 0, rotated = 0;
  // A referenced entry gets its second chance (rotate), so walk up to twice
  // the batch.
  std::uint64_t budget = max_walk != 0 ? max_walk : 2 * batch;
  store_.writeback_side().lru().walk(cgroup, node, budget, [&](std::uint32_t item, ListLru::WalkedList& list) {
    if (count >= batch) return LruStatus::stop;
    if (list.referenced(item)) {
      list.clear_referenced(item);
      ++rotated;
      return LruStatus::rotate;
    }
    list.isolate(item);
    isolated[count++] = item;
    return LruStatus::removed;
  });
  WritebackResult result = writeback_isolated(std::span<const Slot>(isolated, count));
  result.rotated = rotated;
  return result;
}

WritebackResult Writeback::writeback_isolated(std::span<const Slot> slots) {
  WritebackResult result;
  BackingStore* backing = store_.backing();
  if (backing == nullptr || slots.empty()) return result;
  WritebackSide side = store_.writeback_side();
  thread_local std::unique_ptr<WritebackBuffers> t_buffers;
  const std::size_t batch = backing->max_batch();
  if (!t_buffers || t_buffers->capacity() < batch) t_buffers = std::make_unique<WritebackBuffers>(batch);
  WritebackBuffers& b = *t_buffers;

  // Check: claim each entry under its lock, recording its version, and
  // decompress it for the file.
  const auto claim = [&](std::span<const Slot> chunk, WritebackBatch& out) {
    out.count = 0;
    for (const Slot slot : chunk) {
      std::byte* page = out.pages.data() + out.count * kPageSize;
      std::uint64_t version = 0;
      switch (side.claim(slot, PageBuffer(page, kPageSize), b.compressors, version)) {
        case WritebackSide::Claim::raced:
          ++result.raced;
          continue;
        case WritebackSide::Claim::failed:
          ++result.failed;
          continue;
        case WritebackSide::Claim::claimed:
          break;
      }
      out.slots[out.count] = slot;
      out.versions[out.count] = version;
      out.writes[out.count] = {slot, page, 0};
      ++out.count;
    }
  };

  // Lock and check again: only an untouched entry becomes written back.
  const auto complete = [&](WritebackBatch& done) {
    for (std::size_t i = 0; i < done.count; ++i) {
      const PageWrite& w = done.writes[i];  // sorted by the store: find its version
      const std::size_t at = static_cast<std::size_t>(
          std::find(done.slots.begin(), done.slots.begin() + done.count, w.slot) - done.slots.begin());
      switch (side.finish(w.slot, done.versions[at], w.result)) {
        case WritebackSide::Finish::written:
          ++result.written;
          break;
        case WritebackSide::Finish::raced:
          ++result.raced;
          break;
        case WritebackSide::Finish::failed:
          ++result.failed;
          break;
      }
    }
  };

  // Pipelined: batch k is claimed and decompressed while batch k-1's write
  // is in flight, and batch k-1 is completed while batch k's is.
  WritebackBatch* in_flight = nullptr;
  unsigned next = 0;
  while (!slots.empty() || in_flight != nullptr) {
    WritebackBatch* prepared = nullptr;
    if (!slots.empty()) {
      const std::size_t n = std::min(slots.size(), batch);
      prepared = &b.batches[next];
      next ^= 1;
      claim(slots.first(n), *prepared);
      slots = slots.subspan(n);
    }
    WritebackBatch* written = nullptr;
    if (in_flight != nullptr) {
      backing->end_write();
      written = in_flight;
      in_flight = nullptr;
    }
    if (prepared != nullptr && prepared->count > 0) {
      backing->begin_write(std::span(prepared->writes.data(), prepared->count));
      in_flight = prepared;
    }
    if (written != nullptr) complete(*written);
  }
  return result;
}

}  // namespace uzswap
