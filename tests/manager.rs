//! The manager in real processes: shared lists, dicts, values and namespaces seen by children,
//! atomic updates under contention, nested proxies, hosted actors, reference counting across
//! processes (dropped and killed holders, receivers killed before using what they received,
//! bytes destroyed before they were decoded), a killed manager, and requests it cannot use.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use common::{bounded, eventually, reaped, BOUND};
use procactor::{
    manager::DictProxy, manager::HostedProxy, manager::ListProxy, manager::Namespace,
    manager::SetProxy, manager::ValueProxy, Connection, Error, Event, ExitReason, Manager, Pipe,
    Pool, Process, Queue,
};
use serde::{Deserialize, Serialize};

procactor::test_support!();

#[test]
fn list_dict_value_and_namespace_operations() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list_from(vec![3, 1, 2]).unwrap();
        l.append(4).unwrap();
        l.extend([5, 6]).unwrap();
        l.insert(0, 0).unwrap();
        assert_eq!(l.snapshot().unwrap(), [0, 3, 1, 2, 4, 5, 6]);
        assert_eq!(l.pop().unwrap(), 6);
        assert_eq!(l.pop_at(1).unwrap(), 3);
        l.remove(&1).unwrap();
        assert!(matches!(l.remove(&1), Err(Error::NotFound(_))));
        assert_eq!(l.get(1).unwrap(), 2);
        assert!(matches!(
            l.get(10),
            Err(Error::IndexOutOfRange { index: 10, len: 4 })
        ));
        l.set(0, 10).unwrap();
        assert_eq!(l.modify(0, |x| *x *= 3).unwrap(), 30);
        assert!(l.contains(&4).unwrap() && !l.contains(&99).unwrap());
        assert_eq!(l.index(&5).unwrap(), 3);
        assert_eq!(l.len().unwrap(), 4);
        l.clear().unwrap();
        assert!(l.is_empty().unwrap());
        assert!(matches!(l.pop(), Err(Error::NotFound(_))));

        let big = m.list_from((0..1000u32).collect()).unwrap();
        let seen: Vec<u32> = big.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());

        let d = m.dict::<String, u32>().unwrap();
        d.insert("a".into(), 1).unwrap();
        d.extend([("b".to_string(), 2), ("c".to_string(), 3)])
            .unwrap();
        assert_eq!(d.len().unwrap(), 3);
        assert_eq!(d.get(&"b".into()).unwrap(), Some(2));
        assert_eq!(d.remove(&"b".into()).unwrap(), Some(2));
        assert_eq!(d.pop(&"c".into()).unwrap(), 3);
        match d.pop(&"zz".into()) {
            Err(Error::NotFound(what)) => assert!(what.contains("\"zz\""), "{what}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d.update(&"zz".into(), |n| *n += 1),
            Err(Error::NotFound(_))
        ));
        assert_eq!(d.get_or_insert("x".into(), 7).unwrap(), 7);
        assert_eq!(d.upsert(&"x".into(), 0, |n| *n += 1).unwrap(), 8);
        assert_eq!(d.update(&"a".into(), |n| *n += 10).unwrap(), 11);
        let mut keys = d.keys().unwrap();
        keys.sort();
        assert_eq!(keys, ["a", "x"]);
        let mut values = d.values().unwrap();
        values.sort();
        assert_eq!(values, [8, 11]);
        assert_eq!(d.items().unwrap().len(), 2);
        assert!(d.contains_key(&"a".into()).unwrap());
        let snap: HashMap<String, u32> = d.snapshot().unwrap();
        assert_eq!(snap["x"], 8);
        d.clear().unwrap();
        assert!(d.is_empty().unwrap());

        let v = m.value((1u8, "one".to_string())).unwrap();
        v.set((2, "two".into())).unwrap();
        assert_eq!(v.swap((3, "three".into())).unwrap().1, "two");
        assert_eq!(v.update(|p| p.0 += 1).unwrap().0, 4);

        let ns = m.namespace().unwrap();
        ns.set("x", &1.5f64).unwrap();
        ns.set("name", "model").unwrap();
        assert_eq!(ns.get::<f64>("x").unwrap(), 1.5);
        assert_eq!(ns.get::<String>("name").unwrap(), "model");
        assert!(matches!(ns.get::<u8>("missing"), Err(Error::NotFound(_))));
        assert!(matches!(ns.get::<u64>("name"), Err(Error::Decode { .. })));
        assert_eq!(ns.names().unwrap(), ["name", "x"]);
        assert!(ns.remove("x").unwrap());
    });
}

fn append_pids(l: ListProxy<u32>) {
    for _ in 0..10 {
        l.append(std::process::id()).unwrap();
    }
}

#[test]
fn children_see_one_list() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list::<u32>().unwrap();
        let ps: Vec<_> = (0..10)
            .map(|_| reaped(Process::new(append_pids, l.clone()).start().unwrap()))
            .collect();
        let mut pids = Vec::new();
        for p in &ps {
            pids.push(p.pid());
            p.join_timeout(BOUND).unwrap();
        }
        let got = l.snapshot().unwrap();
        assert_eq!(got.len(), 100);
        // Every child's ten appends, whatever the interleaving.
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for pid in got {
            *counts.entry(pid).or_default() += 1;
        }
        pids.sort();
        let mut seen: Vec<u32> = counts.keys().copied().collect();
        seen.sort();
        assert_eq!(seen, pids);
        assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    });
}

