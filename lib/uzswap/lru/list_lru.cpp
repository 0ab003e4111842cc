#include "uzswap/lru/list_lru.h"

#include <cassert>
#include <system_error>

namespace uzswap {

namespace {

const char* describe(LruError error) noexcept {
  switch (error) {
    case LruError::root: return "the root cgroup is always there";
    case LruError::no_parent: return "the parent cgroup does not exist";
    case LruError::other_parent: return "the cgroup exists with another parent";
    case LruError::removed: return "the cgroup is removed and its id not yet released";
    case LruError::unknown: return "no such cgroup";
    case LruError::live: return "the cgroup is live";
  }
  return "unknown LRU error";
}

// links: prev in bits 0-31, next in bits 32-62, referenced in bit 63.
constexpr std::uint64_t kReferenced = std::uint64_t{1} << 63;
constexpr std::uint64_t pack(std::uint32_t prev, std::uint32_t next, bool referenced) {
  return prev | (std::uint64_t{next} << 32) | (referenced ? kReferenced : 0);
}
constexpr std::uint32_t prev_of(std::uint64_t l) { return static_cast<std::uint32_t>(l); }
constexpr std::uint32_t next_of(std::uint64_t l) {
  return static_cast<std::uint32_t>((l >> 32) & 0x7fffffffu);
}

}  // namespace

const std::error_category& lru_category() noexcept {
  static const ErrorCategory<LruError> category("uzswap.list_lru", describe);
  return category;
}

std::error_code make_error_code(LruError error) noexcept { return {static_cast<int>(error), lru_category()}; }

struct ListLru::List {
  Mutex lock;
  std::uint32_t head GUARDED_BY(lock) = kEnd;  // least recently added or rotated
  std::uint32_t tail GUARDED_BY(lock) = kEnd;
  std::atomic<std::uint64_t> count{0};  // written under lock, read without
  std::atomic<bool> dead{false};        // spliced into the parent's list
};

struct ListLru::Cgroup {
  CgroupId parent = kRootCgroup;
  std::atomic<bool> live{true};
  std::unique_ptr<List[]> lists;
};

ListLru::ListLru(std::uint32_t items, unsigned nodes)
    : nodes_(nodes), links_(items), cgroups_(std::make_unique<std::atomic<Cgroup*>[]>(kMaxCgroups)) {
  if (items > kMaxItems)
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), "too many LRU items");
  if (nodes == 0)
    throw std::system_error(std::make_error_code(std::errc::invalid_argument), "an LRU needs at least one node");
  // Writing every link here also backs (and, under mlockall, locks) the
  // whole array at start: the request path never faults on it.
  for (std::uint32_t i = 0; i < items; ++i) links_[i] = pack(kEnd, kOff, false);
  auto* root = new Cgroup;
  root->lists = std::make_unique<List[]>(nodes_);
  cgroups_[kRootCgroup].store(root, std::memory_order_release);
}

ListLru::~ListLru() {
  for (unsigned i = 0; i < kMaxCgroups; ++i) delete cgroups_[i].load(std::memory_order_relaxed);
  for (Cgroup* c : released_) delete c;
}

Result<> ListLru::add_cgroup(CgroupId cgroup, CgroupId parent) {
  MutexLock guard(cgroups_lock_);
  if (cgroup == kRootCgroup) return failure(LruError::root);
  Cgroup* p = cgroups_[parent].load(std::memory_order_acquire);
  if (p == nullptr || !p->live.load(std::memory_order_acquire)) return failure(LruError::no_parent);
  if (Cgroup* existing = cgroups_[cgroup].load(std::memory_order_acquire)) {
    // A removed id is not added again until it is released: entries may
    // still carry it, and they must keep resolving to the lists their items
    // were spliced into.
    if (!existing->live.load(std::memory_order_acquire)) return failure(LruError::removed);
    if (existing->parent != parent) return failure(LruError::other_parent);
    return {};
  }
  auto* c = new Cgroup;
  c->parent = parent;
  c->lists = std::make_unique<List[]>(nodes_);
  cgroups_[cgroup].store(c, std::memory_order_release);
  return {};
}

