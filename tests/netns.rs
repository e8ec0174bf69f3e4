//! Two hosts on one machine: network namespaces joined by a veth pair, a manager served by a
//! gateway in one, clients in the other. Through a relay that delays every byte by 20 ms each
//! way and with 1 % of the client's TCP segments dropped (nftables), everything is still correct;
//! with the link taken down, calls fail within their deadline and the server releases the
//! client's references after the heartbeat timeout.
//!
//! Needs root (CI runs as root, and installs iproute2 and nftables); elsewhere the tests say so
//! and pass, unless `PROCACTOR_REQUIRE_NETNS` is set. The namespaces are removed on every path.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{reaped, BOUND};
use procactor::connection::{Address, Client, Listener};
use procactor::manager::{DictProxy, ListProxy, RemoteManager, RemoteOptions};
use procactor::{Connection, Error, Manager, Pipe, Process};
use serde::{Deserialize, Serialize};

procactor::test_support!();

const KEY: &[u8] = b"netns tests";
const DELAY: Duration = Duration::from_millis(20);

/// Two namespaces and the veth pair between them; removed when dropped.
struct Hosts {
    server_ns: String,
    client_ns: String,
    client_if: String,
    server_ip: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn in_ns(ns: &str, cmd: &[&str]) -> bool {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(cmd);
    ip(&all)
}

impl Hosts {
    /// The two hosts, or `None` (and why) where this machine cannot make them.
    fn new(tag: &str) -> Option<Hosts> {
        let root = rustix::process::geteuid().is_root();
        let tools = Command::new("ip").arg("-V").output().is_ok();
        if !root || !tools {
            assert!(
                std::env::var_os("PROCACTOR_REQUIRE_NETNS").is_none(),
                "network namespaces are required (PROCACTOR_REQUIRE_NETNS) but this is not \
                 root with iproute2"
            );
            eprintln!("skipped: network namespaces need root and iproute2");
            return None;
        }
        let id = std::process::id() % 100_000;
        let net = id % 250;
        let h = Hosts {
            server_ns: format!("pa{id}{tag}s"),
            client_ns: format!("pa{id}{tag}c"),
            client_if: format!("pa{id}{tag}c"),
            server_ip: format!("10.77.{net}.1"),
        };
        let server_if = format!("pa{id}{tag}s");
        let client_ip = format!("10.77.{net}.2");
        let ok = ip(&["netns", "add", &h.server_ns])
            && ip(&["netns", "add", &h.client_ns])
            && ip(&[
                "link",
                "add",
                &server_if,
                "type",
                "veth",
                "peer",
                "name",
                &h.client_if,
            ])
            && ip(&["link", "set", &server_if, "netns", &h.server_ns])
            && ip(&["link", "set", &h.client_if, "netns", &h.client_ns])
            && in_ns(
                &h.server_ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{}/24", h.server_ip),
                    "dev",
                    &server_if,
                ],
            )
            && in_ns(
                &h.client_ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{client_ip}/24"),
                    "dev",
                    &h.client_if,
                ],
            )
            && in_ns(&h.server_ns, &["ip", "link", "set", &server_if, "up"])
            && in_ns(&h.client_ns, &["ip", "link", "set", &h.client_if, "up"])
            && in_ns(&h.server_ns, &["ip", "link", "set", "lo", "up"])
            && in_ns(&h.client_ns, &["ip", "link", "set", "lo", "up"]);
        assert!(ok, "could not make the namespaces and their link");
        Some(h)
    }

    /// Drops `percent` % of the client's outgoing TCP segments.
    fn lose(&self, percent: u32) {
        let rule = format!("meta l4proto tcp numgen random mod 100 < {percent} drop");
        let ok = in_ns(
            &self.client_ns,
            &["nft", "add", "table", "inet", "procactor"],
        ) && in_ns(
            &self.client_ns,
            &[
                "nft",
                "add",
                "chain",
                "inet",
                "procactor",
                "out",
                "{ type filter hook output priority 0; }",
            ],
        ) && in_ns(
            &self.client_ns,
            &["nft", "add", "rule", "inet", "procactor", "out", &rule],
        );
        assert!(
            ok,
            "nft could not add the loss rule (is nftables installed?)"
        );
    }

    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        assert!(in_ns(
            &self.client_ns,
            &["ip", "link", "set", &self.client_if, state]
        ));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.client_ns]);
    }
}