fn thousand_increments(d: DictProxy<String, u64>) {
    let k = "hits".to_string();
    for _ in 0..1000 {
        d.update(&k, |n| *n += 1).unwrap();
    }
}

#[test]
fn thirty_two_processes_update_one_key_and_lose_nothing() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, u64>().unwrap();
        d.insert("hits".into(), 0).unwrap();
        let ps: Vec<_> = (0..32)
            .map(|_| {
                reaped(
                    Process::new(thousand_increments, d.clone())
                        .start()
                        .unwrap(),
                )
            })
            .collect();
        for p in &ps {
            p.join_timeout(BOUND).unwrap();
        }
        assert_eq!(d.get(&"hits".into()).unwrap(), Some(32_000));
    });
}

fn write_through_inner(d: DictProxy<String, ListProxy<String>>) {
    let inner = d.get(&"fruits".into()).unwrap().expect("inner list");
    inner.append("pear".into()).unwrap();
    inner.len().unwrap();
}

#[test]
fn nested_proxies_are_one_object_through_every_path() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let d = m.dict::<String, ListProxy<String>>().unwrap();
        let fruits = m.list_from(vec!["apple".to_string()]).unwrap();
        d.insert("fruits".into(), fruits.clone()).unwrap();
        // Only the dict holds it now: the object must stay.
        drop(fruits);
        let p = reaped(
            Process::new(write_through_inner, d.clone())
                .start()
                .unwrap(),
        );
        p.join_timeout(BOUND).unwrap();
        let again = d.get(&"fruits".into()).unwrap().unwrap();
        assert_eq!(again.snapshot().unwrap(), ["apple", "pear"]);
        assert_eq!(m.object_count().unwrap(), 2);
        // Removing it from the dict and dropping the last proxy frees it.
        d.remove(&"fruits".into()).unwrap();
        assert_eq!(m.object_count().unwrap(), 2, "`again` still holds it");
        drop(again);
        assert!(eventually(BOUND, || m.object_count().unwrap() == 1));

        // A list of queues: the queue handle travels through the manager.
        let queues = m.list::<Queue<u32>>().unwrap();
        queues.append(m.queue().unwrap()).unwrap();
        queues.get(0).unwrap().put(5).unwrap();
        assert_eq!(queues.get(0).unwrap().get_timeout(BOUND).unwrap(), 5);

        // A value holding a dict proxy.
        let inner = m.dict::<u8, u8>().unwrap();
        let v = m.value(inner.clone()).unwrap();
        v.get().unwrap().insert(1, 2).unwrap();
        assert_eq!(inner.get(&1).unwrap(), Some(2));
    });
}

struct Tally {
    total: u64,
}

#[procactor::actor]
impl Tally {
    fn init(start: u64) -> Self {
        Tally { total: start }
    }
    pub fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }
    pub fn explode(&mut self) -> u64 {
        panic!("hosted object panicked on purpose")
    }
}

fn add_ones(t: HostedProxy<Tally>) {
    for _ in 0..100 {
        t.cast().add(1).unwrap();
    }
    t.add(0).unwrap();
}

#[test]
fn hosted_actor_objects_share_the_manager_process() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let a = m.host::<Tally>(1000).unwrap();
        let b = m.host::<Tally>(0).unwrap();
        let ps: Vec<_> = (0..4)
            .map(|_| reaped(Process::new(add_ones, a.clone()).start().unwrap()))
            .collect();
        for p in &ps {
            p.join_timeout(BOUND).unwrap();
        }
        assert_eq!(a.add(0).unwrap(), 1400);
        assert_eq!(b.add(1).unwrap(), 1);
        match a.explode() {
            Err(Error::Rejected { reason, pid, .. }) => {
                assert!(reason.contains("on purpose"), "{reason}");
                assert_eq!(pid, m.pid());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(a.add(1).unwrap(), 1401, "the manager goes on after a panic");
        assert_eq!(m.object_count().unwrap(), 2);
    });
}

fn hold_then_wait(l: ListProxy<u8>) {
    l.append(1).unwrap();
    loop {
        l.append(2).unwrap();
        let _ = l.len();
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn hold_briefly(l: ListProxy<u8>) {
    l.append(1).unwrap();
}

#[test]
fn objects_are_freed_when_the_last_holder_drops_or_dies() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list::<u8>().unwrap();
        let c = l.clone();
        drop(l);
        assert_eq!(m.object_count().unwrap(), 1, "a clone still holds it");
        drop(c);
        assert!(eventually(BOUND, || m.object_count().unwrap() == 0));

        // Sent to a child, then dropped here at once: the lent reference keeps it.
        let l = m.list::<u8>().unwrap();
        let p = reaped(Process::new(hold_briefly, l.clone()).start().unwrap());
        drop(l);
        p.join_timeout(BOUND).unwrap();
        assert!(eventually(BOUND, || m.object_count().unwrap() == 0));

        // Held only by a child that is killed mid-operation.
        let l = m.list::<u8>().unwrap();
        let p = reaped(Process::new(hold_then_wait, l.clone()).start().unwrap());
        assert!(eventually(BOUND, || l.len().unwrap() > 10));
        drop(l);
        assert_eq!(m.object_count().unwrap(), 1, "the child holds it");
        p.kill().unwrap();
        assert!(
            eventually(BOUND, || m.object_count().unwrap() == 0),
            "the killed child's reference was released"
        );
    });
}

