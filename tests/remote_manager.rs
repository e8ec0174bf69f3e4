//! Remote managers: a `Manager` served by a `Gateway`, reached by `RemoteManager`s over
//! encrypted TCP. Every proxy kind used remotely, published objects, what may not cross hosts,
//! deadlines, and the failures: a client killed or stopped (its references released after the
//! heartbeat timeout), a server stopped (calls fail in bounded time). Every wait is bounded.

mod common;

procactor::test_support!();

use std::time::{Duration, Instant};

use common::{eventually, reaped, BOUND};
use procactor::connection::{Address, Client, Listener};
use procactor::manager::{
    DictProxy, ListProxy, RemoteManager, RemoteOptions, SetProxy, ValueProxy,
};
use procactor::{Error, Manager, Pipe, Process};

const KEY: &[u8] = b"remote manager tests";

fn client(address: &Address) -> Client {
    Client::new(address).authkey(KEY).timeout(BOUND)
}

fn quick() -> RemoteOptions {
    RemoteOptions {
        call_timeout: Duration::from_secs(2),
        heartbeat_timeout: Duration::from_millis(800),
    }
}

#[procactor::entry(name = "remote_manager_tests::double")]
fn double(n: &mut u64) {
    *n *= 2;
}

fn triple(n: &mut u64) {
    *n *= 3;
}

#[procactor::entry(name = "remote_manager::longest_first")]
#[allow(clippy::ptr_arg)] // the type a sort of a `ListProxy<String>` takes
fn longest_first(a: &String, b: &String) -> std::cmp::Ordering {
    b.len().cmp(&a.len())
}

#[allow(clippy::ptr_arg)]
fn shortest_first(a: &String, b: &String) -> std::cmp::Ordering {
    a.len().cmp(&b.len())
}

#[test]
fn remote_lists_count_reverse_and_sort_by_a_named_function() {
    let m = Manager::start().unwrap();
    let gw = m
        .serve(Listener::bind("127.0.0.1:0").unwrap().authkey(KEY))
        .unwrap();
    gw.allow::<ListProxy<String>>().unwrap();
    let r = RemoteManager::connect(&client(gw.address())).unwrap();
    let l = r.list::<String>().unwrap();
    l.extend(["bb", "a", "ccc", "a"].map(String::from)).unwrap();
    assert_eq!(l.count(&"a".to_string()).unwrap(), 2);
    l.reverse().unwrap();
    assert_eq!(l.snapshot().unwrap(), ["a", "ccc", "a", "bb"]);
    l.sort_by(longest_first).unwrap();
    assert_eq!(l.snapshot().unwrap(), ["ccc", "bb", "a", "a"]);
    // T's own order, or a function without a name, has no name to go by: refused at once.
    assert!(matches!(l.sort(), Err(Error::Unsupported(_))));
    assert!(l.sort_by(shortest_first).is_err());
    assert_eq!(l.snapshot().unwrap(), ["ccc", "bb", "a", "a"]);
    // Sets, created remotely once allowed.
    assert!(r.set::<u64>().is_err());
    gw.allow::<SetProxy<u64>>().unwrap();
    let s = r.set::<u64>().unwrap();
    s.update([1, 2, 3]).unwrap();
    assert!(s.add(4).unwrap());
    assert!(s.discard(&1).unwrap());
    assert_eq!(s.len().unwrap(), 3);
    assert_eq!(s.snapshot().unwrap(), [2, 3, 4].into_iter().collect());
}

