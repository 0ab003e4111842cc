// ListLru: LRU lists per (cgroup, NUMA node), the userspace list_lru that
// zswap_list_lru is built on.
//
// Items are numbers (slot numbers, for the page store); each item's links
// and referenced bit live in one array indexed by item, 8 bytes per item, so
// adding and removing never allocates. Lists are created when a cgroup is
// added (its ancestors must exist, so reparenting always has a target); the
// root cgroup (id 0) always exists. Removing a cgroup splices each of its
// lists onto its parent's in O(1) and redirects its id to the parent, like
// the kernel reparenting a memcg's list_lru and objcg. Once no item is
// added under a removed id any more (the page store re-labels its entries
// first), release_cgroup() forgets it and the id can be added again.
//
// Locking. One mutex per list guards the list and the links and referenced
// bit of every item on it. The cgroup table is guarded by cgroups_lock_;
// list locks nest inside it only in remove_cgroup(). walk() calls the
// isolate callback with the list lock held; see LruStatus for what the
// callback may do with it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <system_error>
#include <type_traits>
#include <vector>

#include "uzswap/common/mapped_array.h"
#include "uzswap/common/mutex.h"
#include "uzswap/common/result.h"

namespace uzswap {

using CgroupId = std::uint16_t;
inline constexpr CgroupId kRootCgroup = 0;
inline constexpr unsigned kMaxCgroups = 65536;

// Why a change to the cgroup table was refused.
enum class LruError {
  root = 1,      // the root cgroup is neither added, removed nor released
  no_parent,     // add: the parent is unknown or removed
  other_parent,  // add: the cgroup is live under another parent
  removed,       // add: the id is a removed cgroup's, not yet released
  unknown,       // remove, release: no such cgroup (or, remove, already removed)
  live,          // release: the cgroup is live
};
const std::error_category& lru_category() noexcept;
std::error_code make_error_code(LruError error) noexcept;

// What an isolate callback did, and so what the walk does next
// (list_lru_walk_cb's enum lru_status).
enum class LruStatus {
  removed,        // the callback isolated the item; the lock was held throughout
  removed_retry,  // isolated it, and dropped and re-took the lock: restart from the head
  rotate,         // move the item to the tail (most recent end); lock held throughout
  skip,           // leave the item where it is; lock held throughout
  retry,          // item not isolated, lock dropped and re-taken: restart from the head
  stop,           // stop walking; lock held
};

class ListLru {
  struct List;
  struct Cgroup;

 public:
  // Items 0..items-1 on `nodes` NUMA nodes. Throws std::system_error
  // (EINVAL: more than kMaxItems, or no node).
  ListLru(std::uint32_t items, unsigned nodes);
  ~ListLru();
  ListLru(const ListLru&) = delete;
  ListLru& operator=(const ListLru&) = delete;

  static constexpr std::uint32_t kMaxItems = (std::uint32_t{1} << 31) - 2;
  static constexpr std::uint32_t kEnd = kMaxItems;      // no next/previous item
  static constexpr std::uint32_t kOff = kMaxItems + 1;  // "next" of an item on no list

  // Creates the lists of `cgroup`, a child of `parent` (which must exist).
  // Adding an existing live cgroup under the same parent is a no-op. An
  // LruError if the parent does not exist, the id is the root's or a removed
  // cgroup's.
  Result<> add_cgroup(CgroupId cgroup, CgroupId parent);
  // Splices the cgroup's lists onto its parent's and redirects its id there.
  // Its live children must have been removed first. An LruError for the root
  // or an unknown id.
  Result<> remove_cgroup(CgroupId cgroup);
  // Forgets a removed cgroup, so that its id can be added again (as a new
  // cgroup). The caller guarantees that nothing adds, deletes or looks up
  // items under this id any more; a lookup that still comes resolves to the
  // root. Its lists are kept until destruction (a walker that raced the
  // removal may still hold one). An LruError if the id is live or unknown.
  Result<> release_cgroup(CgroupId cgroup);
  bool has_cgroup(CgroupId cgroup) const noexcept;
  // The live cgroup whose lists hold items added under `cgroup`.
  CgroupId resolve(CgroupId cgroup) const noexcept;