fn call_until_error(l: ListProxy<u8>) -> String {
    let started = std::time::Instant::now();
    loop {
        match l.len() {
            Ok(_) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return format!("{e:?} after {:?}", started.elapsed()),
        }
    }
}

#[test]
fn a_killed_manager_gives_disconnected_everywhere() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list::<u8>().unwrap();
        let d = m.dict::<u8, u8>().unwrap();
        let child = reaped(Process::new(call_until_error, l.clone()).start().unwrap());
        assert!(eventually(BOUND, || l.len().is_ok()));
        std::thread::sleep(Duration::from_millis(50));
        let rc = unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let said = child.join_timeout(BOUND).unwrap();
        assert!(said.starts_with("Disconnected"), "{said}");
        assert!(matches!(l.len(), Err(Error::Disconnected)));
        assert!(matches!(d.get(&1), Err(Error::Disconnected)));
        // Pipelined calls fail by the next one at the latest.
        let _ = d.insert(1, 1);
        assert!(matches!(
            d.insert(1, 1).and_then(|_| d.len()),
            Err(Error::Disconnected)
        ));
        assert!(matches!(m.list::<u8>(), Err(Error::Disconnected)));
        drop(m); // reaps the dead manager
    });
}

/// Serializes as something its own `Deserialize` refuses: what garbage from a buggy or
/// asymmetric serde impl looks like to the manager.
#[derive(Debug, PartialEq)]
struct Lopsided;

impl Serialize for Lopsided {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("not what the other side expects")
    }
}

impl<'de> Deserialize<'de> for Lopsided {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let x = u64::deserialize(d)?;
        Err(serde::de::Error::custom(format!("refused {x}")))
    }
}

#[test]
fn requests_that_do_not_decode_or_name_a_gone_object_get_errors() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list::<Lopsided>().unwrap();
        // A waiting call: the error at once.
        assert!(matches!(l.set(0, Lopsided), Err(Error::Rejected { .. })));
        // A pipelined call: the error on the next call that waits, and that call is not applied.
        l.append(Lopsided).unwrap();
        match l.len() {
            Err(Error::Rejected { reason, .. }) => assert!(reason.contains("earlier"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(l.len().unwrap(), 0, "the manager goes on serving");

        // A proxy to an object that is gone: serialized (outside procactor, so only the bytes
        // remain), adopted once and dropped with the original.
        let gone = m.list::<u8>().unwrap();
        let bytes = postcard::to_allocvec(&gone).unwrap();
        let first: ListProxy<u8> = postcard::from_bytes(&bytes).unwrap();
        drop(first);
        drop(gone);
        assert!(eventually(BOUND, || m.object_count().unwrap() == 1));
        let stale: ListProxy<u8> = postcard::from_bytes(&bytes).unwrap();
        assert!(matches!(stale.len(), Err(Error::ObjectGone { .. })));
        stale.append(1).unwrap();
        assert!(matches!(stale.len(), Err(Error::ObjectGone { .. })));

        // A proxy decoded as another type is refused before any call.
        let l2 = m.list::<u8>().unwrap();
        let bytes = postcard::to_allocvec(&l2).unwrap();
        assert!(postcard::from_bytes::<ListProxy<String>>(&bytes).is_err());
        let _: ListProxy<u8> = postcard::from_bytes(&bytes).unwrap(); // adopt the lend

        // A panicking update: an error for that call; the manager goes on.
        let v = m.value(0u32).unwrap();
        match v.update(|_| panic!("update panicked on purpose")) {
            Err(Error::Rejected { reason, .. }) => assert!(reason.contains("on purpose")),
            other => panic!("{other:?}"),
        }
        assert_eq!(v.update(|x| *x += 1).unwrap(), 1);
    });
}

fn namespace_child(ns: Namespace) -> u64 {
    let q: ValueProxy<u64> = ns.get("counter").unwrap();
    q.update(|n| *n += 5).unwrap()
}

#[test]
fn namespaces_carry_proxies_and_handles() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let ns = m.namespace().unwrap();
        ns.set("counter", &m.value(1u64).unwrap()).unwrap();
        let p = reaped(Process::new(namespace_child, ns.clone()).start().unwrap());
        assert_eq!(p.join_timeout(BOUND).unwrap(), 6);
        assert_eq!(
            ns.get::<ValueProxy<u64>>("counter").unwrap().get().unwrap(),
            6
        );
        // Every proxy to the value is gone; the field pins it (unguarded on purpose: the
        // manager cannot count what is stored encoded).
        assert_eq!(m.object_count().unwrap(), 2);
    });
}

