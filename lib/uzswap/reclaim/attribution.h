// Cgroup attribution: swap I/O carries no cgroup, so a slot is attributed by
// reading the pagemap of the processes in each cgroup of the v2 tree. A
// swapped pagemap entry whose type is our device's names the slot (its
// offset); the page store then moves the entry to that cgroup's lists and
// counters. Unattributed entries stay on the root cgroup's lists.
//
// Cgroups are known by inode, not path: each new directory inode gets a new
// id (ids are never reused; see ListLru). A cgroup whose inode is gone is
// removed from the page store, which reparents its lists. A process or
// cgroup that vanishes mid-scan is skipped; an empty or failed read of a
// control file means "gone", never an error.
//
// Each pass reads at most `max_pages_per_pass` pagemap entries (the CPU
// budget) and resumes where the previous pass stopped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "uzswap/store/page_store.h"

namespace uzswap {

struct AttributionOptions {
  std::string cgroup_root;  // the v2 tree
  unsigned swap_type = 0;   // our device in the kernel's swap table
  std::uint64_t max_pages_per_pass = 1u << 20;
};

struct AttributionPass {
  std::uint64_t cgroups = 0;
  std::uint64_t processes = 0;
  std::uint64_t pages_scanned = 0;  // pagemap entries read
  std::uint64_t attributed = 0;     // slots moved to a cgroup
  std::uint64_t new_cgroups = 0;
  std::uint64_t removed_cgroups = 0;
  bool complete = false;            // reached the end of the tree
};

class Attribution {
 public:
  Attribution(PageStore& store, AttributionOptions options);

  // One pass over the tree (or as far as the budget goes). One caller at a time.
  AttributionPass scan();

  // The path (relative to the root, "/" for the root) of a known cgroup.
  std::optional<std::string> path_of(CgroupId id) const;
  std::optional<CgroupId> id_of(const std::string& path) const;
  // Every known cgroup but the root: (id, absolute directory).
  std::vector<std::pair<CgroupId, std::string>> directories() const;
  const AttributionOptions& options() const noexcept { return options_; }

  // The v2 tree of this machine: /sys/fs/cgroup on a pure v2 system, the
  // "unified" hierarchy on a hybrid one.
  static std::string default_root();

 private:
  struct Known {
    CgroupId id;
    std::string path;
  };
  void sync_tree(AttributionPass& pass);
  void attribute_process(pid_t pid, CgroupId id, AttributionPass& pass);

  PageStore& store_;
  AttributionOptions options_;
  std::map<ino_t, Known> known_;  // by inode
  unsigned next_id_ = 1;
  std::size_t cursor_ = 0;  // index into the cgroup list where the last pass stopped
};

}  // namespace uzswap
