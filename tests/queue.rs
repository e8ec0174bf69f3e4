//! Queues between real processes: FIFO per producer, nothing lost or duplicated, bounded and
//! closed queues, large items, and producers and consumers killed with SIGKILL.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{reaped, BOUND};
use procactor::{queue::SimpleQueue, Error, Event, JoinableQueue, Lock, Process, Queue};

procactor::test_support!();

fn produce((q, id, n): (Queue<(u32, u32)>, u32, u32)) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

fn consume((q, n): (Queue<(u32, u32)>, usize)) -> Vec<(u32, u32)> {
    (0..n).map(|_| q.get_timeout(BOUND).unwrap()).collect()
}

/// Every item of every producer exactly once, and each consumer saw each producer's items in
/// the order they were put.
fn check(got: &[Vec<(u32, u32)>], producers: u32, per: u32) {
    let mut seen: HashMap<u32, Vec<u32>> = HashMap::new();
    for consumer in got {
        let mut last: HashMap<u32, u32> = HashMap::new();
        for &(p, i) in consumer {
            if let Some(&prev) = last.get(&p) {
                assert!(i > prev, "producer {p}: {i} after {prev}");
            }
            last.insert(p, i);
            seen.entry(p).or_default().push(i);
        }
    }
    for p in 0..producers {
        let mut items = seen.remove(&p).unwrap_or_default();
        items.sort();
        assert_eq!(items, (0..per).collect::<Vec<_>>(), "producer {p}");
    }
}

#[test]
fn one_producer_one_consumer_in_order() {
    let q = Queue::new().unwrap();
    let p = reaped(
        Process::new(produce, (q.clone(), 0, 20_000))
            .start()
            .unwrap(),
    );
    let c = reaped(Process::new(consume, (q.clone(), 20_000)).start().unwrap());
    let got = c.join_timeout(BOUND).unwrap();
    p.join_timeout(BOUND).unwrap();
    assert!(got.windows(2).all(|w| w[0].1 + 1 == w[1].1));
    check(&[got], 1, 20_000);
    assert!(q.is_empty());
    assert_eq!(q.qsize(), 0);
}

#[test]
fn four_producers_four_consumers_lose_and_duplicate_nothing() {
    let q = Queue::bounded(64).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|id| {
            reaped(
                Process::new(produce, (q.clone(), id, 5_000))
                    .start()
                    .unwrap(),
            )
        })
        .collect();
    let cs: Vec<_> = (0..4)
        .map(|_| reaped(Process::new(consume, (q.clone(), 5_000)).start().unwrap()))
        .collect();
    let got: Vec<_> = cs.iter().map(|c| c.join_timeout(BOUND).unwrap()).collect();
    for p in &ps {
        p.join_timeout(BOUND).unwrap();
    }
    check(&got, 4, 5_000);
}

#[test]
fn bounded_queue_blocks_and_every_timeout_is_honoured() {
    let q = Queue::<u32>::bounded(2).unwrap();
    let asked = Duration::from_millis(100);
    let t = Instant::now();
    assert!(matches!(q.get_timeout(asked), Err(Error::Timeout(_))));
    let took = t.elapsed();
    assert!(
        took >= asked && took < asked + Duration::from_secs(5),
        "{took:?}"
    );
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    q.put(1).unwrap();
    q.try_put(2).unwrap();
    assert!(q.is_full());
    let full = q.try_put(3).unwrap_err();
    assert!(full.is_full() && matches!(full.error(), Error::Full));
    assert_eq!(full.into_inner(), 3, "the item comes back");
    let t = Instant::now();
    let late = q.put_timeout(3, asked).unwrap_err();
    assert!(late.is_timeout() && matches!(late.error(), Error::Timeout(_)));
    let took = t.elapsed();
    assert!(
        took >= asked && took < asked + Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(q.get().unwrap(), 1);
    q.put_timeout(3, BOUND).unwrap();
    assert_eq!((q.get().unwrap(), q.get().unwrap()), (2, 3));
}

fn put_then_close((q, n): (Queue<u32>, u32)) {
    for i in 0..n {
        q.put(i).unwrap();
    }
    q.close();
}

#[test]
fn close_fails_puts_and_lets_consumers_drain() {
    let q = Queue::<u32>::new().unwrap();
    let p = reaped(
        Process::new(put_then_close, (q.clone(), 100))
            .start()
            .unwrap(),
    );
    p.join_timeout(BOUND).unwrap();
    assert!(q.is_closed());
    assert!(matches!(q.put(1), Err(Error::Closed)));
    let drained: Vec<u32> = std::iter::from_fn(|| q.get_timeout(BOUND).ok()).collect();
    assert_eq!(drained, (0..100).collect::<Vec<_>>());
    assert!(matches!(q.get_timeout(BOUND), Err(Error::Closed)));

    // A close wakes a consumer blocked in get.
    let q = Queue::<u32>::new().unwrap();
    let waiter = {
        let q = q.clone();
        std::thread::spawn(move || q.get_timeout(BOUND))
    };
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    q.close();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    assert!(t.elapsed() < Duration::from_secs(5));
}

fn put_large((q, n, size): (Queue<Vec<u8>>, u32, usize)) {
    for i in 0..n {
        q.put(vec![i as u8; size]).unwrap();
    }
}

#[test]
fn items_larger_than_the_ring_travel_whole() {
    let q = Queue::<Vec<u8>>::builder()
        .capacity_bytes(64 * 1024)
        .build()
        .unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| {
            reaped(
                Process::new(put_large, (q.clone(), 20, 1 << 20))
                    .start()
                    .unwrap(),
            )
        })
        .collect();
    let mut per_value = HashMap::new();
    for _ in 0..40 {
        let item = q.get_timeout(BOUND).unwrap();
        assert_eq!(item.len(), 1 << 20);
        assert!(item.iter().all(|&b| b == item[0]));
        *per_value.entry(item[0]).or_insert(0) += 1;
    }
    for p in &ps {
        p.join_timeout(BOUND).unwrap();
    }
    assert!(per_value.values().all(|&n| n == 2), "{per_value:?}");
}