/// Moves this process's calling thread (and the threads and processes it starts from now on)
/// into the named network namespace.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: setns on a namespace descriptor we hold open for the call.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Forwards every connection to `to`, each byte delivered `DELAY` after it arrived, both ways.
fn relay(listener: TcpListener, to: SocketAddr) {
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(to) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        for (from, into) in [
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
            (server.try_clone().unwrap(), client.try_clone().unwrap()),
        ] {
            delayed_pipe(from, into);
        }
    }
}

fn delayed_pipe(mut from: TcpStream, mut into: TcpStream) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0
                || tx
                    .send((Instant::now() + DELAY, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if into.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = into.shutdown(std::net::Shutdown::Write);
    });
}

#[derive(Serialize, Deserialize, Debug)]
enum Report {
    Ready { gateway: Address, relay: Address },
    Objects(usize),
    ReleasedAfter(Duration),
}

#[derive(Serialize, Deserialize, Debug)]
enum Cmd {
    Count,
    AwaitEmpty,
    Stop,
}

/// The server host: a manager, its gateway and a delaying relay in front of it.
fn server_host((ns, ip, report, control): (String, String, Connection<Report>, Connection<Cmd>)) {
    enter(&ns);
    let m = Manager::start().unwrap();
    let gw = m
        .serve(Listener::bind(format!("{ip}:0")).unwrap().authkey(KEY))
        .unwrap();
    gw.allow::<ListProxy<u64>>().unwrap();
    gw.allow::<DictProxy<u64, String>>().unwrap();
    let Address::Tcp(to) = gw.address().clone() else {
        unreachable!()
    };
    let relay_listener = TcpListener::bind(format!("{ip}:0")).unwrap();
    let relay_addr = relay_listener.local_addr().unwrap();
    std::thread::spawn(move || relay(relay_listener, to));
    report
        .send(Report::Ready {
            gateway: gw.address().clone(),
            relay: Address::Tcp(relay_addr),
        })
        .unwrap();
    while let Ok(cmd) = control.recv_timeout(BOUND) {
        match cmd {
            Cmd::Count => report
                .send(Report::Objects(m.object_count().unwrap()))
                .unwrap(),
            Cmd::AwaitEmpty => {
                let t = Instant::now();
                while m.object_count().unwrap() > 0 && t.elapsed() < BOUND {
                    std::thread::sleep(Duration::from_millis(20));
                }
                report.send(Report::ReleasedAfter(t.elapsed())).unwrap();
            }
            Cmd::Stop => break,
        }
    }
}

fn options() -> RemoteOptions {
    RemoteOptions {
        call_timeout: Duration::from_secs(3),
        heartbeat_timeout: Duration::from_secs(2),
    }
}

/// The client host's work over a slow, lossy path: every answer checked.
fn client_work((ns, address): (String, Address)) -> Result<(usize, usize), String> {
    enter(&ns);
    let r = RemoteManager::connect_with(
        &Client::new(&address).authkey(KEY).timeout(BOUND),
        RemoteOptions {
            call_timeout: BOUND,
            ..options()
        },
    )
    .map_err(|e| e.to_string())?;
    let l = r.list::<u64>().map_err(|e| e.to_string())?;
    for i in 0..200 {
        l.append(i).map_err(|e| e.to_string())?;
    }
    let d = r.dict::<u64, String>().map_err(|e| e.to_string())?;
    for i in 0..50 {
        d.insert(i, format!("v{i}")).map_err(|e| e.to_string())?;
    }
    for i in 0..50 {
        if d.get(&i).map_err(|e| e.to_string())? != Some(format!("v{i}")) {
            return Err(format!("wrong value for {i}"));
        }
    }
    let items = l.snapshot().map_err(|e| e.to_string())?;
    if items != (0..200).collect::<Vec<_>>() {
        return Err("the list is not what was appended".into());
    }
    Ok((items.len(), d.len().map_err(|e| e.to_string())?))
}

