#include "uzswap/reclaim/attribution.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "uzswap/common/text_file.h"
#include "uzswap/reclaim/kernel_files.h"

namespace uzswap {

std::string Attribution::default_root() {
  if (std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers")) return "/sys/fs/cgroup";
  return "/sys/fs/cgroup/unified";
}

Attribution::Attribution(PageStore& store, AttributionOptions options)
    : store_(store), options_(std::move(options)) {
  // The cgroups an earlier serving process knew, from the shared state: the
  // same directories keep their ids (entries carry them).
  for (const PersistedCgroup& c : store_.memcg().persisted())
    if (c.inode != 0) known_[static_cast<ino_t>(c.inode)] = {c.id, c.path};
  next_id_ = static_cast<unsigned>(std::clamp<std::uint64_t>(store_.memcg().next_id(), 1, options_.max_cgroups));
  for (const CgroupId id : store_.memcg().free_ids())
    if (id < options_.max_cgroups) free_ids_.push_back(id);
  // Removed by a process that died before it released them.
  released_ = store_.attribution_side().release_cgroups(store_.memcg().removed_ids());
}

std::optional<CgroupId> Attribution::take_id() {
  if (!free_ids_.empty()) {
    const CgroupId id = free_ids_.back();
    free_ids_.pop_back();
    return id;
  }
  if (next_id_ >= options_.max_cgroups) return std::nullopt;
  const auto id = static_cast<CgroupId>(next_id_++);
  store_.memcg().set_next_id(next_id_);
  return id;
}

std::optional<std::string> Attribution::path_of(CgroupId id) const {
  if (id == kRootCgroup) return "/";
  for (const auto& [ino, k] : known_)
    if (k.id == id) return k.path;
  return std::nullopt;
}

std::optional<CgroupId> Attribution::id_of(const std::string& path) const {
  if (path == "/") return kRootCgroup;
  for (const auto& [ino, k] : known_)
    if (k.path == path) return k.id;
  return std::nullopt;
}

std::vector<std::pair<CgroupId, std::string>> Attribution::directories() const {
  std::vector<std::pair<CgroupId, std::string>> out;
  for (const auto& [ino, k] : known_) out.emplace_back(k.id, options_.cgroup_root + k.path);
  return out;
}

void Attribution::sync_tree(AttributionPass& pass) {
  namespace fs = std::filesystem;
  std::map<ino_t, std::pair<std::string, ino_t>> seen;  // inode -> (path, parent inode)
  struct stat root_st {};
  if (stat(options_.cgroup_root.c_str(), &root_st) != 0) return;
  std::error_code ec;
  // Ids released by the last pass are free now.
  free_ids_.insert(free_ids_.end(), released_.begin(), released_.end());
  released_.clear();
  UntrackedCgroups untracked;
  // Pre-order: a parent is always seen before its children.
  for (auto it = fs::recursive_directory_iterator(options_.cgroup_root,
                                                   fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec) || it->is_symlink(ec)) continue;
    struct stat st {}, parent_st {};
    if (stat(it->path().c_str(), &st) != 0 || stat(it->path().parent_path().c_str(), &parent_st) != 0)
      continue;  // vanished meanwhile
    const std::string rel = "/" + fs::relative(it->path(), options_.cgroup_root, ec).string();
    seen[st.st_ino] = {rel, parent_st.st_ino};
    if (known_.contains(st.st_ino)) continue;
    // The kernel's own per-cgroup zswap knobs, where it has them, are the defaults.
    CgroupPolicy policy;
    const auto writeback = read_text_file(it->path().string() + "/memory.zswap.writeback");
    if (writeback && !writeback->empty()) policy.writeback = (*writeback)[0] != '0';
    const auto max = read_text_file(it->path().string() + "/memory.zswap.max");
    if (max && !max->empty() && max->rfind("max", 0) != 0)
      policy.max_bytes = std::strtoull(max->c_str(), nullptr, 10);
    const CgroupId parent = parent_st.st_ino == root_st.st_ino ? kRootCgroup
                            : known_.contains(parent_st.st_ino) ? known_[parent_st.st_ino].id
                                                                : kRootCgroup;
    const std::optional<CgroupId> id = take_id();
    if (!id) {
      // Every id is live: the cgroup's pages stay the root's. What it asked
      // for is still known, so that it is not silently ignored.
      ++untracked.count;
      if (!policy.writeback) ++untracked.writeback_off;
      if (policy.max_bytes != 0) ++untracked.with_max;
      continue;
    }
    if (!store_.memcg().add(*id, parent)) {
      free_ids_.push_back(*id);
      continue;
    }
    store_.memcg().record_identity(*id, st.st_ino, rel);
    known_[st.st_ino] = {*id, rel};
    ++pass.new_cgroups;
    store_.memcg().set_policy(*id, policy);
  }
  untracked_ = untracked;
  pass.untracked_cgroups = untracked.count;
  // Gone since the last pass: deepest first, so children go before parents.
  std::vector<std::pair<std::size_t, ino_t>> gone;
  for (const auto& [ino, k] : known_)
    if (!seen.contains(ino)) gone.emplace_back(std::count(k.path.begin(), k.path.end(), '/'), ino);
  std::sort(gone.rbegin(), gone.rend());
  std::vector<CgroupId> removed;
  for (const auto& [depth, ino] : gone) {
    if (store_.memcg().remove(known_[ino].id)) removed.push_back(known_[ino].id);
    known_.erase(ino);
    ++pass.removed_cgroups;
  }
  released_ = store_.attribution_side().release_cgroups(removed);
  pass.released_ids = released_.size();
}

void Attribution::attribute_process(pid_t pid, CgroupId id, AttributionPass& pass) {
  const std::string proc = "/proc/" + std::to_string(pid);
  // smaps says which mappings have anything swapped out: only those are
  // read, so huge sparse reservations (sanitizer shadows, pools) cost nothing.
  const auto smaps = read_text_file(proc + "/smaps");
  if (!smaps) return;  // gone
  std::vector<MappedRange> ranges = parse_smaps(*smaps);
  if (ranges.empty()) return;  // a kernel thread
  // Small mappings first: a huge sparse one (a sanitizer's shadow) must not
  // use up the budget before the heap is seen.
  std::sort(ranges.begin(), ranges.end(), [](const MappedRange& a, const MappedRange& b) {
    return a.end - a.start < b.end - b.start;
  });
  const int fd = open((proc + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ++pass.processes;
  constexpr std::size_t kChunk = 512;
  std::uint64_t words[kChunk];
  for (const MappedRange& r : ranges) {
    if (r.swap_kb == 0) continue;
    // smaps says how many pages of this mapping are out: stop once all are seen.
    std::uint64_t left = r.swap_kb * 1024 / kPageSize;
    for (std::uint64_t page = r.start / kPageSize; page < r.end / kPageSize && left > 0;) {
      if (pass.pages_scanned >= options_.max_pages_per_pass) break;
      const std::size_t n = std::min<std::uint64_t>(kChunk, r.end / kPageSize - page);
      const ssize_t got = pread(fd, words, n * sizeof(std::uint64_t), static_cast<off_t>(page * 8));
      if (got <= 0) break;
      const std::size_t count = static_cast<std::size_t>(got) / sizeof(std::uint64_t);
      pass.pages_scanned += count;
      for (std::size_t i = 0; i < count; ++i) {
        const PagemapEntry e = decode_pagemap(words[i]);
        if (!e.swapped) continue;
        if (left > 0) --left;
        if (e.swap_type == options_.swap_type && e.swap_offset < store_.slots() &&
            store_.attribution_side().set_slot_cgroup(e.swap_offset, id))
          ++pass.attributed;
      }
      page += count;
    }
  }
  close(fd);
}

AttributionPass Attribution::scan() {
  AttributionPass pass;
  sync_tree(pass);
  std::vector<std::pair<std::string, CgroupId>> cgroups;
  for (const auto& [ino, k] : known_) cgroups.emplace_back(k.path, k.id);
  std::sort(cgroups.begin(), cgroups.end());
  pass.cgroups = cgroups.size();
  if (cgroups.empty()) {
    pass.complete = true;
    return pass;
  }
  std::size_t done = 0;
  for (; done < cgroups.size() && pass.pages_scanned < options_.max_pages_per_pass; ++done) {
    const auto& [path, id] = cgroups[(cursor_ + done) % cgroups.size()];
    const auto procs = read_text_file(options_.cgroup_root + path + "/cgroup.procs");
    if (!procs) continue;  // gone since sync_tree()
    for (const int pid : parse_cgroup_procs(*procs)) attribute_process(pid, id, pass);
  }
  cursor_ = (cursor_ + done) % cgroups.size();
  pass.complete = done == cgroups.size();
  return pass;
}

}  // namespace uzswap
