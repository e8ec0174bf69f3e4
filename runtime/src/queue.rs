//! `Queue<T>`, `SimpleQueue<T>` and `JoinableQueue<T>`: many producer and consumer processes on
//! one FIFO of typed items.
//!
//! The queue is a ring of bytes in shared memory under one robust mutex. An item is encoded
//! (postcard) before the lock is taken, copied into the ring under it, and *committed* by a
//! single store of the ring's tail: a producer killed before that store leaves nothing behind,
//! one killed after it has delivered its item. Consumers commit a `get` by a single store of
//! the head. Everything else in the ring's header (the item count) is recomputed from the ring
//! by the next locker when a holder died. A consumer that finds the queue empty polls it for a
//! few microseconds before it sleeps (only with 2+ CPUs), so a busy queue costs no syscall.
//!
//! Items too large for a quarter of the ring travel in a memfd of their own, whose descriptor
//! goes over a socket shared by the queue's handles; the ring holds a small record naming it.

use std::cell::Cell;
use std::io::IoSlice;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result, TrySendError};
use crate::shm::{Access, Layout, Region, Shared, Size};
use crate::sync::robust::RawMutex;
use crate::sync::RawCondvar;
use crate::sys;
use crate::wire::{self, Fd, SendFd, Wait};

/// Bytes of ring a queue has unless told otherwise.
const DEFAULT_CAPACITY: usize = 1 << 20;
/// Record header: payload length, kind.
const REC_HEAD: u64 = 8;
const KIND_INLINE: u32 = 1;
/// The payload is `(id, len)` of a memfd sent on the spill socket.
const KIND_SPILL: u32 = 2;
/// A spilled item's memfd: fixed size, and its bytes fixed too.
const SPILL_SEALS: sys::SealFlags = sys::SIZE_SEALS.union(sys::SealFlags::WRITE);

procactor_os::shared_struct! {
    pub(crate) struct QueueCell {
        mutex: RawMutex,
        /// Keeps the mutex on a cache line of its own: consumers poll `head`/`tail` while they
        /// wait, which must not steal the line a producer is locking.
        _line: [u8; 40],
        /// Byte positions (ever increasing) of the first record and past the last one.
        head: AtomicU64,
        tail: AtomicU64,
        count: AtomicU32,
        /// Most items at once (0: no limit but the ring's bytes).
        maxsize: AtomicU32,
        closed: AtomicU32,
        not_empty: RawCondvar,
        not_full: RawCondvar,
        /// JoinableQueue: items put and not yet `task_done`.
        unfinished: AtomicU64,
        all_done: RawCondvar,
        type_tag: AtomicU64,
        next_spill: AtomicU64,
    }
}

impl Layout for QueueCell {
    const MAGIC: u32 = 0x5155_4555;
    fn in_use_here(&self) -> bool {
        self.mutex.held_in_this_process()
    }
}

fn record_len(payload: usize) -> u64 {
    REC_HEAD + (payload as u64).next_multiple_of(8)
}

/// One process's handle: the ring and both ends of the spill socket.
struct Inner {
    cell: Shared<QueueCell>,
    capacity: u64,
    spill_tx: OwnedFd,
    spill_rx: OwnedFd,
}