#[test]
fn dropping_the_manager_stops_its_process() {
    bounded(|| {
        let m = Manager::start().unwrap();
        let pid = m.pid();
        let l = m.list::<u8>().unwrap();
        drop(m);
        assert!(!common::pid_alive(pid));
        assert!(matches!(l.len(), Err(Error::Disconnected)));
    });
}

/// The manager's socket address, read out of a proxy's encoding (its manager's ref comes first:
/// id, name, pid, address).
fn manager_address<T: Serialize>(proxy: &T) -> String {
    #[derive(Deserialize)]
    struct RefPrefix {
        _id: u64,
        _name: String,
        _pid: u32,
        addr: String,
    }
    let bytes = postcard::to_allocvec(proxy).unwrap();
    let (r, _) = postcard::take_from_bytes::<RefPrefix>(&bytes).unwrap();
    r.addr
}

#[test]
fn garbage_on_a_raw_connection_does_not_disturb_the_manager() {
    use rustix::net::{
        connect, sendmsg, socket, AddressFamily, SendAncillaryBuffer, SendFlags, SocketAddrUnix,
        SocketType,
    };
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list_from(vec![1u8, 2, 3]).unwrap();
        let addr = manager_address(&l);
        let _adopt: ListProxy<u8> =
            postcard::from_bytes(&postcard::to_allocvec(&l).unwrap()).unwrap();
        for garbage in [
            &b"\x00"[..],
            &b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
            // A hello frame (kind 20) whose payload is not a hello.
            &b"\x14\x00\x00\x00\x00\x00\x00\x00\x00\xde\xad\xbe\xef"[..],
            // A batch frame (kind 23) before any hello.
            &b"\x17\x00\x00\x00\x00\x00\x00\x00\x00\x02\x01\x00\x00\x00\x00\x00"[..],
        ] {
            let fd = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
            connect(&fd, &SocketAddrUnix::new(addr.as_str()).unwrap()).unwrap();
            let _ = sendmsg(
                &fd,
                &[std::io::IoSlice::new(garbage)],
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            );
            assert_eq!(l.len().unwrap(), 3, "the manager serves after {garbage:?}");
        }
        assert_eq!(l.snapshot().unwrap(), [1, 2, 3]);
    });
}

fn put_and_end((d, ns, i): (DictProxy<u32, u32>, Namespace, u32)) {
    // Both writes are pipelined: they return before the manager applied them.
    d.insert(i, i * 10).unwrap();
    ns.set("last", &i).unwrap();
}

fn keep_manager_busy(l: ListProxy<u32>) {
    loop {
        if l.len().is_err() {
            return;
        }
    }
}

#[test]
fn what_a_child_wrote_is_there_once_it_ended() {
    // A child's pipelined writes are handled before its parent learns that it ended, even with
    // another process keeping the manager busy: the parent may read them at once.
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    let ns = m.namespace().unwrap();
    let busy = reaped(
        Process::new(keep_manager_busy, m.list::<u32>().unwrap())
            .start()
            .unwrap(),
    );
    let busy_pid = busy.pid();
    bounded(move || {
        for i in 0..100 {
            Process::new(put_and_end, (d.clone(), ns.clone(), i))
                .start()
                .unwrap()
                .join()
                .unwrap();
            assert_eq!(d.get(&i).unwrap(), Some(i * 10), "round {i}");
            assert_eq!(ns.get::<u32>("last").unwrap(), i, "round {i}");
        }
    });
    drop(busy);
    assert!(!common::pid_alive(busy_pid));
}

type Lists = Vec<ListProxy<u8>>;

/// How long a count may take to settle after a change (well inside `BOUND`, so a count that
/// never settles fails with its own message).
const SETTLE: Duration = Duration::from_secs(10);

/// Proxies lent per test of received-then-killed holders (thousands; more in release builds).
const LENT: usize = if cfg!(debug_assertions) {
    3_000
} else {
    12_000
};

/// Sleeps until killed.
fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Receives proxies three ways (its arguments, a Pipe, a Queue), says how many it holds, and
/// waits to be killed without using any.
#[allow(clippy::type_complexity)]
fn receive_then_hang(
    (args, pipe, queue, (by_pipe, by_queue), report): (
        Lists,
        Connection<Lists>,
        Queue<Lists>,
        (usize, usize),
        Connection<usize>,
    ),
) {
    let mut held = args;
    let mut n = 0;
    while n < by_pipe {
        let got = pipe.recv().unwrap();
        n += got.len();
        held.extend(got);
    }
    n = 0;
    while n < by_queue {
        let got = queue.get().unwrap();
        n += got.len();
        held.extend(got);
    }
    report.send(held.len()).unwrap();
    hang()
}

