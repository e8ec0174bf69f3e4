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

/// A remote manager session with these timeouts.
fn session(
    address: &Address,
    call_timeout: Duration,
    heartbeat_timeout: Duration,
) -> procactor::Result<RemoteManager> {
    RemoteManager::connect_with(
        &client(address),
        RemoteOptions {
            call_timeout,
            heartbeat_timeout,
        },
    )
}

// ---- A mirror of the wire protocol (actor/net.rs `Up`/`Down`; manager/proto.rs `Request`,
// `Response`, `Fault`, with `Packed` as (bytes, descriptor indexes); proxy.rs `ProxyWire`). ----

#[derive(Serialize, Deserialize, Debug)]
enum Up {
    Hello {
        protocol: u32,
        msg: u64,
        reply: u64,
        heartbeat_ms: u64,
    },
    Ask {
        id: u64,
        payload: Vec<u8>,
    },
    Tell {
        payload: Vec<u8>,
    },
    Ping,
}

#[derive(Deserialize, Debug)]
enum Down {
    Welcome {
        pid: u32,
        name: String,
        heartbeat_ms: u64,
    },
    Refused {
        reason: String,
    },
    Reply {
        id: u64,
        payload: Vec<u8>,
    },
    Failed {
        id: u64,
        handled: bool,
        reason: String,
    },
    Pong,
}

type Packed = (Vec<u8>, Vec<u32>);

fn packed(bytes: Vec<u8>) -> Packed {
    (bytes, Vec::new())
}

#[derive(Serialize, Debug)]
enum FnRef {
    Signed(()),
    Named(String),
}

#[derive(Serialize, Debug)]
enum Req {
    Create {
        make: FnRef,
        init: Packed,
    },
    Call {
        obj: u64,
        kind: u64,
        op: Packed,
    },
    Line {
        line: u64,
        end: Packed,
    },
    Lend {
        obj: u64,
        lend: u64,
        line: u64,
    },
    LineDone {
        line: u64,
    },
    Adopt {
        obj: u64,
        lend: u64,
        proof: Packed,
    },
    Release {
        obj: u64,
    },
    Count,
    RemoteCall {
        obj: u64,
        kind: u64,
        op: Packed,
    },
    RemoteCreate {
        kind: u64,
        kind_name: String,
        init: Packed,
    },
    Get {
        name: String,
        kind: u64,
    },
    OpenGateway,
}

#[derive(Deserialize, Debug)]
enum Answer {
    Created(u64),
    Value(Packed),
    Failed(Fault),
    Count(u64),
    Done,
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
    fnv_bytes(name.as_bytes())
}

fn fnv_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `Schema::of::<T>(shape)`, for `T` named `name`.
fn schema(name: &str, shape: &str) -> u64 {
    fnv_bytes(&[name.as_bytes(), &[0], shape.as_bytes()].concat())
}