/// An item whose content can be checked: `seq` repeated over `len` bytes.
fn item(seq: u64, len: usize) -> (u64, Vec<u8>) {
    (
        seq,
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect(),
    )
}

fn put_forever(q: Queue<(u64, Vec<u8>)>) {
    for seq in 0.. {
        // Mostly small items, some large enough to go beside the ring.
        let len = if seq % 7 == 0 {
            40_000
        } else {
            100 + (seq as usize % 900)
        };
        q.put(item(seq, len)).unwrap();
    }
}

#[test]
fn producers_killed_mid_put_never_deliver_half_an_item() {
    let q = Queue::<(u64, Vec<u8>)>::builder()
        .capacity_bytes(128 * 1024)
        .build()
        .unwrap();
    for round in 0..6u64 {
        let p = reaped(Process::new(put_forever, q.clone()).start().unwrap());
        // Let it fill the queue and block, or be caught in the middle of a put.
        let mut next = 0;
        for _ in 0..(round * 37 % 200) {
            let (seq, bytes) = q.get_timeout(BOUND).unwrap();
            assert_eq!((seq, &bytes), (next, &item(seq, bytes.len()).1));
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(round * 3));
        p.kill().unwrap();
        let _ = p.join_timeout(BOUND);
        // Whatever it committed is there, whole, in order, once.
        while let Ok((seq, bytes)) = q.try_get() {
            assert_eq!(seq, next, "round {round}");
            assert_eq!(
                bytes,
                item(seq, bytes.len()).1,
                "round {round}: torn item {seq}"
            );
            next += 1;
        }
        // And the queue still works.
        q.put_timeout(item(0, 10), BOUND).unwrap();
        assert_eq!(q.get_timeout(BOUND).unwrap(), item(0, 10));
    }
}

fn get_one((q, started): (Queue<u32>, Event)) -> u32 {
    started.set();
    q.get().unwrap()
}

#[test]
fn consumer_killed_while_blocked_in_get_leaves_the_queue_usable() {
    let q = Queue::<u32>::new().unwrap();
    let started = Event::new().unwrap();
    let victim = reaped(
        Process::new(get_one, (q.clone(), started.clone()))
            .start()
            .unwrap(),
    );
    started.wait_timeout(BOUND).unwrap();
    std::thread::sleep(Duration::from_millis(50)); // asleep in get by now
    victim.kill().unwrap();
    let _ = victim.join_timeout(BOUND);
    let started = Event::new().unwrap();
    let other = reaped(
        Process::new(get_one, (q.clone(), started.clone()))
            .start()
            .unwrap(),
    );
    started.wait_timeout(BOUND).unwrap();
    q.put(42).unwrap();
    assert_eq!(other.join_timeout(BOUND).unwrap(), 42);
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), 7);
}

fn worker(q: JoinableQueue<u32>) {
    while let Ok(_job) = q.get() {
        std::thread::sleep(Duration::from_millis(1));
        q.task_done().unwrap();
    }
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    let q = JoinableQueue::<u32>::new().unwrap();
    let asked = Duration::from_millis(100);
    q.join_timeout(asked).unwrap(); // nothing put: returns at once
    let ws: Vec<_> = (0..2)
        .map(|_| reaped(Process::new(worker, q.clone()).start().unwrap()))
        .collect();
    for job in 0..50 {
        q.put(job).unwrap();
    }
    q.join_timeout(BOUND).unwrap();
    assert_eq!(q.unfinished(), 0);
    assert!(matches!(q.task_done(), Err(Error::InvalidState(_))));
    q.close();
    for w in &ws {
        w.join_timeout(BOUND).unwrap();
    }
    // A task never marked done: join times out, honouring the timeout.
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put(1).unwrap();
    let _ = q.get().unwrap();
    let t = Instant::now();
    assert!(matches!(q.join_timeout(asked), Err(Error::Timeout(_))));
    assert!(t.elapsed() >= asked);
}