#[test]
fn proxies_received_by_holders_killed_before_using_them_are_released() {
    // The scenario: thousands of proxies lent to two children, received, never used;
    // the children are SIGKILLed; the manager must count only what the parent still holds.
    bounded(|| {
        let m = Manager::start().unwrap();
        let all: Lists = (0..LENT).map(|_| m.list().unwrap()).collect();
        let kept: Lists = all.iter().step_by(10).cloned().collect();
        let mut children = Vec::new();
        for share in all.chunks(LENT / 2) {
            let third = share.len() / 3;
            let (by_args, rest) = share.split_at(third);
            let (by_pipe, by_queue) = rest.split_at(third);
            let (tx, rx) = Pipe::<Lists>::duplex().unwrap();
            let q = Queue::<Lists>::new().unwrap();
            let (report_tx, report_rx) = Pipe::<usize>::duplex().unwrap();
            let args = (
                by_args.to_vec(),
                rx,
                q.clone(),
                (by_pipe.len(), by_queue.len()),
                report_tx,
            );
            let p = reaped(Process::new(receive_then_hang, args).start().unwrap());
            for chunk in by_pipe.chunks(100) {
                tx.send(chunk.to_vec()).unwrap();
            }
            for chunk in by_queue.chunks(100) {
                q.put(chunk.to_vec()).unwrap();
            }
            assert_eq!(report_rx.recv_timeout(BOUND).unwrap(), share.len());
            children.push(p);
        }
        drop(all);
        assert_eq!(m.object_count().unwrap(), LENT, "the children hold them");
        for p in &children {
            p.kill().unwrap();
            assert!(matches!(
                p.join_timeout(BOUND),
                Err(e) if e.exit_reason() == Some(&ExitReason::Killed { signal: 9 })
            ));
        }
        let mut left = 0;
        assert!(
            eventually(SETTLE, || {
                left = m.object_count().unwrap();
                left == kept.len()
            }),
            "{} objects counted, the parent holds {}",
            left,
            kept.len()
        );
        // Nothing the parent holds was freed under it.
        for l in kept.iter().step_by(50) {
            assert_eq!(l.len().unwrap(), 0);
        }
        drop(kept);
        assert!(eventually(SETTLE, || m.object_count().unwrap() == 0));
    });
}

fn hold_and_hang(_held: Lists) {
    hang()
}

fn hang_without_reading((_unread, ready): (Connection<Lists>, Connection<()>)) {
    ready.send(()).unwrap();
    hang()
}

struct Sleeper;

#[procactor::actor]
impl Sleeper {
    fn init(_: ()) -> Self {
        Sleeper
    }
    pub fn nap(&self, ready: Event) {
        ready.set();
        hang()
    }
    pub fn take(&self, lists: Lists) -> usize {
        lists.len()
    }
    pub fn len_of(&self, l: ListProxy<u8>) -> usize {
        l.len().unwrap()
    }
}

#[test]
fn lends_whose_bytes_are_destroyed_before_decoding_are_released() {
    // Through procactor's sockets the bytes carry a lifeline: once the sender's clone is dropped
    // and the bytes are gone undecoded, the manager releases their lends.
    bounded(|| {
        let m = Manager::start().unwrap();
        let lists = |n: usize| -> Lists { (0..n).map(|_| m.list().unwrap()).collect() };

        // A pipe dropped with messages in it, in this process.
        let (a, b) = Pipe::<Lists>::duplex().unwrap();
        for chunk in lists(50).chunks(10) {
            a.send(chunk.to_vec()).unwrap();
        }
        assert_eq!(m.object_count().unwrap(), 50, "the lends keep them");
        drop((a, b));
        assert!(
            eventually(SETTLE, || m.object_count().unwrap() == 0),
            "a dropped pipe's lends were released"
        );

        // A receiver killed before reading them (one message per proxy: one lifeline each).
        let (a, b) = Pipe::<Lists>::duplex().unwrap();
        let (ready_tx, ready_rx) = Pipe::<()>::duplex().unwrap();
        let p = reaped(
            Process::new(hang_without_reading, (b, ready_tx))
                .start()
                .unwrap(),
        );
        ready_rx.recv_timeout(BOUND).unwrap();
        for l in lists(50) {
            a.send(vec![l]).unwrap();
        }
        assert_eq!(m.object_count().unwrap(), 50);
        p.kill().unwrap();
        assert!(p.join_timeout(BOUND).is_err());
        assert!(
            eventually(SETTLE, || m.object_count().unwrap() == 0),
            "the killed reader's unread messages were released"
        );
        drop(a);

        // An actor killed with proxies in its mailbox (its handler busy).
        let s = procactor::spawn::<Sleeper>(()).unwrap();
        let busy = Event::new().unwrap();
        s.cast().nap(busy.clone()).unwrap();
        busy.wait_timeout(BOUND).unwrap();
        for chunk in lists(50).chunks(5) {
            s.cast().take(chunk.to_vec()).unwrap();
        }
        assert_eq!(m.object_count().unwrap(), 50);
        s.kill().unwrap();
        s.join_timeout(BOUND).unwrap();
        assert!(
            eventually(SETTLE, || m.object_count().unwrap() == 0),
            "the killed actor's mailbox was released"
        );

        // A child killed as soon as it started: whether it decoded its arguments or not.
        for _ in 0..5 {
            let p = reaped(Process::new(hold_and_hang, lists(20)).start().unwrap());
            p.kill().unwrap();
            assert!(p.join_timeout(BOUND).is_err());
        }
        assert!(
            eventually(SETTLE, || m.object_count().unwrap() == 0),
            "killed children's arguments were released"
        );
    });
}