Result<> ListLru::remove_cgroup(CgroupId cgroup) {
  MutexLock guard(cgroups_lock_);
  if (cgroup == kRootCgroup) return failure(LruError::root);
  Cgroup* c = cgroups_[cgroup].load(std::memory_order_acquire);
  if (c == nullptr || !c->live.load(std::memory_order_acquire)) return failure(LruError::unknown);
  const CgroupId target = resolve(c->parent);
  Cgroup* parent = cgroups_[target].load(std::memory_order_acquire);
  for (unsigned node = 0; node < nodes_; ++node) {
    // Two list locks at once only here, under cgroups_lock_: child first.
    List& from = c->lists[node];
    List& to = parent->lists[node];
    MutexLock from_guard(from.lock);
    MutexLock to_guard(to.lock);
    if (from.head != kEnd) {
      if (to.tail == kEnd) {
        to.head = from.head;
      } else {
        links_[to.tail] = (links_[to.tail] & ~(std::uint64_t{0x7fffffffu} << 32)) |
                          (std::uint64_t{from.head} << 32);
        links_[from.head] = (links_[from.head] & ~std::uint64_t{0xffffffffu}) | to.tail;
      }
      to.tail = from.tail;
      to.count.store(to.count.load(std::memory_order_relaxed) +
                         from.count.load(std::memory_order_relaxed),
                     std::memory_order_relaxed);
    }
    from.head = from.tail = kEnd;
    from.count.store(0, std::memory_order_relaxed);
    from.dead.store(true, std::memory_order_release);
  }
  c->live.store(false, std::memory_order_release);
  return {};
}

Result<> ListLru::release_cgroup(CgroupId cgroup) {
  MutexLock guard(cgroups_lock_);
  if (cgroup == kRootCgroup) return failure(LruError::root);
  Cgroup* c = cgroups_[cgroup].load(std::memory_order_acquire);
  if (c == nullptr) return failure(LruError::unknown);
  if (c->live.load(std::memory_order_acquire)) return failure(LruError::live);
  released_.push_back(c);
  cgroups_[cgroup].store(nullptr, std::memory_order_release);
  return {};
}

bool ListLru::has_cgroup(CgroupId cgroup) const noexcept {
  const Cgroup* c = cgroups_[cgroup].load(std::memory_order_acquire);
  return c != nullptr && c->live.load(std::memory_order_acquire);
}

CgroupId ListLru::resolve(CgroupId cgroup) const noexcept {
  for (;;) {
    const Cgroup* c = cgroups_[cgroup].load(std::memory_order_acquire);
    if (c == nullptr) return kRootCgroup;  // unknown ids live on the root's lists
    if (c->live.load(std::memory_order_acquire)) return cgroup;
    cgroup = c->parent;
  }
}

ListLru::List* ListLru::list_for(CgroupId cgroup, unsigned node) const noexcept {
  return &cgroups_[resolve(cgroup)].load(std::memory_order_acquire)->lists[node];
}

void ListLru::lock_list(CgroupId cgroup, unsigned node, List*& list) noexcept ACQUIRE(list->lock) {
  assert(node < nodes_);
  for (;;) {
    list = list_for(cgroup, node);
    list->lock.lock();
    if (!list->dead.load(std::memory_order_acquire)) return;
    list->lock.unlock();  // reparented meanwhile: follow it
  }
}

void ListLru::lock_list_raw(List& list) noexcept ACQUIRE(list.lock) { list.lock.lock(); }
void ListLru::unlock_list_raw(List& list) noexcept RELEASE(list.lock) { list.lock.unlock(); }
bool ListLru::list_dead(const List& list) noexcept {
  return list.dead.load(std::memory_order_acquire);
}

std::uint32_t ListLru::head(const List& list) const noexcept REQUIRES(list.lock) { return list.head; }
std::uint32_t ListLru::next(std::uint32_t item) const noexcept { return next_of(links_[item]); }