const SHAPE: &str = "procactor-manager-4";
fn manager_schemas() -> (u64, u64) {
    (
        schema(
            "procactor_runtime::manager::proto::Request<procactor_runtime::manager::proto::Packed>",
            SHAPE,
        ),
        schema("procactor_runtime::manager::proto::Response", SHAPE),
    )
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
        let raw = Raw::hello(address, manager_schemas());
        match raw.recv() {
            Down::Welcome { .. } => raw,
            other => panic!("{other:?}"),
        }
    }
    /// Connects and says hello with the schemas `(msg, reply)`; the answer is not read.
    fn hello(address: &Address, (msg, reply): (u64, u64)) -> Raw {
        let conn = client(address).connect::<()>().unwrap();
        let raw = Raw { conn, next: 1 };
        raw.send(&Up::Hello {
            protocol: 3,
            msg,
            reply,
            heartbeat_ms: 30_000,
        });
        raw
    }
    fn send(&self, up: &Up) {
        self.conn
            .send_bytes(&postcard::to_stdvec(up).unwrap())
            .unwrap();
    }
    fn tell(&self, req: &Req) {
        self.send(&Up::Tell {
            payload: postcard::to_stdvec(req).unwrap(),
        });
    }
    fn recv(&self) -> Down {
        postcard::from_bytes(&self.conn.recv_bytes_timeout(BOUND).unwrap()).unwrap()
    }
    fn ask(&mut self, req: &Req) -> Answer {
        let id = self.next;
        self.next += 1;
        self.send(&Up::Ask {
            id,
            payload: postcard::to_stdvec(req).unwrap(),
        });
        loop {
            match self.recv() {
                Down::Reply { id: got, payload } if got == id => {
                    return postcard::from_bytes(&payload).unwrap()
                }
                Down::Failed {
                    id: got, reason, ..
                } if got == id => return Answer::Failed(Fault::Bad(reason)),
                _ => {}
            }
        }
    }
    fn get(&mut self, name: &str, kind: u64) -> u64 {
        match self.ask(&Req::Get {
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

/// A remote list searches by encoded values (`T`'s equality has no name to go by), and finds
/// what a local search finds for plain data.
#[test]
fn a_remote_list_searches_by_encoded_value() {
    let (m, gw) = served();
    let local = m
        .list_from(vec!["a".to_string(), "b".into(), "a".into()])
        .unwrap();
    gw.register("names", &local).unwrap();
    let r = RemoteManager::connect(&client(gw.address())).unwrap();
    let l: ListProxy<String> = r.get("names").unwrap();
    assert!(l.contains(&"b".to_string()).unwrap());
    assert!(!l.contains(&"c".to_string()).unwrap());
    assert_eq!(l.index(&"a".to_string()).unwrap(), 0);
    assert!(matches!(l.index(&"c".to_string()), Err(Error::NotFound(_))));
    l.remove(&"a".to_string()).unwrap();
    assert_eq!(local.snapshot().unwrap(), ["b", "a"]);
    assert!(matches!(
        l.remove(&"z".to_string()),
        Err(Error::NotFound(_))
    ));
    // Structured values too.
    gw.allow::<ListProxy<(u32, Vec<String>)>>().unwrap();
    let pairs = r.list::<(u32, Vec<String>)>().unwrap();
    pairs
        .extend(vec![(1, vec!["x".into()]), (2, vec![]), (1, vec![])])
        .unwrap();
    assert_eq!(pairs.index(&(1, vec![])).unwrap(), 2);
    assert!(pairs.contains(&(2, vec![])).unwrap());
}

#[test]
fn a_proxy_in_an_answer_does_not_cross_hosts_nor_leak() {
    let (m, gw, nest) = nested();
    let mut raw = Raw::connect(gw.address());
    let obj = raw.get("nest", list_kind(OUTER));
    for _ in 0..20 {
        match raw.ask(&Req::RemoteCall {
            obj,
            kind: list_kind(OUTER),
            op: packed(op_get(0)),
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
    gw.allow::<ValueProxy<u64>>().unwrap();
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
        match raw.ask(&Req::RemoteCall {
            obj: outer,
            kind: list_kind(OUTER),
            op: packed(op_append(&forged)),
        }) {
            Answer::Failed(_) => {}
            other => panic!("a forged proxy was taken: {other:?}"),
        }
        // Pipelined too: the manager must not be blocked by it.
        raw.tell(&Req::RemoteCall {
            obj: outer,
            kind: list_kind(OUTER),
            op: packed(op_append(&forged)),
        });
    }
    let honest = session(gw.address(), Duration::from_secs(3), Duration::from_secs(8)).unwrap();
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
    gw.allow::<ValueProxy<u64>>().unwrap();
    let r = session(
        gw.address(),
        Duration::from_secs(10),
        Duration::from_millis(1000),
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
    gw.allow::<ValueProxy<u64>>().unwrap();
    let r = session(gw.address(), Duration::MAX, Duration::from_secs(8)).unwrap();
    assert_eq!(r.value(1u64).unwrap().get().unwrap(), 1);
}

/// Everything a manager takes from this host's processes but a remote session must not ask
/// (adoptions, lends, releases of what it does not hold, creates by function, gateways), and
/// calls on objects it does not hold: refused, and nothing changes.
#[test]
fn a_remote_session_makes_no_local_request_and_reaches_only_what_it_holds() {
    let (m, gw, nest) = nested();
    let secret = m.list_from(vec![42u32]).unwrap();
    let mut raw = Raw::connect(gw.address());
    let outer = raw.get("nest", list_kind(OUTER));
    let local_only = |obj| {
        [
            Req::Adopt {
                obj,
                lend: 0,
                proof: packed(Vec::new()),
            },
            Req::Lend {
                obj,
                lend: 0,
                line: 0,
            },
            Req::Call {
                obj,
                kind: list_kind(INNER),
                op: packed(op_get(0)),
            },
            Req::Create {
                make: FnRef::Named("remote_manager_hostile::slow_inc".into()),
                init: packed(Vec::new()),
            },
            Req::OpenGateway,
        ]
    };
    for obj in 0..8u64 {
        for req in local_only(obj) {
            match raw.ask(&req) {
                Answer::Failed(Fault::Bad(why)) => assert!(why.contains("remote session"), "{why}"),
                other => panic!("{req:?} was taken from a remote session: {other:?}"),
            }
        }
        if obj != outer {
            match raw.ask(&Req::RemoteCall {
                obj,
                kind: list_kind(INNER),
                op: packed(op_get(0)),
            }) {
                Answer::Failed(Fault::Gone(_)) => {}
                other => panic!("object #{obj}, not held, was reached: {other:?}"),
            }
            // Releasing what it does not hold releases nothing.
            raw.tell(&Req::Release { obj });
        }
    }
    assert!(matches!(raw.ask(&Req::Count), Answer::Count(3)));
    assert_eq!(nest.len().unwrap(), 1);
    assert_eq!(secret.snapshot().unwrap(), [42]);
    drop((raw, secret, nest, gw));
    assert!(
        eventually(Duration::from_secs(5), || m.object_count().unwrap() == 0),
        "objects left after everyone let go: {}",
        m.object_count().unwrap()
    );
}

#[test]
fn a_caller_of_other_types_or_protocol_or_without_hello_or_speaking_garbage_is_dropped() {
    let (_m, gw) = served();
    let closed = |raw: &Raw| matches!(raw.conn.recv_bytes_timeout(BOUND), Err(Error::Disconnected));
    let raw = Raw::hello(gw.address(), (1, 2));
    match raw.recv() {
        Down::Refused { reason } => assert!(reason.contains("message types"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(closed(&raw));
    let conn = client(gw.address()).connect::<()>().unwrap();
    let raw = Raw { conn, next: 1 };
    raw.send(&Up::Hello {
        protocol: 2,
        msg: manager_schemas().0,
        reply: manager_schemas().1,
        heartbeat_ms: 1000,
    });
    assert!(matches!(raw.recv(), Down::Refused { reason } if reason.contains("protocol 2")));
    assert!(closed(&raw));
    // An ask before the hello.
    let conn = client(gw.address()).connect::<()>().unwrap();
    let raw = Raw { conn, next: 1 };
    raw.send(&Up::Ask {
        id: 1,
        payload: postcard::to_stdvec(&Req::Count).unwrap(),
    });
    assert!(closed(&raw));
    // Garbage after it, and an ask whose payload is garbage (rejected, the session lives).
    let mut raw = Raw::connect(gw.address());
    raw.send(&Up::Ask {
        id: 9,
        payload: vec![0xff; 64],
    });
    assert!(matches!(
        raw.recv(),
        Down::Failed {
            id: 9,
            handled: false,
            ..
        }
    ));
    assert!(matches!(raw.ask(&Req::Count), Answer::Count(0)));
    raw.conn
        .send_bytes(&[0xff, 0xff, 0xff, 0x7f, 1, 2])
        .unwrap();
    assert!(closed(&raw));
    assert!(eventually(BOUND, || gw.sessions() == 0));
    let r = RemoteManager::connect(&client(gw.address())).unwrap();
    assert_eq!(r.object_count().unwrap(), 0);
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that asks for 32 MiB of answers and never reads them: the manager keeps a bounded
/// part of them, and serves everyone else meanwhile.
#[test]
fn a_client_that_never_reads_its_answers_holds_up_nobody_and_costs_little() {
    let (m, gw) = served();
    gw.allow::<ValueProxy<u64>>().unwrap();
    // (A string: encoded whole, not byte by byte, even in an unoptimised test build.)
    let big = m.list_from(vec!["x".repeat(64 * 1024)]).unwrap();
    gw.register("big", &big).unwrap();
    let before = rss_kib(m.pid());
    let mut raw = Raw::connect(gw.address());
    let obj = raw.get("big", list_kind("alloc::string::String"));
    for id in 0..500 {
        raw.send(&Up::Ask {
            id: 1000 + id,
            payload: postcard::to_stdvec(&Req::RemoteCall {
                obj,
                kind: list_kind("alloc::string::String"),
                op: packed(op_get(0)),
            })
            .unwrap(),
        });
    }
    let honest = session(gw.address(), Duration::from_secs(5), Duration::from_secs(8)).unwrap();
    let v = honest.value(1u64).unwrap();
    for i in 0..200 {
        v.set(i).unwrap();
        assert_eq!(v.get().unwrap(), i);
    }
    let grew = rss_kib(m.pid()).saturating_sub(before);
    assert!(grew < 16 * 1024, "the manager grew by {grew} KiB");
    // It reads them after all: every one comes, in order.
    for id in 0..500u64 {
        let bytes = raw.conn.recv_bytes_timeout(BOUND).unwrap();
        // `Down::Reply` (variant 2), then the id (a varint), then the answer.
        let mut want = vec![2u8];
        want.extend(postcard::to_stdvec(&(1000 + id)).unwrap());
        assert!(bytes.starts_with(&want), "answer {id}: {:?}", &bytes[..8]);
        assert!(bytes.len() > 64 * 1024);
    }
}

/// Sends large pipelined messages for ever (each refused: no such object).
fn big_sender(address: Address) {
    let raw = Raw::connect(&address);
    loop {
        raw.tell(&Req::RemoteCall {
            obj: 999,
            kind: 0,
            op: packed(vec![1; 4 << 20]),
        });
    }
}

/// A client stopped half-way through sending a large message (SIGSTOP, no FIN): the manager
/// keeps what it read, waits for no one, and serves the others.
#[test]
fn a_client_stopped_mid_message_holds_up_nobody() {
    let (m, gw) = served();
    gw.allow::<ValueProxy<u64>>().unwrap();
    let p = common::reaped(
        procactor::Process::new(big_sender, gw.address().clone())
            .start()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(p.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let honest = session(gw.address(), Duration::from_secs(5), Duration::from_secs(8)).unwrap();
    let v = honest.value(1u64).unwrap();
    for i in 0..100 {
        v.set(i).unwrap();
        assert_eq!(v.get().unwrap(), i);
    }
    assert_eq!(m.object_count().unwrap(), 1);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

/// A pipelined operation that fails is reported to the session's next ask on that object (as to
/// a local caller), and to no other session.
#[test]
fn a_pipelined_failure_is_reported_to_the_same_session_only() {
    let (_m, gw, _nest) = nested();
    let mut a = Raw::connect(gw.address());
    let mut b = Raw::connect(gw.address());
    let kind = list_kind(OUTER);
    let (obj, obj_b) = (a.get("nest", kind), b.get("nest", kind));
    assert_eq!(obj, obj_b);
    a.tell(&Req::RemoteCall {
        obj,
        kind,
        op: packed(vec![0xee; 3]),
    });
    let len = || Req::RemoteCall {
        obj,
        kind,
        op: packed(vec![7]), // `ListOp::Len`
    };
    match b.ask(&len()) {
        Answer::Value(_) => {}
        other => panic!("another session got {other:?}"),
    }
    match a.ask(&len()) {
        Answer::Failed(Fault::Earlier(_)) => {}
        other => panic!("the failure was lost: {other:?}"),
    }
    assert!(matches!(a.ask(&len()), Answer::Value(_)));
}

/// CPU time `pid` used so far, in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// One byte of a message, and nothing more: the manager neither spins on it nor stops serving
/// its other callers.
#[test]
fn a_message_begun_and_never_finished_neither_spins_nor_holds_up_the_manager() {
    let (m, gw) = served();
    let mut raw = Raw::connect(gw.address());
    assert!(matches!(raw.ask(&Req::Count), Answer::Count(0)));
    rustix::io::write(std::os::fd::AsFd::as_fd(&raw.conn), &[0u8]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(m.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(m.pid()) - before;
    assert!(
        used < 40,
        "the manager used {used} ticks of CPU in 2 s, idle"
    );
    let count = common::bounded(move || m.object_count());
    assert_eq!(count.unwrap(), 0);
    drop(raw);
}

/// Writes a sealed frame's header and half its body, then stops itself.
fn half_sender((address, ready): (Address, Connection<u8>)) {
    let raw = Raw::connect(&address);
    let mut frame = 1000u64.to_be_bytes().to_vec();
    frame.extend([7u8; 500]);
    rustix::io::write(std::os::fd::AsFd::as_fd(&raw.conn), &frame).unwrap();
    ready.send(1).unwrap();
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP)
        .unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_client_stopped_half_way_through_a_message_holds_up_nobody() {
    let (_m, gw) = served();
    gw.allow::<ValueProxy<u64>>().unwrap();
    let (rx, tx) = procactor::Pipe::<u8>::simplex().unwrap();
    let p = common::reaped(
        procactor::Process::new(half_sender, (gw.address().clone(), tx))
            .start()
            .unwrap(),
    );
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), 1);
    std::thread::sleep(Duration::from_millis(200));
    let address = gw.address().clone();
    let got = common::bounded(move || {
        session(&address, Duration::from_secs(5), Duration::from_secs(8))
            .and_then(|r| r.value(1u64).and_then(|v| v.get()))
    });
    let pid = rustix::process::Pid::from_raw(p.pid() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    assert_eq!(got.unwrap(), 1);
}

/// An idle session (heartbeat 1 s) while a local caller runs a 2.5 s operation: the manager is
/// busy, not gone, and its ticker says so.
#[test]
fn an_idle_session_survives_another_callers_long_operation() {
    let (m, gw) = served();
    gw.allow::<ValueProxy<u64>>().unwrap();
    let r = session(
        gw.address(),
        Duration::from_secs(10),
        Duration::from_millis(1000),
    )
    .unwrap();
    let mine = r.value(5u64).unwrap();
    let local = m.value(1u64).unwrap();
    assert_eq!(local.update(slow_inc).unwrap(), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        r.is_connected(),
        "the idle session ended while the manager was busy"
    );
    assert_eq!(mine.get().unwrap(), 5);
    assert_eq!(m.object_count().unwrap(), 2);
}

#[procactor::entry(name = "remote_manager_hostile::slow_set")]
fn slow_set(n: &mut u64) {
    std::thread::sleep(Duration::from_millis(800));
    *n = 1;
}

/// What a session sent before the manager was asked to stop is handled, and its answer is
/// written before the manager ends (as a local caller's is).
#[test]
fn what_a_session_sent_before_a_stop_is_handled_and_answered() {
    let (m, gw) = served();
    gw.allow::<ListProxy<u32>>().unwrap();
    let mut raw = Raw::connect(gw.address());
    let kind = list_kind(INNER);
    let obj = match raw.ask(&Req::RemoteCreate {
        kind,
        kind_name: OUTER.into(),
        init: packed(postcard::to_stdvec(&Vec::<u32>::new()).unwrap()),
    }) {
        Answer::Created(obj) => obj,
        other => panic!("{other:?}"),
    };
    // The manager is busy for a local caller while the session sends, and the stop comes.
    let v = m.value(0u64).unwrap();
    let busy = std::thread::spawn(move || v.update(slow_set));
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..100u32 {
        let mut op = vec![0u8]; // `ListOp::Append`
        op.extend(postcard::to_stdvec(&i).unwrap());
        raw.tell(&Req::RemoteCall {
            obj,
            kind,
            op: packed(op),
        });
    }
    raw.send(&Up::Ask {
        id: 77,
        payload: postcard::to_stdvec(&Req::RemoteCall {
            obj,
            kind,
            op: packed(vec![7]), // `ListOp::Len`
        })
        .unwrap(),
    });
    std::thread::sleep(Duration::from_millis(100));
    let stopper = std::thread::spawn(move || m.shutdown());
    match raw.recv() {
        Down::Reply { id: 77, payload } => match postcard::from_bytes::<Answer>(&payload) {
            Ok(Answer::Value((bytes, _))) => {
                assert_eq!(postcard::from_bytes::<u64>(&bytes).unwrap(), 100)
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(busy.join().unwrap().unwrap(), 1);
    stopper.join().unwrap().unwrap();
    drop(gw);
}

/// Whether `pid` is stopped (state `T` in /proc).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('T')))
        .unwrap_or(false)
}

/// A manager stopped while a call waits: the session ends within the heartbeat timeout (a live
/// manager ticks even while busy), not at the call's deadline.
#[test]
fn a_manager_stopped_during_a_call_is_detected_within_the_heartbeat() {
    let (m, gw) = served();
    gw.allow::<ListProxy<u64>>().unwrap();
    let r = std::sync::Arc::new(
        session(
            gw.address(),
            Duration::from_secs(20),
            Duration::from_millis(800),
        )
        .unwrap(),
    );
    let l = r.list::<u64>().unwrap();
    l.append(1).unwrap();
    assert_eq!(l.len().unwrap(), 1);
    let pid = rustix::process::Pid::from_raw(m.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    assert!(eventually(BOUND, || is_stopped(m.pid())));
    let t = std::time::Instant::now();
    let call = std::thread::spawn(move || l.len());
    let detected = eventually(Duration::from_secs(5), || !r.is_connected());
    let after = t.elapsed();
    let outcome = common::bounded(move || call.join().unwrap());
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
    assert!(detected, "still connected {after:?} after the stop");
    assert!(matches!(outcome, Err(Error::Disconnected)), "{outcome:?}");
    assert!(after < Duration::from_secs(3), "{after:?}");
}

/// A session with a 400 ms heartbeat that asked for the published "big" string list's first
/// item, and has not read the answer.
fn ask_for_big(address: &Address) -> Raw {
    let conn = client(address).connect::<()>().unwrap();
    let (msg, reply) = manager_schemas();
    let mut raw = Raw { conn, next: 1 };
    raw.send(&Up::Hello {
        protocol: 3,
        msg,
        reply,
        heartbeat_ms: 400,
    });
    assert!(matches!(raw.recv(), Down::Welcome { .. }));
    let kind = list_kind("alloc::string::String");
    let obj = raw.get("big", kind);
    raw.send(&Up::Ask {
        id: 99,
        payload: postcard::to_stdvec(&Req::RemoteCall {
            obj,
            kind,
            op: packed(op_get(0)),
        })
        .unwrap(),
    });
    raw
}

/// A live client reading a large answer slowly (and pinging) keeps its session, however long
/// the answer takes to drain.
#[test]
fn a_slow_but_live_reader_of_a_large_answer_keeps_its_session() {
    use std::io::Read;
    const SIZE: usize = 12 << 20;
    let (m, gw) = served();
    let big = m.list_from(vec!["x".repeat(SIZE)]).unwrap();
    gw.register("big", &big).unwrap();
    let raw = ask_for_big(gw.address());
    // About 3 MB/s: 4 s for the answer, ten heartbeat timeouts.
    let mut sock = std::net::TcpStream::from(
        std::os::fd::AsFd::as_fd(&raw.conn)
            .try_clone_to_owned()
            .unwrap(),
    );
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut last_ping = start;
    let (mut total, mut buf) = (0usize, vec![0u8; 32 * 1024]);
    while total < SIZE {
        assert!(start.elapsed() < BOUND, "{total} bytes in {BOUND:?}");
        if last_ping.elapsed() >= Duration::from_millis(100) {
            raw.conn
                .send_bytes(&postcard::to_stdvec(&Up::Ping).unwrap())
                .unwrap_or_else(|e| panic!("dropped after {total} bytes: {e}"));
            last_ping = std::time::Instant::now();
        }
        match sock.read(&mut buf) {
            Ok(0) => panic!("dropped after {total} bytes, {:?}", start.elapsed()),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("dropped after {total} bytes: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asks for a 12 MiB answer, reads none of it, and stops itself (heartbeat 400 ms).
fn stopped_reader((address, ready): (Address, Connection<u8>)) {
    let _raw = ask_for_big(&address);
    ready.send(1).unwrap();
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP)
        .unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// A client stopped with an answer waiting for it: its kernel takes bytes until its buffer is
/// full, then nothing; the session ends within a few heartbeats all the same.
#[test]
fn a_client_stopped_with_a_large_answer_waiting_has_its_session_ended() {
    let (m, gw) = served();
    let big = m.list_from(vec!["x".repeat(12 << 20)]).unwrap();
    gw.register("big", &big).unwrap();
    let (rx, tx) = procactor::Pipe::<u8>::simplex().unwrap();
    let p = common::reaped(
        procactor::Process::new(stopped_reader, (gw.address().clone(), tx))
            .start()
            .unwrap(),
    );
    assert_eq!(rx.recv_timeout(BOUND).unwrap(), 1);
    assert!(eventually(BOUND, || gw.sessions() == 1));
    let t = std::time::Instant::now();
    let ended = eventually(Duration::from_secs(10), || gw.sessions() == 0);
    let took = t.elapsed();
    let pid = rustix::process::Pid::from_raw(p.pid() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    assert!(
        ended,
        "a stopped client's session lived {took:?} (heartbeat 400 ms)"
    );
}
