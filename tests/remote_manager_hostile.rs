//! Remote managers against a hostile authenticated client that speaks the protocol by hand
//! (forged proxies, proxies asked for in answers), and careless users (a call longer than the
//! heartbeat, an unbounded call timeout). Regressions of an attack: each failed before its fix.
//! Every wait is bounded.
#![allow(dead_code)]

mod common;

procactor::test_support!();

use std::time::Duration;

use common::{eventually, BOUND};
use procactor::connection::{Address, Client, Listener};
use procactor::manager::{ListProxy, RemoteManager, RemoteOptions, ValueProxy};
use procactor::{Connection, Error, Manager};
use serde::{Deserialize, Serialize};

const KEY: &[u8] = b"hostile remote manager tests";

fn client(address: &Address) -> Client {
    Client::new(address).authkey(KEY).timeout(BOUND)
}

// ---- A mirror of the wire protocol (remote.rs `Up`/`Down`/`Answer`, proxy.rs `ProxyWire`). ----

#[derive(Serialize, Deserialize, Debug)]
enum Up {
    Hello {
        protocol: u32,
        heartbeat_ms: u64,
    },
    Call {
        id: u64,
        obj: u64,
        kind: u64,
        op: Vec<u8>,
    },
    Create {
        id: u64,
        kind: u64,
        kind_name: String,
        init: Vec<u8>,
    },
    Get {
        id: u64,
        name: String,
        kind: u64,
    },
    Release {
        obj: u64,
    },
    Count {
        id: u64,
    },
    Ping,
}

#[derive(Serialize, Deserialize, Debug)]
enum Fault {
    Index {
        index: u64,
        len: u64,
    },
    NotFound(String),
    Gone(u64),
    Panicked {
        message: String,
        location: Option<String>,
    },
    Bad(String),
    Earlier(Box<Fault>),
}

#[derive(Deserialize, Debug)]
enum Answer {
    Created(u64),
    Value(Vec<u8>),
    Failed(Fault),
    Count(u64),
}