void ListLru::unlink(List& list, std::uint32_t item) noexcept REQUIRES(list.lock) {
  const std::uint64_t l = links_[item];
  const std::uint32_t p = prev_of(l), n = next_of(l);
  if (p == kEnd) list.head = n;
  else links_[p] = (links_[p] & ~(std::uint64_t{0x7fffffffu} << 32)) | (std::uint64_t{n} << 32);
  if (n == kEnd) list.tail = p;
  else links_[n] = (links_[n] & ~std::uint64_t{0xffffffffu}) | p;
  links_[item] = pack(kEnd, kOff, l & kReferenced);
  list.count.store(list.count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

void ListLru::link_tail(List& list, std::uint32_t item) noexcept REQUIRES(list.lock) {
  const bool referenced = links_[item] & kReferenced;
  links_[item] = pack(list.tail, kEnd, referenced);
  if (list.tail == kEnd) list.head = item;
  else links_[list.tail] = (links_[list.tail] & ~(std::uint64_t{0x7fffffffu} << 32)) |
                           (std::uint64_t{item} << 32);
  list.tail = item;
  list.count.store(list.count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

void ListLru::rotate(List& list, std::uint32_t item) noexcept REQUIRES(list.lock) {
  if (list.tail == item) return;
  unlink(list, item);
  link_tail(list, item);
}

bool ListLru::add(std::uint32_t item, CgroupId cgroup, unsigned node, bool referenced) noexcept {
  List* list;
  lock_list(cgroup, node, list);
  const bool off = next_of(links_[item]) == kOff;
  if (off) {
    // A new entry gets its second chance, as in zswap, unless told otherwise.
    links_[item] = referenced ? links_[item] | kReferenced : links_[item] & ~kReferenced;
    const bool was_empty = list->head == kEnd;
    link_tail(*list, item);
    if (was_empty && populated_) populated_(resolve(cgroup), node);
  }
  list->lock.unlock();
  return off;
}

bool ListLru::del(std::uint32_t item, CgroupId cgroup, unsigned node) noexcept {
  List* list;
  lock_list(cgroup, node, list);
  const bool on = next_of(links_[item]) != kOff;
  if (on) unlink(*list, item);
  list->lock.unlock();
  return on;
}

bool ListLru::on_list(std::uint32_t item, CgroupId cgroup, unsigned node) noexcept {
  List* list;
  lock_list(cgroup, node, list);
  const bool on = next_of(links_[item]) != kOff;
  list->lock.unlock();
  return on;
}

void ListLru::mark_referenced(std::uint32_t item, CgroupId cgroup, unsigned node) noexcept {
  List* list;
  lock_list(cgroup, node, list);
  if (next_of(links_[item]) != kOff) links_[item] |= kReferenced;
  list->lock.unlock();
}

std::uint64_t ListLru::count(CgroupId cgroup, unsigned node) const noexcept {
  return list_for(cgroup, node)->count.load(std::memory_order_relaxed);
}

bool ListLru::WalkedList::referenced(std::uint32_t item) const noexcept {
  return lru_.links_[item] & kReferenced;
}
void ListLru::WalkedList::clear_referenced(std::uint32_t item) noexcept {
  lru_.links_[item] &= ~kReferenced;
}
// The isolate callback calls these with the list lock walk() took (or, after
// unlock(), without it): the callback is checked as a function of its own,
// which cannot know that, so these three are not checked either.
void ListLru::WalkedList::isolate(std::uint32_t item) noexcept NO_THREAD_SAFETY_ANALYSIS {
  lru_.unlink(*list_, item);
}
void ListLru::WalkedList::unlock() noexcept NO_THREAD_SAFETY_ANALYSIS {
  assert(held_);
  list_->lock.unlock();
  held_ = false;
  dropped_ = true;
}
void ListLru::WalkedList::lock() noexcept NO_THREAD_SAFETY_ANALYSIS {
  assert(!held_);
  list_->lock.lock();
  held_ = true;
}

}  // namespace uzswap