/// Holds two objects, then makes one call when told (after the link went down).
fn client_cut((ns, address, go, report): (String, Address, Connection<()>, Connection<String>)) {
    enter(&ns);
    let r = RemoteManager::connect_with(
        &Client::new(&address).authkey(KEY).timeout(BOUND),
        options(),
    )
    .unwrap();
    let l = r.list::<u64>().unwrap();
    l.extend(0..10u64).unwrap();
    let _d = r.dict::<u64, String>().unwrap();
    report.send("holding".into()).unwrap();
    go.recv_timeout(BOUND).unwrap();
    let t = Instant::now();
    let outcome = match l.len() {
        Ok(n) => format!("answered {n}"),
        Err(e) if e.is_timeout() || matches!(e, Error::Disconnected) => {
            format!("failed after {} ms", t.elapsed().as_millis())
        }
        Err(e) => format!("failed otherwise: {e}"),
    };
    report.send(outcome).unwrap();
    std::thread::sleep(Duration::from_secs(30));
}

fn start_server(
    h: &Hosts,
) -> (
    common::Reaped<()>,
    Connection<Report>,
    Connection<Cmd>,
    Address,
    Address,
) {
    let (report_rx, report_tx) = Pipe::<Report>::simplex().unwrap();
    let (control_rx, control_tx) = Pipe::<Cmd>::simplex().unwrap();
    let p = reaped(
        Process::new(
            server_host,
            (
                h.server_ns.clone(),
                h.server_ip.clone(),
                report_tx,
                control_rx,
            ),
        )
        .start()
        .unwrap(),
    );
    let Report::Ready { gateway, relay } = report_rx.recv_timeout(BOUND).unwrap() else {
        panic!("the server did not start")
    };
    (p, report_rx, control_tx, gateway, relay)
}

#[test]
fn a_remote_manager_through_20ms_delay_and_1_percent_loss_is_correct() {
    let Some(h) = Hosts::new("d") else {
        return;
    };
    h.lose(1);
    let (_server, report, control, _gateway, relay) = start_server(&h);
    let t = Instant::now();
    let client = reaped(
        Process::new(client_work, (h.client_ns.clone(), relay))
            .start()
            .unwrap(),
    );
    let got = client.join_timeout(BOUND * 4).unwrap();
    assert_eq!(got, Ok((200, 50)));
    // 20 ms each way: every waiting call costs at least a 40 ms round trip.
    assert!(
        t.elapsed() >= DELAY * 2 * 50,
        "{:?}: was the relay in the path?",
        t.elapsed()
    );
    // The client is gone: its objects are released.
    control.send(Cmd::AwaitEmpty).unwrap();
    let Report::ReleasedAfter(_) = report.recv_timeout(BOUND * 2).unwrap() else {
        panic!("no report")
    };
    control.send(Cmd::Stop).unwrap();
}