#[test]
fn every_proxy_kind_works_remotely() {
    let m = Manager::start().unwrap();
    let gw = m
        .serve(Listener::bind("127.0.0.1:0").unwrap().authkey(KEY))
        .unwrap();
    gw.allow::<ListProxy<String>>().unwrap();
    gw.allow::<DictProxy<String, u64>>().unwrap();
    gw.allow::<ValueProxy<u64>>().unwrap();
    let r = RemoteManager::connect(&client(gw.address())).unwrap();
    assert_eq!(r.manager_pid(), m.pid());

    let l = r.list::<String>().unwrap();
    l.append("a".into()).unwrap();
    l.extend(vec!["b".into(), "c".into()]).unwrap();
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.get(1).unwrap(), "b");
    assert_eq!(l.pop().unwrap(), "c");
    assert!(matches!(
        l.get(9),
        Err(Error::IndexOutOfRange { index: 9, len: 2 })
    ));
    assert_eq!(l.snapshot().unwrap(), ["a", "b"]);

    let d = r.dict::<String, u64>().unwrap();
    d.insert("x".into(), 1).unwrap();
    d.upsert(&"x".to_string(), 0, |n| *n += 1).unwrap_err(); // a closure has no name
    assert_eq!(d.get(&"x".to_string()).unwrap(), Some(1));
    assert_eq!(d.len().unwrap(), 1);

    let v = r.value(21u64).unwrap();
    assert_eq!(
        v.update(double).unwrap(),
        42,
        "a named function crosses hosts"
    );
    let e = v.update(triple).unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(w) if w.contains("#[procactor::entry]")),
        "{e}"
    );
    assert_eq!(v.get().unwrap(), 42, "the refused update was not applied");

    let ns = r.namespace().unwrap();
    ns.set("epoch", &3u32).unwrap();
    assert_eq!(ns.get::<u32>("epoch").unwrap(), 3);

    // The objects live in the manager; dropping the proxies releases them.
    assert_eq!(m.object_count().unwrap(), 4);
    drop((l, d, v, ns));
    assert!(eventually(BOUND, || m.object_count().unwrap() == 0));
}

#[test]
fn published_objects_by_name_and_what_is_refused() {
    let m = Manager::start().unwrap();
    let gw = m
        .serve(Listener::bind("127.0.0.1:0").unwrap().authkey(KEY))
        .unwrap();
    let jobs = m.list_from(vec![1u32, 2, 3]).unwrap();
    gw.register("jobs", &jobs).unwrap();
    let r = RemoteManager::connect(&client(gw.address())).unwrap();
    let remote_jobs: ListProxy<u32> = r.get("jobs").unwrap();
    remote_jobs.append(4).unwrap();
    assert_eq!(remote_jobs.len().unwrap(), 4); // a call that waits: the append is applied
    assert_eq!(jobs.snapshot().unwrap(), [1, 2, 3, 4], "the one object");

    assert!(matches!(
        r.get::<ListProxy<u32>>("nothing"),
        Err(Error::NotFound(_))
    ));
    let e = r.get::<ListProxy<String>>("jobs").unwrap_err();
    assert!(e.to_string().contains("ListProxy<u32>"), "{e}");
    // A kind the server did not allow.
    let e = r.list::<u8>().unwrap_err();
    assert!(e.to_string().contains("allow"), "{e}");
    // A remote proxy does not travel on to another process.
    let (a, _b) = Pipe::<ListProxy<u32>>::duplex().unwrap();
    assert!(a.send(remote_jobs.clone()).is_err());
    // Descriptors do not cross hosts.
    let q = procactor::Queue::<u8>::new().unwrap();
    let ns = r.namespace().unwrap();
    assert!(matches!(ns.set("q", &q), Err(Error::Unsupported(_))));
    // A wrong key gets nothing.
    let e = RemoteManager::connect(&Client::new(gw.address()).authkey(b"wrong")).unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e}");
    // A plaintext listener cannot serve a manager.
    assert!(m
        .serve(
            Listener::bind("127.0.0.1:0")
                .unwrap()
                .authkey(KEY)
                .plaintext()
        )
        .is_err());
}