#[derive(Deserialize, Debug)]
enum Down {
    Welcome { manager_pid: u32, heartbeat_ms: u64 },
    Reply { id: u64, answer: Answer },
    Pong,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct RefWire {
    id: u64,
    name: String,
    pid: u32,
    addr: String,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct ProxyWire {
    manager: RefWire,
    obj: u64,
    kind: u64,
    lend: u64,
    line: u64,
    line_fd: u32,
}

/// `wire::fingerprint` (FNV-1a of the type's name).
fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The kind of `ListProxy<T>`, for `T` named `t`.
fn list_kind(t: &str) -> u64 {
    fnv(&format!("(procactor_runtime::manager::list::ListTag, {t})"))
}
const INNER: &str = "u32";
const OUTER: &str = "procactor_runtime::manager::list::ListProxy<u32>";

/// `ListOp::Get(i)` and `ListOp::Append(item)` as the manager decodes them.
fn op_get(i: u64) -> Vec<u8> {
    postcard::to_stdvec(&(5u8, i)).unwrap()
}
fn op_append(item: &ProxyWire) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend(postcard::to_stdvec(item).unwrap());
    v
}

struct Raw {
    conn: Connection<()>,
    next: u64,
}

impl Raw {
    fn connect(address: &Address) -> Raw {
        let conn = client(address).connect::<()>().unwrap();
        let raw = Raw { conn, next: 1 };
        raw.send(&Up::Hello {
            protocol: 2,
            heartbeat_ms: 30_000,
        });
        match raw.recv() {
            Down::Welcome { .. } => raw,
            other => panic!("{other:?}"),
        }
    }
    fn send(&self, up: &Up) {
        self.conn
            .send_bytes(&postcard::to_stdvec(up).unwrap())
            .unwrap();
    }
    fn recv(&self) -> Down {
        postcard::from_bytes(&self.conn.recv_bytes_timeout(BOUND).unwrap()).unwrap()
    }
    fn ask(&mut self, up: impl FnOnce(u64) -> Up) -> Answer {
        let id = self.next;
        self.next += 1;
        self.send(&up(id));
        loop {
            if let Down::Reply { id: got, answer } = self.recv() {
                if got == id {
                    return answer;
                }
            }
        }
    }
    fn get(&mut self, name: &str, kind: u64) -> u64 {
        match self.ask(|id| Up::Get {
            id,
            name: name.into(),
            kind,
        }) {
            Answer::Created(obj) => obj,
            other => panic!("get {name}: {other:?}"),
        }
    }
}

/// A manager and its gateway on an ephemeral TCP port.
fn served() -> (Manager, procactor::manager::Gateway) {
    let m = Manager::start().unwrap();
    let gw = m
        .serve(Listener::bind("127.0.0.1:0").unwrap().authkey(KEY))
        .unwrap();
    (m, gw)
}

/// A manager serving `nest`: a `ListProxy<ListProxy<u32>>` holding one list.
fn nested() -> (
    Manager,
    procactor::manager::Gateway,
    ListProxy<ListProxy<u32>>,
) {
    let (m, gw) = served();
    let inner = m.list_from(vec![7u32]).unwrap();
    let nest = m.list_from(vec![inner]).unwrap();
    gw.register("nest", &nest).unwrap();
    (m, gw, nest)
}

// ---- Regressions. ----

#[test]
fn a_remote_list_search_is_refused_clearly() {
    let (_m, gw) = served();
    gw.allow::<ListProxy<u32>>();
    let r = RemoteManager::connect(&client(gw.address())).unwrap();
    let l = r.list::<u32>().unwrap();
    l.extend(vec![1, 2, 3]).unwrap();
    for e in [
        l.contains(&2).unwrap_err(),
        l.index(&3).unwrap_err(),
        l.remove(&1).unwrap_err(),
    ] {
        assert!(
            matches!(&e, Error::Unsupported(w) if w.contains("snapshot")),
            "{e}"
        );
    }
    assert_eq!(l.snapshot().unwrap(), [1, 2, 3]);
}

#[test]
fn a_proxy_in_an_answer_does_not_cross_hosts_nor_leak() {
    let (m, gw, nest) = nested();
    let mut raw = Raw::connect(gw.address());
    let obj = raw.get("nest", list_kind(OUTER));
    for _ in 0..20 {
        match raw.ask(|id| Up::Call {
            id,
            obj,
            kind: list_kind(OUTER),
            op: op_get(0),
        }) {
            Answer::Failed(Fault::Bad(why)) => assert!(why.contains("cross hosts"), "{why}"),
            other => panic!("a proxy was answered to a remote client: {other:?}"),
        }
    }
    drop(raw);
    drop(gw);
    drop(nest);
    assert!(
        eventually(Duration::from_secs(5), || m.object_count().unwrap() == 0),
        "objects left after everyone let go: {}",
        m.object_count().unwrap()
    );
}

/// A published list of lists, and a forged proxy (any object id, or another manager at this
/// manager's socket) appended by a hostile client: refused, never adopted, never connected to.
#[test]
fn a_forged_proxy_neither_reaches_an_object_nor_blocks_the_manager() {
    let (m, gw, nest) = nested();
    gw.allow::<ValueProxy<u64>>();
    let secret = m.list_from(vec![42u32, 43]).unwrap();
    let mut raw = Raw::connect(gw.address());
    let outer = raw.get("nest", list_kind(OUTER));
    // What a proxy of this manager looks like on the wire (a plain encoding of a local one).
    let legit: ProxyWire =
        postcard::from_bytes(&postcard::to_stdvec(&nest.get(0).unwrap()).unwrap()).unwrap();
    for forged in [
        ProxyWire {
            obj: outer + 1,
            kind: list_kind(INNER),
            ..legit.clone()
        },
        ProxyWire {
            manager: RefWire {
                id: 12345,
                ..legit.manager.clone()
            },
            ..legit.clone()
        },
    ] {
        match raw.ask(|id| Up::Call {
            id,
            obj: outer,
            kind: list_kind(OUTER),
            op: op_append(&forged),
        }) {
            Answer::Failed(_) => {}
            other => panic!("a forged proxy was taken: {other:?}"),
        }
        // Pipelined too: the manager must not be blocked by it.
        raw.send(&Up::Call {
            id: 0,
            obj: outer,
            kind: list_kind(OUTER),
            op: op_append(&forged),
        });
    }
    let honest = RemoteManager::connect_with(
        &client(gw.address()),
        RemoteOptions {
            call_timeout: Duration::from_secs(3),
            heartbeat_timeout: Duration::from_secs(8),
        },
    )
    .unwrap();
    // Kept until the end: its release (pipelined) would move the count under our feet.
    let value = honest.value(1u64).expect("the manager is blocked");
    assert_eq!(nest.len().unwrap(), 1, "a forged proxy was appended");
    let before = m.object_count().unwrap();
    drop(secret);
    assert!(
        eventually(Duration::from_secs(5), || m.object_count().unwrap()
            == before - 1),
        "the secret list is kept alive by a forged proxy"
    );
    drop((raw, value));
}

#[procactor::entry(name = "remote_manager_hostile::slow_inc")]
fn slow_inc(n: &mut u64) {
    std::thread::sleep(Duration::from_millis(2500));
    *n += 1;
}

#[test]
fn a_slow_call_within_its_deadline_does_not_end_the_session() {
    let (m, gw) = served();
    gw.allow::<ValueProxy<u64>>();
    let r = RemoteManager::connect_with(
        &client(gw.address()),
        RemoteOptions {
            call_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_millis(1000),
        },
    )
    .unwrap();
    let v = r.value(1u64).unwrap();
    assert_eq!(v.update(slow_inc).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(r.is_connected());
    assert_eq!(v.get().unwrap(), 2);
    assert_eq!(m.object_count().unwrap(), 1);
}

#[test]
fn a_call_timeout_of_duration_max_does_not_panic() {
    let (_m, gw) = served();
    gw.allow::<ValueProxy<u64>>();
    let r = RemoteManager::connect_with(
        &client(gw.address()),
        RemoteOptions {
            call_timeout: Duration::MAX,
            heartbeat_timeout: Duration::from_secs(8),
        },
    )
    .unwrap();
    assert_eq!(r.value(1u64).unwrap().get().unwrap(), 1);
}