fn send_back_then_hang(
    (l, _witness, pipe, queue, ready): (
        ListProxy<u8>,
        ListProxy<u8>,
        Connection<Lists>,
        Queue<Lists>,
        Event,
    ),
) {
    pipe.send(vec![l.clone()]).unwrap();
    queue.put(vec![l]).unwrap();
    ready.set();
    hang()
}

#[test]
fn what_a_killed_process_sent_is_not_lost() {
    // Lends are not the sender's: a proxy sent by a process that is killed at once (and was its
    // only holder) still works where it is received, through a Pipe (under a lifeline) or a
    // Queue.
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list_from(vec![7u8]).unwrap();
        // Held by the child alone: freed when the manager has seen the child's connection close.
        let witness = m.list::<u8>().unwrap();
        let (a, b) = Pipe::<Lists>::duplex().unwrap();
        let q = Queue::<Lists>::new().unwrap();
        let ready = Event::new().unwrap();
        let args = (l.clone(), witness.clone(), b, q.clone(), ready.clone());
        let p = reaped(Process::new(send_back_then_hang, args).start().unwrap());
        drop((l, witness));
        ready.wait_timeout(BOUND).unwrap();
        p.kill().unwrap();
        assert!(p.join_timeout(BOUND).is_err());
        let mut count = 0;
        assert!(
            eventually(SETTLE, || {
                count = m.object_count().unwrap();
                count == 1
            }),
            "{count} objects: the manager should have seen the sender die, and kept what it sent"
        );
        let by_pipe = a.recv_timeout(BOUND).unwrap();
        let by_queue = q.get_timeout(BOUND).unwrap();
        assert_eq!(by_pipe[0].get(0).unwrap(), 7);
        assert_eq!(by_queue[0].get(0).unwrap(), 7);
        drop((by_pipe, by_queue));
        assert!(eventually(SETTLE, || m.object_count().unwrap() == 0));

        // The unguarded case (see the README): a Queue dropped with a proxy in it keeps the
        // object until the manager ends (a queue's bytes live in shared memory, where no
        // lifeline can go).
        let q = Queue::<Lists>::new().unwrap();
        q.put(vec![m.list::<u8>().unwrap()]).unwrap();
        drop(q);
        assert_eq!(m.object_count().unwrap(), 1);
    });
}

/// Decodes as `()`, after blocking for ever in a process that set [`STALL`]: a process that
/// dies in the middle of decoding an answer.
#[derive(Debug, PartialEq)]
struct Stall;

static STALL: AtomicBool = AtomicBool::new(false);
static STALLED: OnceLock<Event> = OnceLock::new();

impl Serialize for Stall {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stall {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        if STALL.load(Ordering::Relaxed) {
            if let Some(e) = STALLED.get() {
                e.set();
            }
            hang()
        }
        Ok(Stall)
    }
}

type Stalling = ListProxy<(Stall, ListProxy<u8>)>;

fn stall_in_answer((outer, stalled): (Stalling, Event)) {
    STALL.store(true, Ordering::Relaxed);
    let _ = STALLED.set(stalled);
    let _ = outer.get(0);
}

struct Keeper {
    kept: Option<ListProxy<u8>>,
}

#[procactor::actor]
impl Keeper {
    fn init(_: ()) -> Self {
        Keeper { kept: None }
    }
    pub fn keep(&mut self, l: ListProxy<u8>) {
        self.kept = Some(l);
    }
    pub fn give(&self) -> Option<ListProxy<u8>> {
        self.kept.clone()
    }
    pub fn forget(&mut self) {
        self.kept = None;
    }
}

#[test]
fn proxies_in_the_managers_answers_are_lent_to_the_caller() {
    bounded(|| {
        let m = Manager::start().unwrap();
        // The asker dies after the answer came, before the proxy inside it was decoded.
        let inner = m.list::<u8>().unwrap();
        let outer: Stalling = m.list().unwrap();
        outer.append((Stall, inner.clone())).unwrap();
        drop(inner);
        let stalled = Event::new().unwrap();
        let p = reaped(
            Process::new(stall_in_answer, (outer.clone(), stalled.clone()))
                .start()
                .unwrap(),
        );
        stalled.wait_timeout(BOUND).unwrap();
        outer.clear().unwrap();
        assert_eq!(
            m.object_count().unwrap(),
            2,
            "the answer's lend keeps the inner list"
        );
        p.kill().unwrap();
        assert!(p.join_timeout(BOUND).is_err());
        assert!(
            eventually(SETTLE, || m.object_count().unwrap() == 1),
            "the lend to the dead asker was released"
        );
        drop(outer);

        // Answers nobody waits for (pipelined calls): what they lent goes nowhere.
        let k = m.host::<Keeper>(()).unwrap();
        let l = m.list_from(vec![1u8]).unwrap();
        k.keep(l.clone()).unwrap();
        drop(l);
        for _ in 0..20 {
            k.cast().give().unwrap();
        }
        let given = k.give().unwrap().unwrap();
        assert_eq!(given.get(0).unwrap(), 1);
        drop(given);
        k.forget().unwrap();
        assert!(
            eventually(SETTLE, || m.object_count().unwrap() == 1),
            "{} objects: the pipelined answers' lends stayed",
            m.object_count().unwrap()
        );
    });
}

