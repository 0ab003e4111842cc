// ListLru::walk, a template: the isolate callback is inlined into the walk.
#pragma once

#include <cassert>

namespace uzswap {

template <typename Isolate>
std::uint64_t ListLru::walk(CgroupId cgroup, unsigned node, std::uint64_t& nr_to_walk,
                            Isolate&& isolate) {
  List* list;
  lock_list(cgroup, node, list);
  std::uint64_t isolated = 0;
  std::uint32_t item = head(*list);
  while (item != kEnd && nr_to_walk > 0) {
    --nr_to_walk;
    // Read before the callback: once it isolates or rotates the item, the
    // item's links no longer lead along this list.
    const std::uint32_t following = next(item);
    WalkedList walked(*this, list);
    const LruStatus status = isolate(item, walked);
    assert(walked.held_ && "an isolate callback must return with the list lock held");
    switch (status) {
      case LruStatus::removed:
        assert(!walked.dropped_ && "dropped the lock: must return removed_retry");
        ++isolated;
        item = following;
        break;
      case LruStatus::rotate:
        assert(!walked.dropped_ && "dropped the lock: must return retry");
        rotate(*list, item);
        item = following;
        break;
      case LruStatus::skip:
        assert(!walked.dropped_ && "dropped the lock: must return retry");
        item = following;
        break;
      case LruStatus::removed_retry:
      case LruStatus::retry:
        if (status == LruStatus::removed_retry) ++isolated;
        // The list may have changed, or been spliced into the parent's while
        // the lock was dropped: start again from the head, or stop.
        if (list_dead(*list)) {
          unlock_list_raw(*list);
          return isolated;
        }
        item = head(*list);
        break;
      case LruStatus::stop:
        item = kEnd;
        break;
    }
  }
  unlock_list_raw(*list);
  return isolated;
}

}  // namespace uzswap