thread_local! {
    /// Encoded items waiting to be copied in, and copied out waiting to be decoded.
    // Taken out and put back (not borrowed in a closure): results then return in place.
    static BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// What a consumer took out of the ring.
enum Taken {
    Inline(Vec<u8>),
    Spilled(Region),
}

/// A multi-producer, multi-consumer FIFO queue between processes (Python's
/// `multiprocessing.Queue`).
///
/// `put` returns once the item is in shared memory: a producer that dies afterwards has still
/// delivered it, and one that dies during `put` delivers nothing (never half an item). Items
/// from one producer come out in the order it put them. `close` ends the queue: later puts fail
/// with `Error::Closed`, and consumers get what is left, then `Error::Closed`.
///
/// A queue holds up to 1 MiB of encoded items by default ([`QueueBuilder::capacity_bytes`]);
/// past that, `put` waits as on a full bounded queue. Items may not contain procactor handles
/// (send those in a message or over a `Pipe`).
///
/// ```
/// # procactor::init();
/// use procactor::{Process, Queue};
///
/// fn producer(q: Queue<u32>) {
///     for i in 0..100 {
///         q.put(i).unwrap();
///     }
///     q.close();
/// }
///
/// let q = Queue::new()?;
/// let p = Process::new(producer, q.clone()).start()?;
/// let mut sum = 0;
/// while let Ok(i) = q.get() {
///     sum += i;
/// }
/// assert_eq!(sum, 4950);
/// p.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
pub struct Queue<T> {
    inner: Arc<Inner>,
    _type: PhantomData<fn(T) -> T>,
}

/// Options for a [`Queue`].
///
/// ```
/// # procactor::init();
/// let q = procactor::Queue::<String>::builder()
///     .maxsize(10)
///     .capacity_bytes(64 * 1024)
///     .build()?;
/// assert_eq!(q.maxsize(), Some(10));
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a QueueBuilder does nothing until `build()`"]
pub struct QueueBuilder<T> {
    maxsize: u32,
    capacity: usize,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> QueueBuilder<T> {
    /// At most `n` items at once (`put` waits while there are `n`).
    pub fn maxsize(mut self, n: u32) -> Self {
        self.maxsize = n;
        self
    }

    /// Bytes of shared memory for encoded items (rounded up to a power of two from 4 KiB to
    /// 2 GiB; default 1 MiB). Items larger than a quarter of it go in memory of their own.
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Creates the queue.
    pub fn build(self) -> Result<Queue<T>> {
        // A power of two: positions map into the ring with a mask, not a division.
        let capacity = self.capacity.clamp(4096, 1 << 31).next_power_of_two();
        let cell = Shared::<QueueCell>::new("procactor-queue", capacity)?;
        cell.maxsize.store(self.maxsize, Ordering::Relaxed);
        cell.type_tag
            .store(wire::fingerprint::<T>(), Ordering::Release);
        let (spill_tx, spill_rx) = sys::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        for fd in [&spill_tx, &spill_rx] {
            sys::set_nonblocking(fd.as_fd()).map_err(|e| Error::io("ioctl", e))?;
        }
        Ok(Queue {
            inner: Arc::new(Inner {
                cell,
                capacity: capacity as u64,
                spill_tx,
                spill_rx,
            }),
            _type: PhantomData,
        })
    }
}

/// The queue's mutex, held.
struct Held<'a>(&'a Inner);

impl<'a> Held<'a> {
    fn lock(inner: &'a Inner) -> Result<Held<'a>> {
        if inner.cell.mutex.lock(Wait::Forever)? {
            inner.repair();
        }
        Ok(Held(inner))
    }

    /// Releases the mutex, sleeps on `cv`, takes the mutex back.
    fn sleep(&self, cv: &RawCondvar, wait: Wait) -> Result<()> {
        let seq = cv.prepare();
        self.0.cell.mutex.unlock();
        let slept = cv.sleep(seq, wait);
        // Only `Deadlock` can fail a lock that waits for ever, and we just released it.
        if let Ok(true) = self.0.cell.mutex.lock(Wait::Forever) {
            self.0.repair();
        }
        slept
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.cell.mutex.unlock();
    }
}

impl Inner {
    /// Copies `bytes` into the ring at position `pos` (under the mutex, into free space).
    fn write_at(&self, pos: u64, bytes: &[u8]) {
        let off = (pos & (self.capacity - 1)) as usize;
        let first = bytes.len().min(self.capacity as usize - off);
        // `first` fits before the ring's end, the rest after its start (callers never write
        // more than the ring holds).
        self.cell.write_tail(off, &bytes[..first]);
        self.cell.write_tail(0, &bytes[first..]);
    }

    /// Copies bytes out of the ring from position `pos` (under the mutex).
    fn read_at(&self, pos: u64, out: &mut [u8]) {
        let off = (pos & (self.capacity - 1)) as usize;
        let first = out.len().min(self.capacity as usize - off);
        let (head, rest) = out.split_at_mut(first);
        self.cell.read_tail(off, head);
        self.cell.read_tail(0, rest);
    }

    fn read_header(&self, pos: u64) -> (u64, u32) {
        let mut h = [0u8; REC_HEAD as usize];
        self.read_at(pos, &mut h);
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let kind = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        (len as u64, kind)
    }

    /// After a holder died: recounts the committed records, the only state not committed by a
    /// single store.
    #[cold]
    fn repair(&self) {
        let c = &*self.cell;
        let (head, tail) = (
            c.head.load(Ordering::Relaxed),
            c.tail.load(Ordering::Relaxed),
        );
        let mut pos = head;
        let mut count = 0;
        while pos < tail {
            let (len, kind) = self.read_header(pos);
            if len > self.capacity || !matches!(kind, KIND_INLINE | KIND_SPILL) {
                log::error!(target: "procactor::queue", "queue memory is corrupt: dropping its {} items", tail - head);
                c.head.store(tail, Ordering::Release);
                count = 0;
                break;
            }
            pos += record_len(len as usize);
            count += 1;
        }
        c.count.store(count, Ordering::Relaxed);
        log::warn!(target: "procactor::queue", "a process died inside a queue operation; the queue is consistent ({count} items)");
    }

    fn put(&self, buf: &[u8], wait: Wait) -> Result<()> {
        let spill = if record_len(buf.len()) > self.capacity / 4 {
            Some(self.spill(buf)?)
        } else {
            None
        };
        let c = &*self.cell;
        let held = Held::lock(self)?;
        loop {
            if c.closed.load(Ordering::Relaxed) != 0 {
                return Err(Error::Closed);
            }
            let payload_len = if spill.is_some() { 16 } else { buf.len() };
            if self.has_room(record_len(payload_len)) {
                match &spill {
                    None => {
                        self.commit(KIND_INLINE, buf);
                        return Ok(());
                    }
                    Some((fd, len)) => {
                        // The descriptor first, then the record naming it (see take_spilled).
                        if let Some(id) = self.send_spill(fd.as_fd())? {
                            let mut record = [0u8; 16];
                            record[..8].copy_from_slice(&id.to_le_bytes());
                            record[8..].copy_from_slice(&(*len as u64).to_le_bytes());
                            self.commit(KIND_SPILL, &record);
                            return Ok(());
                        }
                        // The socket is full of unread large items: wait as for a full ring.
                    }
                }
            }
            if matches!(wait, Wait::No) {
                return Err(Error::Full);
            }
            held.sleep(&c.not_full, wait)?;
        }
    }

    /// Whether a record of `rec` bytes may be put now (under the mutex).
    fn has_room(&self, rec: u64) -> bool {
        let c = &*self.cell;
        let used = c.tail.load(Ordering::Relaxed) - c.head.load(Ordering::Relaxed);
        let maxsize = c.maxsize.load(Ordering::Relaxed);
        (maxsize == 0 || c.count.load(Ordering::Relaxed) < maxsize) && self.capacity - used >= rec
    }

    /// Writes a record at the tail and commits it (under the mutex, after `has_room`).
    fn commit(&self, kind: u32, payload: &[u8]) {
        let c = &*self.cell;
        let tail = c.tail.load(Ordering::Relaxed);
        let mut header = [0u8; REC_HEAD as usize];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&kind.to_le_bytes());
        self.write_at(tail, &header);
        self.write_at(tail + REC_HEAD, payload);
        // The commit: from this store on, the item is delivered.
        c.tail
            .store(tail + record_len(payload.len()), Ordering::Release);
        // Under the mutex: plain stores, no read-modify-write needed.
        c.count
            .store(c.count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        c.unfinished
            .store(c.unfinished.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if c.not_empty.has_sleepers() {
            c.not_empty.notify(1);
        }
    }

    /// An item too large for the ring, in a memfd of its own, sealed before it is sent: its
    /// consumer maps it, and nobody can resize it under that mapping or rewrite the bytes that
    /// are being decoded.
    fn spill(&self, bytes: &[u8]) -> Result<(OwnedFd, usize)> {
        let fd = sys::memfd("procactor-queue-item").map_err(|e| Error::io("memfd_create", e))?;
        sys::write_file(fd.as_fd(), bytes).map_err(|e| Error::io("write", e))?;
        sys::add_seals(fd.as_fd(), SPILL_SEALS).map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        Ok((fd, bytes.len()))
    }

    /// Sends a spilled item's descriptor on the spill socket (under the mutex), named by a new
    /// id; `Ok(None)` when the socket is full. The id is taken before the send: a producer that
    /// dies between the send and its commit leaves a record whose id nobody will ask for
    /// (consumers skip it), never one that the next producer's id repeats.
    fn send_spill(&self, fd: BorrowedFd) -> Result<Option<u64>> {
        let c = &*self.cell;
        let id = c.next_spill.load(Ordering::Relaxed);
        c.next_spill.store(id + 1, Ordering::Relaxed);
        let sent = sys::try_send_record(
            self.spill_tx.as_fd(),
            &[IoSlice::new(&id.to_le_bytes())],
            Some(fd),
        )
        .map_err(|e| Error::io("send", e))?;
        #[cfg(test)]
        tests::die_here("after the spill send");
        Ok(sent.then_some(id))
    }

    /// Polls an empty queue for a moment before sleeping (a cross-core wake-up costs far more).
    fn spin_while_empty(&self, wait: Wait) {
        let spin = wire::spin_time();
        if matches!(wait, Wait::No) || spin.is_zero() {
            return;
        }
        let c = &*self.cell;
        let empty = || {
            c.head.load(Ordering::Relaxed) == c.tail.load(Ordering::Acquire)
                && c.closed.load(Ordering::Relaxed) == 0
        };
        if !empty() {
            return;
        }
        let mut until = Instant::now() + spin;
        if let Some(deadline) = wait.deadline() {
            until = until.min(deadline);
        }
        let mut n = 0u32;
        while empty() {
            n += 1;
            if n % 64 == 0 && Instant::now() >= until {
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn get(&self, wait: Wait) -> Result<Taken> {
        self.spin_while_empty(wait);
        let c = &*self.cell;
        let held = Held::lock(self)?;
        let head = loop {
            let head = c.head.load(Ordering::Relaxed);
            if head != c.tail.load(Ordering::Relaxed) {
                break head;
            }
            if c.closed.load(Ordering::Relaxed) != 0 {
                return Err(Error::Closed);
            }
            if matches!(wait, Wait::No) {
                return Err(Error::Empty);
            }
            held.sleep(&c.not_empty, wait)?;
        };
        let (len, kind) = self.read_header(head);
        let corrupt = |reason: &str| Error::Decode {
            expected: "a queue record",
            reason: reason.to_string(),
        };
        if len > self.capacity {
            self.repair();
            return Err(corrupt("the queue's memory was overwritten"));
        }
        let taken = match kind {
            KIND_INLINE => {
                let mut buf = BUF.take();
                buf.resize(len as usize, 0);
                self.read_at(head + REC_HEAD, &mut buf);
                Ok(Taken::Inline(buf))
            }
            KIND_SPILL => {
                let mut p = [0u8; 16];
                self.read_at(head + REC_HEAD, &mut p);
                let id = u64::from_le_bytes(p[..8].try_into().unwrap_or_default());
                let size = u64::from_le_bytes(p[8..].try_into().unwrap_or_default());
                self.take_spilled(id, size as usize).map(Taken::Spilled)
            }
            _ => Err(corrupt("unknown record kind")),
        };
        // The commit (even for a record we could not read: it must not block the queue).
        c.head
            .store(head + record_len(len as usize), Ordering::Release);
        let count = c.count.load(Ordering::Relaxed);
        c.count.store(count.saturating_sub(1), Ordering::Relaxed);
        if c.not_full.has_sleepers() {
            c.not_full.notify(u32::MAX);
        }
        // If we were woken for this item but more are here, pass the wake-up on.
        if c.head.load(Ordering::Relaxed) != c.tail.load(Ordering::Relaxed)
            && c.not_empty.has_sleepers()
        {
            c.not_empty.notify(1);
        }
        drop(held);
        taken
    }

    /// Closes the queue and drops everything in it (a shutdown `immediate`): the ring is
    /// emptied, spilled items' memory released, and a `JoinableQueue`'s count of unfinished
    /// items lowered by as many (its `join` returns once that reaches 0). How many were dropped.
    fn discard_all(&self) -> Result<u32> {
        let c = &*self.cell;
        let _held = Held::lock(self)?;
        c.closed.store(1, Ordering::Release);
        let dropped = c.count.load(Ordering::Relaxed);
        c.head
            .store(c.tail.load(Ordering::Relaxed), Ordering::Release);
        c.count.store(0, Ordering::Relaxed);
        // Spilled items' memory files wait in the spill socket: closed now, not with the queue.
        // (Closed, the queue takes no more: nothing new arrives there while the lock is held.)
        let mut idb = [0u8; 8];
        while let Ok(sys::Recv::Record(_, fds) | sys::Recv::Bad(_, fds)) =
            sys::recv_record(self.spill_rx.as_fd(), &mut idb, true)
        {
            crate::closer::close_later(fds);
        }
        let left = c.unfinished.load(Ordering::Relaxed);
        let now = left.saturating_sub(u64::from(dropped));
        c.unfinished.store(now, Ordering::Relaxed);
        if now == 0 && left > 0 {
            c.all_done.notify(u32::MAX);
        }
        c.not_empty.notify(u32::MAX);
        c.not_full.notify(u32::MAX);
        Ok(dropped)
    }

    /// Receives the memfd of spilled item `id` (under the mutex, so spills come in ring order).
    /// Records of lower ids are skipped: their producers died before committing them. A record
    /// of a higher id is left for its item: ours is gone, taken by a consumer that died before
    /// committing its `get`, and only this item is lost.
    fn take_spilled(&self, id: u64, size: usize) -> Result<Region> {
        let lost = || Error::Decode {
            expected: "a queued item",
            reason: "its memory was lost with a consumer that died taking it".into(),
        };
        let rx = self.spill_rx.as_fd();
        let mut idb = [0u8; 8];
        loop {
            match sys::peek_record(rx, &mut idb).map_err(|e| Error::io("recv", e))? {
                None => return Err(lost()),
                Some(8) if u64::from_le_bytes(idb) > id => return Err(lost()),
                Some(_) => {}
            }
            match sys::recv_record(rx, &mut idb, true).map_err(|e| Error::io("recv", e))? {
                sys::Recv::Record(8, mut fds)
                    if fds.len() == 1 && u64::from_le_bytes(idb) == id =>
                {
                    let fd = fds.pop().ok_or(Error::Disconnected)?;
                    return Region::open_sealed(
                        fd,
                        SPILL_SEALS,
                        Size::Exactly(size),
                        Access::ReadOnly,
                        "a queued item",
                    );
                }
                // Uncommitted (its producer died), or garbage: dropped.
                sys::Recv::Record(_, fds) | sys::Recv::Bad(_, fds) => {
                    crate::closer::close_later(fds)
                }
                sys::Recv::Eof | sys::Recv::WouldBlock => return Err(lost()),
            }
        }
    }
}

impl<T> Queue<T> {
    /// Options: `maxsize`, ring size.
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            maxsize: 0,
            capacity: DEFAULT_CAPACITY,
            _type: PhantomData,
        }
    }

    /// A queue with no limit on the number of items (but the ring's bytes).
    pub fn new() -> Result<Queue<T>> {
        Queue::builder().build()
    }

    /// A queue of at most `maxsize` items (Python's `Queue(maxsize)`; 0 means no limit).
    pub fn bounded(maxsize: u32) -> Result<Queue<T>> {
        Queue::builder().maxsize(maxsize).build()
    }

    /// The item limit, if any.
    pub fn maxsize(&self) -> Option<u32> {
        Some(self.inner.cell.maxsize.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// About how many items are in the queue (others change it at any moment).
    pub fn qsize(&self) -> usize {
        self.inner.cell.count.load(Ordering::Relaxed) as usize
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        let c = &*self.inner.cell;
        c.head.load(Ordering::Relaxed) == c.tail.load(Ordering::Relaxed)
    }

    /// Whether a bounded queue holds `maxsize` items now.
    pub fn is_full(&self) -> bool {
        self.maxsize().is_some_and(|m| self.qsize() >= m as usize)
    }

    /// Closes the queue for every process: puts fail with `Closed` from now on; gets drain
    /// what is left, then fail with `Closed`. Wakes everyone waiting.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Error, Queue};
    /// let q = Queue::new()?;
    /// q.put(1u8)?;
    /// q.close();
    /// assert!(matches!(q.put(2), Err(Error::Closed)));
    /// assert_eq!(q.get()?, 1);
    /// assert!(matches!(q.get(), Err(Error::Closed)));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn close(&self) {
        let c = &*self.inner.cell;
        c.closed.store(1, Ordering::Release);
        c.not_empty.notify(u32::MAX);
        c.not_full.notify(u32::MAX);
    }

    /// Shuts the queue down (Python 3.13's `shutdown(immediate)`). With `immediate` false it
    /// is [`close`](Queue::close): what is queued can still be taken. With `immediate` true
    /// everything queued is dropped too: waiting getters and putters fail at once with
    /// [`Error::Closed`], and a [`JoinableQueue`]'s `join` returns once the dropped items no
    /// longer count. How many items were dropped.
    ///
    /// ```
    /// # procactor::init();
    /// use procactor::{Error, Queue};
    /// let q = Queue::new()?;
    /// q.put(1u8)?;
    /// q.put(2)?;
    /// assert_eq!(q.shutdown(true)?, 2);
    /// assert!(matches!(q.get(), Err(Error::Closed)));
    /// assert!(matches!(q.put(3), Err(Error::Closed)));
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) -> Result<u32> {
        if !immediate {
            self.close();
            return Ok(0);
        }
        self.inner.discard_all()
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.inner.cell.closed.load(Ordering::Acquire) != 0
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts an item, waiting while the queue is full.
    pub fn put(&self, item: T) -> Result<()> {
        self.put_with(&item, Wait::Forever)
    }

    /// Puts an item, waiting at most `timeout` for room; the item comes back if it could not go
    /// ([`TrySendError::is_timeout`]).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), TrySendError<T>> {
        match self.put_with(&item, Wait::timeout(timeout)) {
            Ok(()) => Ok(()),
            Err(e) => Err(TrySendError::new(item, e)),
        }
    }

    /// Puts an item if there is room now; the item comes back if not ([`TrySendError::is_full`]:
    /// the error is [`Error::Full`]).
    pub fn try_put(&self, item: T) -> Result<(), TrySendError<T>> {
        match self.put_with(&item, Wait::No) {
            Ok(()) => Ok(()),
            Err(e) => Err(TrySendError::new(item, e)),
        }
    }

    /// Takes the oldest item, waiting for one. `Err(Closed)` once the queue is closed and empty.
    pub fn get(&self) -> Result<T> {
        self.get_with(Wait::Forever)
    }

    /// Takes the oldest item, waiting at most `timeout` (`Err(Timeout)` then).
    ///
    /// ```
    /// # procactor::init();
    /// use std::time::Duration;
    /// let q = procactor::Queue::<u32>::bounded(1)?;
    /// assert!(q.get_timeout(Duration::from_millis(10)).is_err());
    /// q.try_put(5)?;
    /// let full = q.try_put(6).unwrap_err();
    /// assert!(matches!(full.error(), procactor::Error::Full));
    /// assert_eq!(full.into_inner(), 6);
    /// assert_eq!(q.get_timeout(Duration::from_millis(10))?, 5);
    /// # Ok::<(), procactor::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Wait::timeout(timeout))
    }

    /// Takes the oldest item if there is one (`Err(Empty)` otherwise, as for every `try_`
    /// receive).
    pub fn try_get(&self) -> Result<T> {
        self.get_with(Wait::No)
    }

    fn put_with(&self, item: &T, wait: Wait) -> Result<()> {
        let mut buf = BUF.take();
        buf.clear();
        // Plain postcard: a procactor handle inside refuses to serialize here, since the ring
        // cannot carry its descriptor.
        let buf = postcard::to_extend(item, buf).map_err(|e| Error::Encode {
            type_name: std::any::type_name::<T>(),
            reason: format!(
                "{e} (procactor handles cannot go through a Queue: send them in a message or \
                 over a Pipe)"
            ),
        })?;
        let put = self.inner.put(&buf, wait);
        BUF.set(buf);
        put
    }

    fn get_with(&self, wait: Wait) -> Result<T> {
        match self.inner.get(wait)? {
            Taken::Inline(buf) => {
                let item = decode(&buf);
                BUF.set(buf);
                item
            }
            Taken::Spilled(region) => match region.frozen_bytes() {
                Some(bytes) => decode(bytes),
                None => Err(Error::Unsupported(
                    "a queued item not sealed against writes",
                )),
            },
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Decode {
        expected: std::any::type_name::<T>(),
        reason: e.to_string(),
    })
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let i = &*self.inner;
        (
            &i.cell,
            SendFd(i.spill_tx.as_fd()),
            SendFd(i.spill_rx.as_fd()),
        )
            .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (cell, Fd(spill_tx), Fd(spill_rx)) = <(Shared<QueueCell>, Fd, Fd)>::deserialize(d)?;
        if cell.type_tag.load(Ordering::Acquire) != wire::fingerprint::<T>() {
            return Err(crate::wire::refuse(format!(
                "a queue of another item type where a Queue<{}> was expected",
                std::any::type_name::<T>()
            )));
        }
        let capacity = cell.tail_len() as u64;
        if !capacity.is_power_of_two() {
            return Err(crate::wire::refuse(
                "a queue ring that is not a power of two",
            ));
        }
        Ok(Queue {
            inner: Arc::new(Inner {
                cell,
                capacity,
                spill_tx,
                spill_rx,
            }),
            _type: PhantomData,
        })
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.qsize())
            .field("maxsize", &self.maxsize())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A queue with the short interface of Python's `SimpleQueue`: `put`, `get`, `is_empty`,
/// `close` (no size limit).
///
/// ```
/// # procactor::init();
/// let q = procactor::queue::SimpleQueue::new()?;
/// q.put("hi".to_string())?;
/// assert_eq!(q.get()?, "hi");
/// assert!(q.is_empty());
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize, Debug)]
#[serde(transparent)]
#[serde(bound = "")]
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// A new empty queue.
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Puts an item (waits only if 1 MiB of items are waiting).
    pub fn put(&self, item: T) -> Result<()> {
        self.queue.put(item)
    }

    /// Takes the oldest item, waiting for one.
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// Whether it is empty now.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Closes it (see [`Queue::close`]).
    pub fn close(&self) {
        self.queue.close()
    }
}

/// A [`Queue`] that also counts unfinished tasks (Python's `JoinableQueue`): every `put` adds
/// one, every `task_done` removes one, and `join` waits until none is left. Every `Queue`
/// method is available through `Deref`.
///
/// ```
/// # procactor::init();
/// use procactor::{JoinableQueue, Process};
/// use std::time::Duration;
///
/// fn worker(q: JoinableQueue<u32>) {
///     while let Ok(_job) = q.get() {
///         q.task_done().unwrap();
///     }
/// }
///
/// let q = JoinableQueue::new()?;
/// let w = Process::new(worker, q.clone()).start()?;
/// for job in 0..10 {
///     q.put(job)?;
/// }
/// q.join_timeout(Duration::from_secs(30))?; // every job done
/// q.close();
/// w.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize, Debug)]
#[serde(transparent)]
#[serde(bound = "")]
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> JoinableQueue<T> {
    /// A new queue with no item limit.
    pub fn new() -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::new()?,
        })
    }

    /// A new queue of at most `maxsize` items.
    pub fn bounded(maxsize: u32) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::bounded(maxsize)?,
        })
    }

    /// Marks one item taken with `get` as processed. `Err(InvalidState)` if called more times
    /// than items were put.
    pub fn task_done(&self) -> Result<()> {
        let inner = &*self.queue.inner;
        let c = &*inner.cell;
        let _held = Held::lock(inner)?;
        let left = c.unfinished.load(Ordering::Relaxed);
        if left == 0 {
            return Err(Error::InvalidState(
                "task_done() called more times than there were items",
            ));
        }
        c.unfinished.store(left - 1, Ordering::Relaxed);
        if left == 1 {
            c.all_done.notify(u32::MAX);
        }
        Ok(())
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> u64 {
        self.queue.inner.cell.unfinished.load(Ordering::Relaxed)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_with(Wait::Forever)
    }

    /// As [`join`](JoinableQueue::join), for at most `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_with(Wait::timeout(timeout))
    }

    fn join_with(&self, wait: Wait) -> Result<()> {
        let inner = &*self.queue.inner;
        let held = Held::lock(inner)?;
        while inner.cell.unfinished.load(Ordering::Relaxed) > 0 {
            held.sleep(&inner.cell.all_done, wait)?;
        }
        Ok(())
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

#[cfg(test)]
mod tests {
    use std::panic::AssertUnwindSafe;

    use super::*;

    fn large_items(n: u8) -> Queue<Vec<u8>> {
        let q = Queue::<Vec<u8>>::builder()
            .capacity_bytes(4096)
            .build()
            .unwrap();
        for i in 0..n {
            q.put(vec![i; 5000]).unwrap();
        }
        q
    }

    #[test]
    fn a_consumer_that_died_holding_a_large_item_costs_that_item_only() {
        let q = large_items(3);
        let inner = &*q.inner;
        // What a consumer killed inside `get` leaves: the first item's memory taken from the
        // socket, its record not committed.
        {
            let _held = Held::lock(inner).unwrap();
            let mut id = [0u8; 8];
            match sys::recv_record(inner.spill_rx.as_fd(), &mut id, true).unwrap() {
                sys::Recv::Record(8, fds) => assert_eq!(fds.len(), 1),
                _ => panic!("no spilled item"),
            }
        }
        assert!(matches!(q.try_get(), Err(Error::Decode { .. })));
        assert_eq!(q.try_get().unwrap(), vec![1; 5000]);
        assert_eq!(q.try_get().unwrap(), vec![2; 5000]);
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    }

    thread_local! {
        /// Where a test wants this thread to "die" (panic, which releases the queue's mutex
        /// with the state as it is at that point).
        static DIE_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    pub(super) fn die_here(point: &'static str) {
        if DIE_AT.get() == Some(point) {
            DIE_AT.set(None);
            panic!("died {point}");
        }
    }

    #[test]
    fn a_producer_that_died_inside_a_large_put_leaves_nothing_behind() {
        let q = large_items(1);
        // Killed right after sending a large item's memory, before committing its record.
        DIE_AT.set(Some("after the spill send"));
        let put = std::panic::catch_unwind(AssertUnwindSafe(|| q.put(vec![9; 5000])));
        assert!(put.is_err() && DIE_AT.get().is_none(), "did not die there");
        // The next large item is itself, not the dead producer's.
        q.put(vec![1; 5000]).unwrap();
        assert_eq!(q.try_get().unwrap(), vec![0; 5000]);
        assert_eq!(q.try_get().unwrap(), vec![1; 5000]);
        assert!(matches!(q.try_get(), Err(Error::Empty)));
    }

    #[test]
    fn spilled_items_are_sealed_and_an_unsealed_one_is_refused_not_mapped() {
        let q = Queue::<Vec<u8>>::builder()
            .capacity_bytes(4096)
            .build()
            .unwrap();
        let inner = &*q.inner;
        // What a producer sends: nobody can resize it or change its bytes.
        let (fd, len) = inner.spill(&[9; 5000]).unwrap();
        assert!(sys::seals(fd.as_fd()).unwrap().contains(SPILL_SEALS));
        assert_eq!(rustix::fs::ftruncate(&fd, 0), Err(rustix::io::Errno::PERM));
        assert_eq!(
            rustix::io::pwrite(&fd, &[1], 0),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(len, 5000);

        // What a rogue producer could send instead: a memfd it can still shrink.
        let rogue = sys::memfd("rogue").unwrap();
        let item = postcard::to_stdvec(&vec![9u8; 5000]).unwrap();
        sys::write_file(rogue.as_fd(), &item).unwrap();
        {
            let _held = Held::lock(inner).unwrap();
            let id = inner.cell.next_spill.load(Ordering::Relaxed);
            let sent = sys::try_send_record(
                inner.spill_tx.as_fd(),
                &[IoSlice::new(&id.to_le_bytes())],
                Some(rogue.as_fd()),
            )
            .unwrap();
            assert!(sent);
            inner.cell.next_spill.store(id + 1, Ordering::Relaxed);
            let mut record = [0u8; 16];
            record[..8].copy_from_slice(&id.to_le_bytes());
            record[8..].copy_from_slice(&(item.len() as u64).to_le_bytes());
            inner.commit(KIND_SPILL, &record);
        }
        match q.try_get() {
            Err(Error::Decode { reason, .. }) => {
                assert!(reason.contains("not sealed"), "{reason}")
            }
            other => panic!("a rogue memfd was not refused: {other:?}"),
        }
        // The queue goes on: a real large item, then a small one.
        q.put(vec![3; 5000]).unwrap();
        q.put(vec![4]).unwrap();
        assert_eq!(q.try_get().unwrap(), vec![3; 5000]);
        assert_eq!(q.try_get().unwrap(), vec![4]);
    }
}