fn len_in_worker(l: ListProxy<u8>) -> usize {
    l.len().unwrap()
}

#[test]
fn proxies_are_adopted_wherever_they_are_decoded() {
    // Decoding adopts at once, over the decoder's connection: in an answer of the same
    // connection, in an actor's handler, in a pool worker, in the manager itself. None of these
    // may wait on itself.
    bounded(|| {
        let m = Manager::start().unwrap();
        let l = m.list_from(vec![1u8, 2]).unwrap();
        let nested = m.list::<ListProxy<u8>>().unwrap();
        nested.append(l.clone()).unwrap();
        assert_eq!(nested.get(0).unwrap().len().unwrap(), 2);
        let s = procactor::spawn::<Sleeper>(()).unwrap();
        assert_eq!(s.len_of(l.clone()).unwrap(), 2);
        assert_eq!(s.take(vec![l.clone(); 300]).unwrap(), 300);
        let pool = Pool::new(2).unwrap();
        let lens = pool.map(len_in_worker, vec![l.clone(); 20]).unwrap();
        assert_eq!(lens, vec![2; 20]);
        let k = m.host::<Keeper>(()).unwrap();
        k.keep(l.clone()).unwrap();
        assert_eq!(k.give().unwrap().unwrap().len().unwrap(), 2);
        drop(pool);
        s.stop().unwrap();
        s.join_timeout(BOUND).unwrap();
        drop((l, nested, k));
        assert!(eventually(SETTLE, || m.object_count().unwrap() == 0));
    });
}

/// Sends `n` proxies (one message each: one lifeline each) into a pipe that is then dropped
/// unread, under a manager started with a descriptor limit of 128 (a budget of 32 lifelines);
/// returns the object counts before and after.
fn lend_past_the_budget(n: usize) -> (usize, usize) {
    let low = libc::rlimit {
        rlim_cur: 128,
        rlim_max: 128,
    };
    // SAFETY: setrlimit with a valid struct; this child process is ours to limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    // The manager inherits the limit (a fork server started earlier would not have it).
    procactor::set_start_method(procactor::StartMethod::Spawn);
    let m = Manager::start().unwrap();
    let (a, b) = Pipe::<Lists>::duplex().unwrap();
    for _ in 0..n {
        a.send(vec![m.list().unwrap()]).unwrap();
    }
    let before = m.object_count().unwrap();
    drop((a, b));
    let guarded = 128 / 4;
    let mut after = before;
    eventually(SETTLE, || {
        after = m.object_count().unwrap();
        after == n - guarded
    });
    // Still serving, and the unguarded lends are still good objects.
    assert_eq!(m.list::<u8>().unwrap().len().unwrap(), 0);
    (before, after)
}

#[test]
fn lifelines_past_the_managers_budget_leave_lends_unguarded() {
    // The manager watches at most a quarter of its descriptor limit in lifelines: past that, a
    // lend is kept until adopted (as through a Queue), and the manager keeps serving.
    bounded(|| {
        let p = reaped(Process::new(lend_past_the_budget, 60).start().unwrap());
        let (before, after) = p.join_timeout(BOUND).unwrap();
        assert_eq!(before, 60);
        assert_eq!(
            after,
            60 - 32,
            "the first 32 lines were watched and released"
        );
    });
}

/// Sorts, reverses and counts from a child; pops an item of a dict.
fn reorder((l, d): (ListProxy<i64>, DictProxy<u8, String>)) -> (usize, (u8, String)) {
    l.sort().unwrap();
    l.reverse().unwrap();
    (l.count(&3).unwrap(), d.popitem().unwrap())
}

fn by_distance_from_ten(a: &i64, b: &i64) -> std::cmp::Ordering {
    (a - 10).abs().cmp(&(b - 10).abs())
}

#[test]
fn lists_sort_reverse_and_count_and_dicts_pop_items_in_the_manager() {
    let m = Manager::start().unwrap();
    let l = m.list_from(vec![3i64, 20, -4, 3, 11, 3]).unwrap();
    let d = m.dict::<u8, String>().unwrap();
    d.insert(7, "seven".into()).unwrap();
    let p = reaped(
        Process::new(reorder, (l.clone(), d.clone()))
            .start()
            .unwrap(),
    );
    assert_eq!(p.join_timeout(BOUND).unwrap(), (3, (7, "seven".into())));
    assert_eq!(l.snapshot().unwrap(), [20, 11, 3, 3, 3, -4]);
    assert!(matches!(d.popitem(), Err(Error::NotFound(_))));
    // A stable sort by a function of this program.
    l.sort_by(by_distance_from_ten).unwrap();
    assert_eq!(l.snapshot().unwrap(), [11, 3, 3, 3, 20, -4]);
    assert_eq!(l.count(&99).unwrap(), 0);
}

