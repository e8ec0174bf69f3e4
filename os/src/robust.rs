//! A mutex in shared memory that survives the death of its holder: the futex word holds the
//! owner's thread id, and every held mutex sits on its owner thread's *robust list*, which the
//! kernel walks when the thread dies (SIGKILL included). For each mutex still held there it sets
//! `OWNER_DIED`, frees the word and wakes a waiter: the next `lock` gets the mutex and is told.
//! This is how glibc's robust pthread mutexes work (`man 2 set_robust_list`); CPython's locks
//! are POSIX semaphores, which stay taken for ever instead (gh-88304).
//!
//! Each thread registers its own list head (in a thread-local) the first time it locks one of
//! our mutexes, replacing glibc's. glibc only uses its list for robust pthread mutexes, which
//! a thread that also holds procactor locks must not use.
//!
//! Uncontended, `lock` + `unlock` is two atomic read-modify-writes and a few stores: no syscall.

use std::cell::Cell;
use std::ptr::{addr_of, null_mut};
use std::sync::atomic::{compiler_fence, AtomicPtr, AtomicU32, Ordering};

use crate::error::Error;
use crate::sys;
use crate::wire::Wait;

use crate::futex::{futex_wait, futex_wake};

const WAITERS: u32 = 0x8000_0000;
const OWNER_DIED: u32 = 0x4000_0000;
const TID_MASK: u32 = 0x3fff_ffff;

/// An entry of a robust list (`struct robust_list`): the kernel follows `next` only.
#[repr(C)]
struct Node {
    next: AtomicPtr<Node>,
    prev: AtomicPtr<Node>,
}

/// A mutex in shared memory (all zeroes: unlocked).
#[repr(C)]
pub struct RawMutex {
    word: AtomicU32,
    _pad: u32,
    node: Node,
}

impl std::fmt::Debug for RawMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMutex")
            .field("word", &self.word)
            .finish_non_exhaustive()
    }
}

// SAFETY: atomics and an unused word: valid for any bits (a garbage list pointer is never
// followed by this process: only the kernel reads the list, and only ours).
unsafe impl crate::shm::AnyBits for RawMutex {}

/// Offset of the futex word from the list entry, as the kernel wants it in the list head.
const FUTEX_OFFSET: isize = -8;
const _: () = assert!(std::mem::offset_of!(RawMutex, node) as isize == -FUTEX_OFFSET);

/// `struct robust_list_head`.
#[repr(C)]
struct Head {
    /// First entry; the list is circular through the head itself.
    next: AtomicPtr<Node>,
    futex_offset: isize,
    /// The mutex being locked or unlocked right now: the kernel also looks at it, so a death
    /// between the atomic on the word and the list update is covered.
    pending: AtomicPtr<Node>,
}

struct ThreadList {
    head: Head,
    /// The pid the list was registered in (0: never). A forked child is a new process whose
    /// kernel-side registration is gone: it registers again.
    pid: Cell<u32>,
    tid: Cell<u32>,
}

thread_local! {
    // No destructor: the kernel may read the list while the thread exits.
    static LIST: ThreadList = const {
        ThreadList {
            head: Head {
                next: AtomicPtr::new(null_mut()),
                futex_offset: FUTEX_OFFSET,
                pending: AtomicPtr::new(null_mut()),
            },
            pid: Cell::new(0),
            tid: Cell::new(0),
        }
    };
}

impl ThreadList {
    #[inline]
    fn head_as_node(&self) -> *mut Node {
        // The head starts with a `next` field like a Node; only that field is ever accessed
        // through this pointer.
        addr_of!(self.head).cast_mut().cast()
    }

    /// This thread's id, registering the list with the kernel first if needed.
    #[inline]
    fn tid(&self) -> u32 {
        let pid = sys::getpid();
        if self.pid.get() != pid {
            self.register(pid);
        }
        self.tid.get()
    }

    #[cold]
    fn register(&self, pid: u32) {
        // A forked child inherits a copy of the parent thread's list: those mutexes are not ours.
        self.head.next.store(self.head_as_node(), Ordering::Relaxed);
        self.head.pending.store(null_mut(), Ordering::Relaxed);
        // SAFETY: the head lives in this thread's TLS for as long as the thread does and has the
        // kernel's layout (three words); the entries are `RawMutex` nodes in live mappings
        // (`Layout::in_use_here` keeps a mapping alive while one of our threads holds a lock in it).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_set_robust_list,
                addr_of!(self.head),
                std::mem::size_of::<Head>(),
            )
        };
        if rc != 0 {
            log::warn!(target: "procactor::sync", "set_robust_list failed: a lock held by a thread that dies will not be recovered");
        }
        self.tid
            .set(rustix::thread::gettid().as_raw_nonzero().get() as u32);
        self.pid.set(pid);
    }

    /// Puts `node` first on the list.
    ///
    /// # Safety
    /// `node` is the node of a mutex this thread just locked, in a live mapping.
    unsafe fn link(&self, node: *mut Node) {
        let head = self.head_as_node();
        let first = self.head.next.load(Ordering::Relaxed);
        // SAFETY: `node` is live (the caller's contract); `first` is the head or a live entry.
        unsafe {
            (*node).next.store(first, Ordering::Relaxed);
            (*node).prev.store(head, Ordering::Relaxed);
            if first != head {
                (*first).prev.store(node, Ordering::Relaxed);
            }
        }
        self.head.next.store(node, Ordering::Relaxed);
    }

    /// Takes `node` off the list.
    ///
    /// # Safety
    /// `node` is on this thread's list (its neighbours are the head or live entries).
    unsafe fn unlink(&self, node: *mut Node) {
        let head = self.head_as_node();
        // SAFETY: `node` and its neighbours are the head or live entries (the caller's
        // contract). `prev` may be the head: only its `next` (at offset 0 in both types) is
        // written.
        unsafe {
            let next = (*node).next.load(Ordering::Relaxed);
            let prev = (*node).prev.load(Ordering::Relaxed);
            (*addr_of!((*prev).next)).store(next, Ordering::Relaxed);
            if next != head {
                (*next).prev.store(prev, Ordering::Relaxed);
            }
        }
    }
}

