// Cgroup attribution: swap I/O carries no cgroup, so a slot is attributed by
// reading the pagemap of the processes in each cgroup of the v2 tree. A
// swapped pagemap entry whose type is our device's names the slot (its
// offset); the page store then moves the entry to that cgroup's lists and
// counters. Unattributed entries stay on the root cgroup's lists.
//
// Cgroups are known by inode, not path: each new directory inode gets an
// id. A cgroup whose inode is gone is removed from the page store, which
// reparents its lists, and its id is released
// (AttributionSide::release_cgroups re-labels the entries that still carry
// it); a released id is handed out again from the next pass on, so a
// lagging user of the old id has a whole pass to finish. When every id is
// live, new cgroups stay untracked: their pages remain the root cgroup's,
// the pass counts them, and untracked()
// says how many have writeback off or a maximum, so that the daemon holds
// the root's pages back rather than write back a cgroup that said no.
// A process or cgroup that vanishes mid-scan is skipped; an empty or failed
// read of a control file means "gone", never an error.
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
  unsigned max_cgroups = kMaxCgroups;  // ids 1..max_cgroups-1 (tests use fewer)
};

// Cgroups seen in the tree that got no id (all ids live), as of the last pass.
struct UntrackedCgroups {
  std::uint64_t count = 0;
  std::uint64_t writeback_off = 0;  // with memory.zswap.writeback = 0
  std::uint64_t with_max = 0;       // with a memory.zswap.max
};

struct AttributionPass {
  std::uint64_t cgroups = 0;
  std::uint64_t processes = 0;
  std::uint64_t pages_scanned = 0;  // pagemap entries read
  std::uint64_t attributed = 0;     // slots moved to a cgroup
  std::uint64_t new_cgroups = 0;
  std::uint64_t removed_cgroups = 0;
  std::uint64_t released_ids = 0;   // ids of removed cgroups made free again
  std::uint64_t untracked_cgroups = 0;  // no id left for them
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
  const UntrackedCgroups& untracked() const noexcept { return untracked_; }
  // Ids free to hand out now, and ids handed out in all.
  std::size_t free_ids() const noexcept { return free_ids_.size() + (options_.max_cgroups - next_id_); }
  std::size_t live_cgroups() const noexcept { return known_.size(); }

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
  std::optional<CgroupId> take_id();

  PageStore& store_;
  AttributionOptions options_;
  std::map<ino_t, Known> known_;  // by inode
  unsigned next_id_ = 1;              // never handed out from here on
  std::vector<CgroupId> free_ids_;    // released, free to hand out
  std::vector<CgroupId> released_;    // released in the last pass: free from the next
  UntrackedCgroups untracked_;
  std::size_t cursor_ = 0;  // index into the cgroup list where the last pass stopped
};

}  // namespace uzswap