  // Adds `item` at the tail of (cgroup, node)'s list, referenced (or not:
  // then the first walk to reach it may isolate it). False if the item is
  // already on a list.
  bool add(std::uint32_t item, CgroupId cgroup, unsigned node, bool referenced = true) noexcept;
  // Removes `item` from (cgroup, node)'s list. False if it is not on it.
  bool del(std::uint32_t item, CgroupId cgroup, unsigned node) noexcept;
  bool on_list(std::uint32_t item, CgroupId cgroup, unsigned node) noexcept;
  // Sets the item's referenced bit if it is on the list (a second chance).
  void mark_referenced(std::uint32_t item, CgroupId cgroup, unsigned node) noexcept;

  std::uint64_t count(CgroupId cgroup, unsigned node) const noexcept;
  unsigned nodes() const noexcept { return nodes_; }

  // Called, with the list lock held, when a list goes from empty to one item
  // (where list_lru_add sets the shrinker bit). Set before items are added.
  void set_populated_hook(std::function<void(CgroupId, unsigned)> hook) { populated_ = std::move(hook); }

  // The list being walked, as the isolate callback sees it.
  class WalkedList {
   public:
    bool referenced(std::uint32_t item) const noexcept;
    void clear_referenced(std::uint32_t item) noexcept;
    // Takes the item off the list (list_lru_isolate).
    void isolate(std::uint32_t item) noexcept;
    void unlock() noexcept;
    void lock() noexcept;

   private:
    friend class ListLru;
    WalkedList(ListLru& lru, List* list) : lru_(lru), list_(list) {}
    ListLru& lru_;
    List* list_;
    bool dropped_ = false;  // the callback dropped the lock at some point
    bool held_ = true;
  };

  // Walks (cgroup, node)'s list from its head (least recent end), calling
  // isolate(item, list) -> LruStatus for at most nr_to_walk items;
  // nr_to_walk is decremented before each call, so retries cannot loop
  // forever. Returns how many items the callback isolated.
  template <typename Isolate>
  std::uint64_t walk(CgroupId cgroup, unsigned node, std::uint64_t& nr_to_walk, Isolate&& isolate);

 private:
  List* list_for(CgroupId cgroup, unsigned node) const noexcept;
  // Sets `list` to the live list of (cgroup, node), locked. (An out
  // parameter, so that the annotation can name the lock it returns held.)
  void lock_list(CgroupId cgroup, unsigned node, List*& list) noexcept;
  // The helpers below need the list's lock held (or take or drop it); their
  // definitions say so (REQUIRES, ACQUIRE, RELEASE), List being incomplete
  // here. Links and referenced bits are guarded by the lock of the list the
  // item is on, which no annotation can name.
  void unlink(List& list, std::uint32_t item) noexcept;
  void link_tail(List& list, std::uint32_t item) noexcept;
  std::uint32_t head(const List& list) const noexcept;
  std::uint32_t next(std::uint32_t item) const noexcept;
  void rotate(List& list, std::uint32_t item) noexcept;
  static void lock_list_raw(List& list) noexcept;
  static void unlock_list_raw(List& list) noexcept;
  static bool list_dead(const List& list) noexcept;

  unsigned nodes_;
  std::function<void(CgroupId, unsigned)> populated_;
  MappedArray<std::uint64_t> links_;  // per item: prev:32 | next:31 | referenced:1
  mutable Mutex cgroups_lock_;
  std::unique_ptr<std::atomic<Cgroup*>[]> cgroups_;  // written under cgroups_lock_, read without
  std::vector<Cgroup*> released_ GUARDED_BY(cgroups_lock_);  // deleted with the lru
};

}  // namespace uzswap

template <>
struct std::is_error_code_enum<uzswap::LruError> : std::true_type {};

#include "uzswap/lru/list_lru_walk.h"