/// Adds its number and the shared tag, discards the number before it.
fn into_set((s, i): (SetProxy<String>, u32)) -> bool {
    s.add("shared".into()).unwrap();
    s.add(format!("p{i}")).unwrap();
    s.discard(&format!("p{}", i.wrapping_sub(1))).unwrap();
    s.contains(&"shared".to_string()).unwrap()
}

#[test]
fn a_set_is_one_set_for_every_process() {
    let m = Manager::start().unwrap();
    let s = m.set::<String>().unwrap();
    let ps: Vec<_> = (0..4)
        .map(|i| reaped(Process::new(into_set, (s.clone(), i)).start().unwrap()))
        .collect();
    for p in ps {
        assert!(p.join_timeout(BOUND).unwrap());
    }
    let all = s.snapshot().unwrap();
    assert!(
        all.contains("shared") && all.len() <= 5 && all.len() >= 2,
        "{all:?}"
    );
    s.update(["x".to_string(), "y".into()]).unwrap();
    s.difference_update(["x".to_string()]).unwrap();
    assert!(s.contains(&"y".to_string()).unwrap() && !s.contains(&"x".to_string()).unwrap());
    s.intersection_update(["y".to_string(), "shared".into()])
        .unwrap();
    assert_eq!(s.len().unwrap(), 2);
    assert!(matches!(
        s.remove(&"x".to_string()),
        Err(Error::NotFound(_))
    ));
    let popped = [s.pop().unwrap(), s.pop().unwrap()];
    assert!(popped.contains(&"y".to_string()) && popped.contains(&"shared".to_string()));
    assert!(matches!(s.pop(), Err(Error::NotFound(_))));
    assert!(s.add("z".into()).unwrap() && !s.add("z".into()).unwrap());
    s.clear().unwrap();
    assert!(s.is_empty().unwrap());
}

/// Set by the manager's initializer, in the manager's process.
static GREETING: OnceLock<String> = OnceLock::new();

fn greet(who: String) {
    GREETING.set(format!("hello {who}")).unwrap();
}

fn refuse(_: ()) {
    panic!("the initializer refused on purpose");
}

struct Greeter;

#[procactor::actor]
impl Greeter {
    fn init(_: ()) -> Self {
        Greeter
    }
    pub fn greeting(&mut self) -> Option<String> {
        GREETING.get().cloned()
    }
}

#[test]
fn a_managers_initializer_runs_in_its_process_before_it_serves() {
    bounded(|| {
        let m = Manager::builder()
            .initializer(greet, "manager".to_string())
            .start()
            .unwrap();
        // A hosted object lives in the manager's process: it sees what the initializer set.
        let g = m.host::<Greeter>(()).unwrap();
        assert_eq!(g.greeting().unwrap().as_deref(), Some("hello manager"));
        assert_eq!(GREETING.get(), None, "it ran here, not in the manager");
        let e = Manager::builder()
            .initializer(refuse, ())
            .start()
            .unwrap_err();
        assert!(e.to_string().contains("refused on purpose"), "{e}");
    });
}

fn add_one(n: &mut u32) {
    *n += 1;
}

/// Changes a value in place (`update`), or with `insert` adds a key.
fn change_dict((d, insert): (DictProxy<u32, u32>, bool)) {
    if insert {
        d.insert(100_000, 1).unwrap();
    } else {
        d.update(&0, add_one).unwrap();
    }
    d.len().unwrap(); // applied (inserts are pipelined)
}

#[test]
fn a_dict_iteration_fails_cleanly_when_another_process_changes_its_size() {
    let m = Manager::start().unwrap();
    let d = m.dict_from((0..1000u32).map(|i| (i, i)).collect()).unwrap();
    // A value changed in place meanwhile: the iteration goes on, every key once.
    let mut it = d.iter();
    let first = it.next().unwrap().unwrap();
    reaped(
        Process::new(change_dict, (d.clone(), false))
            .start()
            .unwrap(),
    )
    .join_timeout(BOUND)
    .unwrap();
    let mut keys: Vec<u32> = std::iter::once(Ok(first))
        .chain(it)
        .map(|e| e.unwrap().0)
        .collect();
    keys.sort();
    assert_eq!(keys, (0..1000).collect::<Vec<_>>());
    // A key added meanwhile: the next page is refused, and the iteration ends.
    let mut it = d.iter();
    it.next().unwrap().unwrap();
    reaped(
        Process::new(change_dict, (d.clone(), true))
            .start()
            .unwrap(),
    )
    .join_timeout(BOUND)
    .unwrap();
    let rest: Vec<_> = it.collect();
    assert!(
        matches!(rest.last(), Some(Err(Error::Changed(_)))),
        "{:?}",
        rest.last()
    );
    assert!(rest.len() <= 256);
    assert_eq!(d.iter().count(), 1001);
    // An insert over an existing key may reorder the table: refused too.
    let mut it = d.iter();
    it.next().unwrap().unwrap();
    d.insert(5, 5).unwrap();
    assert!(it.any(|e| matches!(e, Err(Error::Changed(_)))));
}