#[test]
fn simple_queue_and_bad_items() {
    let q = SimpleQueue::new().unwrap();
    q.put("one".to_string()).unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), "one");
    assert!(q.is_empty());
    // Handles cannot go through shared memory: a clear error, not a broken queue.
    let locks = Queue::<Lock>::new().unwrap();
    assert!(matches!(
        locks.put(Lock::new().unwrap()),
        Err(Error::Encode { .. })
    ));
    assert!(locks.is_empty());
}

/// The descriptor of this process's only mapping of a queue, found as a stranger would.
fn queue_memory() -> std::fs::File {
    let fd = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("procactor-queue"))
        })
        .expect("the queue's memfd");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fd.path())
        .unwrap()
}

/// Runs in a child of its own, so that the one queue in its descriptor table is this one (the
/// other tests' queues live in the test process).
fn scribble_over_a_queue(_: ()) {
    use std::os::unix::fs::FileExt;
    let q = Queue::<u64>::new().unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    let mem = queue_memory();
    // Find the first record (length 1, kind 1: the item 0) and overwrite it and all after it.
    let len = mem.metadata().unwrap().len();
    let mut bytes = vec![0; len as usize];
    mem.read_exact_at(&mut bytes, 0).unwrap();
    let first = (64..bytes.len() - 8)
        .step_by(8)
        .find(|&i| bytes[i..i + 8] == [1, 0, 0, 0, 1, 0, 0, 0])
        .expect("the first record") as u64;
    mem.write_all_at(&vec![0xff; (len - first) as usize], first)
        .unwrap();
    // The queue says the memory is garbage, drops what it held, and goes on working.
    let err = q.get_timeout(BOUND).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(
        matches!(q.try_get(), Err(Error::Empty)),
        "garbage was not dropped"
    );
    q.put(9).unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), 9);
}

#[test]
fn garbage_written_into_the_ring_is_an_error_not_a_hang() {
    let p = reaped(Process::new(scribble_over_a_queue, ()).start().unwrap());
    p.join_timeout(BOUND).unwrap();
}

/// Blocks in `get` (on an empty queue) or `put` (on a full one); says how it ended, and when.
fn blocked((q, getting): (Queue<Vec<u8>>, bool)) -> (bool, u128) {
    let t = std::time::Instant::now();
    let closed = if getting {
        matches!(q.get(), Err(Error::Closed))
    } else {
        matches!(q.put(vec![1; 10]), Err(Error::Closed))
    };
    (closed, t.elapsed().as_millis())
}

#[test]
fn an_immediate_shutdown_drops_what_is_queued_and_fails_blocked_getters_and_putters() {
    // A getter blocked on an empty queue.
    let q = Queue::<Vec<u8>>::new().unwrap();
    let g = reaped(Process::new(blocked, (q.clone(), true)).start().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(q.shutdown(true).unwrap(), 0);
    let (closed, _) = g.join_timeout(BOUND).unwrap();
    assert!(closed);
    // A putter blocked on a full queue, whose items (small and spilled) are dropped.
    let q = Queue::<Vec<u8>>::bounded(2).unwrap();
    q.put(vec![0; 8]).unwrap();
    q.put(vec![0; 4 << 20]).unwrap();
    let p = reaped(Process::new(blocked, (q.clone(), false)).start().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(q.shutdown(true).unwrap(), 2);
    let (closed, _) = p.join_timeout(BOUND).unwrap();
    assert!(closed);
    assert_eq!(q.qsize(), 0);
    assert!(matches!(q.get(), Err(Error::Closed)));
    // A gentle shutdown is close(): what is queued can still be taken.
    let q = Queue::<u8>::new().unwrap();
    q.put(7).unwrap();
    assert_eq!(q.shutdown(false).unwrap(), 0);
    assert_eq!(q.get().unwrap(), 7);
    assert!(matches!(q.get(), Err(Error::Closed)));
}

#[test]
fn an_immediate_shutdown_releases_a_joinable_queues_join() {
    let q = JoinableQueue::<u32>::new().unwrap();
    for i in 0..5 {
        q.put(i).unwrap();
    }
    // Two taken and done; three still queued.
    for _ in 0..2 {
        q.get().unwrap();
        q.task_done().unwrap();
    }
    let joiner = {
        let q = q.clone();
        std::thread::spawn(move || q.join_timeout(BOUND))
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(q.shutdown(true).unwrap(), 3);
    joiner.join().unwrap().unwrap();
    assert_eq!(q.unfinished(), 0);
}