/// Connects, makes two objects, reports, then waits to be killed or stopped.
fn remote_user((address, report): (Address, procactor::Connection<usize>)) {
    let r = RemoteManager::connect_with(&client(&address), quick()).unwrap();
    let l = r.list::<u64>().unwrap();
    l.extend(0..100u64).unwrap();
    let v = r.value(1u64).unwrap();
    report.send(l.len().unwrap()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop((l, v));
}

fn served() -> (Manager, procactor::manager::Gateway) {
    let m = Manager::start().unwrap();
    let gw = m
        .serve(Listener::bind("127.0.0.1:0").unwrap().authkey(KEY))
        .unwrap();
    gw.allow::<ListProxy<u64>>().unwrap();
    gw.allow::<ValueProxy<u64>>().unwrap();
    (m, gw)
}

#[test]
fn a_client_killed_or_stopped_has_its_references_released() {
    let (m, gw) = served();
    for stop in [false, true] {
        let (rx, tx) = Pipe::<usize>::simplex().unwrap();
        let p = reaped(
            Process::new(remote_user, (gw.address().clone(), tx))
                .start()
                .unwrap(),
        );
        assert_eq!(rx.recv_timeout(BOUND).unwrap(), 100);
        assert_eq!(m.object_count().unwrap(), 2);
        let pid = rustix::process::Pid::from_raw(p.pid() as i32).unwrap();
        let t = Instant::now();
        if stop {
            // No FIN, no RST: only the heartbeat can tell.
            rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
        } else {
            p.kill().unwrap();
        }
        assert!(
            eventually(BOUND, || m.object_count().unwrap() == 0),
            "references not released"
        );
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "released after {took:?} (heartbeat 800 ms)"
        );
        if stop {
            // Its last ping may have come up to a ping interval (200-400 ms) before the stop:
            // released no sooner than the rest of the 800 ms (a hang-up would be at once).
            assert!(
                took >= Duration::from_millis(350),
                "released before the timeout: {took:?}"
            );
        }
        drop(p);
    }
    assert!(eventually(BOUND, || gw.sessions() == 0));
}

/// Whether `pid` is stopped (state `T` in /proc).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('T')))
        .unwrap_or(false)
}

/// Serves a manager and reports its gateway's address; then waits to be stopped or killed.
fn server(report: procactor::Connection<Address>) {
    let (_m, gw) = served();
    report.send(gw.address().clone()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_server_stopped_or_killed_is_an_error_in_bounded_time_never_a_hang() {
    for stop in [true, false] {
        let (rx, tx) = Pipe::<Address>::simplex().unwrap();
        let p = reaped(Process::new(server, tx).start().unwrap());
        let address = rx.recv_timeout(BOUND).unwrap();
        let r = RemoteManager::connect_with(&client(&address), quick()).unwrap();
        let l = r.list::<u64>().unwrap();
        l.append(1).unwrap();
        assert_eq!(l.len().unwrap(), 1);
        // The manager's process serves the session: stopped, nothing answers; the serving
        // program killed, its manager ends with it.
        let manager = r.manager_pid();
        let pid = rustix::process::Pid::from_raw(manager as i32).unwrap();
        // A signal takes effect a little after `kill` returns: the server could still answer
        // a call made at once. Wait until it is stopped, or gone.
        if stop {
            rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
            assert!(eventually(BOUND, || stopped(manager)), "not stopped");
        } else {
            p.kill().unwrap();
            let _ = p.join_timeout(BOUND);
        }
        let t = Instant::now();
        let e = l.len().unwrap_err();
        assert!(e.is_timeout() || matches!(e, Error::Disconnected), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Reported to the client within the heartbeat timeout, and every later call fails at once.
        assert!(eventually(Duration::from_secs(5), || !r.is_connected()));
        let t = Instant::now();
        assert!(matches!(l.len(), Err(Error::Disconnected)));
        assert!(t.elapsed() < Duration::from_millis(100));
        if stop {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            let _ = p.kill();
        }
        drop(p);
    }
}