#[test]
fn a_link_taken_down_fails_calls_in_their_deadline_and_releases_references() {
    let Some(h) = Hosts::new("l") else {
        return;
    };
    let (_server, report, control, gateway, _relay) = start_server(&h);
    let (go_rx, go_tx) = Pipe::<()>::simplex().unwrap();
    let (said_rx, said_tx) = Pipe::<String>::simplex().unwrap();
    let _client = reaped(
        Process::new(client_cut, (h.client_ns.clone(), gateway, go_rx, said_tx))
            .start()
            .unwrap(),
    );
    assert_eq!(said_rx.recv_timeout(BOUND).unwrap(), "holding");
    control.send(Cmd::Count).unwrap();
    assert!(matches!(
        report.recv_timeout(BOUND).unwrap(),
        Report::Objects(2)
    ));
    // The link goes down: no FIN, no RST reaches either side.
    h.link(false);
    go_tx.send(()).unwrap();
    let said = said_rx.recv_timeout(BOUND).unwrap();
    let ms: u64 = said
        .strip_prefix("failed after ")
        .and_then(|s| s.strip_suffix(" ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the call did not fail: {said}"));
    assert!(ms <= 3_500, "failed after {ms} ms (deadline 3 s)");
    // The server releases the client's references after its heartbeat timeout (2 s).
    control.send(Cmd::AwaitEmpty).unwrap();
    let Report::ReleasedAfter(after) = report.recv_timeout(BOUND).unwrap() else {
        panic!("no report")
    };
    assert!(after < Duration::from_secs(6), "released after {after:?}");
    control.send(Cmd::Count).unwrap();
    assert!(matches!(
        report.recv_timeout(BOUND).unwrap(),
        Report::Objects(0)
    ));
    control.send(Cmd::Stop).unwrap();
}

/// Connections a hostile host opens and never speaks on.
const SILENT: usize = 1000;

/// From the client host: silent connections, garbage, a 2 GiB header and a wrong key, then a
/// real client, which is served at once all the same. What each part saw, or why it failed.
fn hostile_host((ns, address): (String, Address)) -> Result<Duration, String> {
    enter(&ns);
    let Address::Tcp(addr) = address.clone() else {
        return Err("not TCP".into());
    };
    // A thousand descriptors and more: up to the hard limit.
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(|e| e.to_string())?;
    let silent: Vec<TcpStream> = (0..SILENT)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    if silent.len() < SILENT {
        return Err(format!("only {} silent connections", silent.len()));
    }
    let mut garbage = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    garbage.write_all(&[0xa5; 256]).map_err(|e| e.to_string())?;
    let mut huge = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    huge.write_all(&0x7fff_fff0u32.to_be_bytes())
        .map_err(|e| e.to_string())?;
    // After the handshake, with the key: a sealed frame announcing 1 TiB. The manager drops
    // that session, unread.
    let oversized = Client::new(&address)
        .authkey(KEY)
        .timeout(BOUND)
        .connect::<()>()
        .map_err(|e| e.to_string())?;
    rustix::io::write(
        std::os::fd::AsFd::as_fd(&oversized),
        &(1u64 << 40).to_be_bytes(),
    )
    .map_err(|e| e.to_string())?;
    match oversized.recv_bytes_timeout(BOUND) {
        Err(Error::Disconnected) => {}
        other => return Err(format!("an oversized frame got {other:?}")),
    }
    match RemoteManager::connect(&Client::new(&address).authkey(b"a wrong key").timeout(BOUND)) {
        Err(Error::Authentication(_)) => {}
        other => return Err(format!("a wrong key got {other:?}")),
    }
    let t = Instant::now();
    let r = RemoteManager::connect_with(
        &Client::new(&address).authkey(KEY).timeout(BOUND),
        options(),
    )
    .map_err(|e| e.to_string())?;
    let l = r.list::<u64>().map_err(|e| e.to_string())?;
    l.append(7).map_err(|e| e.to_string())?;
    if l.len().map_err(|e| e.to_string())? != 1 {
        return Err("wrong length".into());
    }
    let took = t.elapsed();
    drop((silent, garbage, huge));
    Ok(took)
}

#[test]
fn hostile_clients_on_another_host_hold_up_nobody() {
    let Some(h) = Hosts::new("h") else {
        return;
    };
    let (_server, _report, control, gateway, _relay) = start_server(&h);
    let p = reaped(
        Process::new(hostile_host, (h.client_ns.clone(), gateway))
            .start()
            .unwrap(),
    );
    let took = p.join_timeout(BOUND).unwrap().unwrap();
    assert!(
        took < Duration::from_secs(2),
        "the real client was served after {took:?}"
    );
    control.send(Cmd::Stop).unwrap();
}