/// Why `lock` gave up.
#[derive(Debug)]
pub enum LockFail {
    /// The wait ran out first (the `Wait` it was given, for the error).
    Timeout(Wait),
    /// This thread already holds the lock.
    Deadlock,
}

impl From<LockFail> for Error {
    #[cold]
    fn from(f: LockFail) -> Error {
        match f {
            LockFail::Timeout(wait) => wait.expired(),
            LockFail::Deadlock => Error::Deadlock(
                "this thread already holds the lock (use an RLock to lock it again)",
            ),
        }
    }
}

/// How many times a contended `lock` checks the word before it sleeps (only with 2+ CPUs).
const SPINS: u32 = 100;

impl RawMutex {
    #[inline]
    fn node(&self) -> *mut Node {
        addr_of!(self.node).cast_mut()
    }

    /// Locks, waiting as `wait` says. `Ok(true)` when the previous holder died holding it.
    /// Locking a mutex this thread holds is `LockFail::Deadlock` (it could never succeed).
    /// (A small error type: `Error` is large, and copying it costs the fast path.)
    #[inline]
    pub fn lock(&self, wait: Wait) -> std::result::Result<bool, LockFail> {
        LIST.with(|list| {
            let tid = list.tid();
            list.head.pending.store(self.node(), Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            let res = match self
                .word
                .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => Ok(false),
                Err(_) => self.lock_contended(tid, wait),
            };
            if res.is_ok() {
                // SAFETY: we hold the mutex, and `self` is in a live mapping.
                unsafe { list.link(self.node()) };
            }
            compiler_fence(Ordering::SeqCst);
            list.head.pending.store(null_mut(), Ordering::Relaxed);
            res
        })
    }

    #[cold]
    fn lock_contended(&self, tid: u32, wait: Wait) -> std::result::Result<bool, LockFail> {
        let spins = if sys::usable_cpus() > 1 { SPINS } else { 0 };
        let mut spun = 0;
        let mut slept = false;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v & TID_MASK == 0 {
                // Free (perhaps after its owner died). Once we have slept, others may be asleep
                // too: keep the WAITERS bit so that our unlock wakes one of them.
                let new = tid | if slept { WAITERS } else { v & WAITERS };
                if self
                    .word
                    .compare_exchange(v, new, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    let died = v & OWNER_DIED != 0;
                    if died {
                        log::warn!(target: "procactor::sync", "a lock's holder died holding it: its next owner is told (owner_died)");
                    }
                    return Ok(died);
                }
                continue;
            }
            if v & TID_MASK == tid {
                return Err(LockFail::Deadlock);
            }
            if matches!(wait, Wait::No) {
                return Err(LockFail::Timeout(wait));
            }
            if spun < spins {
                spun += 1;
                std::hint::spin_loop();
                continue;
            }
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            slept = true;
            if futex_wait(&self.word, v | WAITERS, wait).is_err() {
                return Err(LockFail::Timeout(wait));
            }
        }
    }

    /// Unlocks a mutex this thread holds.
    #[inline]
    pub fn unlock(&self) {
        LIST.with(|list| {
            debug_assert_eq!(self.word.load(Ordering::Relaxed) & TID_MASK, list.tid());
            list.head.pending.store(self.node(), Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            // SAFETY: we hold it, so it is on our list.
            unsafe { list.unlink(self.node()) };
            let v = self.word.swap(0, Ordering::Release);
            compiler_fence(Ordering::SeqCst);
            list.head.pending.store(null_mut(), Ordering::Relaxed);
            if v & WAITERS != 0 {
                futex_wake(&self.word, 1);
            }
        })
    }

    /// True when some thread holds it (racy: for display and `is_locked`).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TID_MASK != 0
    }

    /// True when the calling thread holds it.
    #[inline]
    pub fn held_by_me(&self) -> bool {
        let owner = self.word.load(Ordering::Relaxed) & TID_MASK;
        owner != 0 && LIST.with(|l| l.tid()) == owner
    }

    /// True when a thread of this process holds it (a guard was leaked with `mem::forget`).
    pub fn held_in_this_process(&self) -> bool {
        let owner = self.word.load(Ordering::Relaxed) & TID_MASK;
        // SAFETY: tgkill with signal 0 only checks that the thread exists in our group.
        owner != 0
            && unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    sys::getpid() as libc::c_long,
                    owner as libc::c_long,
                    0,
                )
            } == 0
    }
}
