//! The `peers` bench: procactor on the workloads of shared/bench/WORKLOADS.md, one JSON line per
//! figure on stdout (diagnostics on stderr), so `../shared/bench/compare.py` can set it beside
//! CPython's multiprocessing, procspawn, raw ipc-channel and the kernel floor.
//!
//! `cargo bench --bench peers -- [--quick] [--only spawn,pipe_rtt,...]`
//!
//! Every workload checks its result and the process exits non-zero if one is wrong.

use std::time::{Duration, Instant};

use procactor::connection::{Address, Client, Listener};
use procactor::manager::RemoteManager;
use procactor::{
    manager::DictProxy, manager::ListProxy, pool::as_completed, shared::RawValue, ActorRef,
    Connection, Executor, Lock, Manager, Pipe, Pool, Process, Queue, StartMethod,
};

const KEY: &[u8] = b"bench authkey";

const CHUNK: usize = 1 << 20;

fn emit(system: &str, workload: &str, value: f64, unit: &str, better: &str) {
    println!(
        "{{\"system\": \"{system}\", \"workload\": \"{workload}\", \"value\": {value:.4}, \"unit\": \"{unit}\", \"better\": \"{better}\"}}"
    );
}

fn noop(_: ()) {}

fn echo(conn: Connection<u64>) -> u64 {
    let mut n = 0;
    while let Ok(v) = conn.recv() {
        if conn.send(v).is_err() {
            break;
        }
        n += 1;
    }
    n
}

fn bulk_sink((conn, chunks): (Connection<u64>, u64)) {
    // One receive buffer, reused (Python's recv_bytes_into): no fresh pages per message.
    let mut buf = Vec::new();
    let mut total = 0u64;
    for _ in 0..chunks {
        total += conn.recv_bytes_into(&mut buf).expect("bulk: recv") as u64;
    }
    conn.send(total).expect("bulk: ack");
}

fn spawn(quick: bool) -> Result<(), String> {
    let n = if quick { 20 } else { 50 };
    for (system, method) in [
        ("procactor", StartMethod::Spawn),
        ("procactor-fork", StartMethod::Fork),
        ("procactor-forkserver", StartMethod::ForkServer),
    ] {
        // One warm start (the fork server starts on first use), then n timed.
        Process::new(noop, ())
            .start_method(method)
            .start()
            .and_then(|p| p.join())
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        for _ in 0..n {
            let p = Process::new(noop, ())
                .start_method(method)
                .start()
                .map_err(|e| e.to_string())?;
            p.join().map_err(|e| e.to_string())?;
        }
        emit(
            system,
            "spawn",
            t.elapsed().as_secs_f64() / n as f64 * 1e3,
            "ms/process",
            "lower",
        );
    }
    Ok(())
}

fn pipe_rtt(quick: bool) -> Result<(), String> {
    let rounds: u64 = if quick { 5_000 } else { 20_000 };
    let (a, b) = Pipe::<u64>::duplex().map_err(|e| e.to_string())?;
    let p = Process::new(echo, b).start().map_err(|e| e.to_string())?;
    let e = |e: procactor::Error| e.to_string();
    a.send(0).map_err(e)?;
    if a.recv().map_err(e)? != 0 {
        return Err("warm round returned a different value".into());
    }
    let t = Instant::now();
    for i in 0..rounds - 1 {
        a.send(i).map_err(e)?;
        if a.recv().map_err(e)? != i {
            return Err(format!("round {i} echoed a different value"));
        }
    }
    let us = t.elapsed().as_secs_f64() / (rounds - 1) as f64 * 1e6;
    drop(a);
    let served = p.join().map_err(e)?;
    if served != rounds {
        return Err(format!("echo served {served} rounds, expected {rounds}"));
    }
    emit("procactor", "pipe_rtt", us, "us/roundtrip", "lower");
    Ok(())
}

fn pipe_bulk(quick: bool) -> Result<(), String> {
    let chunks: u64 = if quick { 64 } else { 256 };
    let chunk = vec![b'x'; CHUNK];
    let e = |e: procactor::Error| e.to_string();
    let (a, b) = Pipe::<u64>::duplex().map_err(e)?;
    let p = Process::new(bulk_sink, (b, chunks)).start().map_err(e)?;
    let t = Instant::now();
    for _ in 0..chunks {
        a.send_bytes(&chunk).map_err(e)?;
    }
    let total = a.recv().map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    p.join().map_err(e)?;
    if total != chunks * CHUNK as u64 {
        return Err(format!(
            "sink counted {total} bytes, expected {}",
            chunks * CHUNK as u64
        ));
    }
    emit(
        "procactor",
        "pipe_bulk",
        total as f64 / dt / 1e6,
        "MB/s",
        "higher",
    );
    Ok(())
}

/// The counter actor of `actor_ask` and `actor_tell`.
struct Counter {
    total: u64,
}

#[procactor::actor]
impl Counter {
    fn init(_: ()) -> Self {
        Counter { total: 0 }
    }

    pub fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }

    pub fn get(&self) -> u64 {
        self.total
    }
}

/// The idle actor of `spawn_many`: answers its pid.
struct Idle;

#[procactor::actor]
impl Idle {
    fn init(_: ()) -> Self {
        Idle
    }

    pub fn getpid(&self) -> u32 {
        std::process::id()
    }
}

fn actor_ask(quick: bool) -> Result<(), String> {
    let rounds: u64 = if quick { 5_000 } else { 20_000 };
    let e = |e: procactor::Error| e.to_string();
    let c: ActorRef<Counter> = procactor::spawn::<Counter>(()).map_err(e)?;
    c.add(0).map_err(e)?;
    let t = Instant::now();
    for _ in 0..rounds {
        c.add(1).map_err(e)?;
    }
    let dt = t.elapsed().as_secs_f64();
    let total = c.get().map_err(e)?;
    c.stop().map_err(e)?;
    c.join().map_err(e)?;
    if total != rounds {
        return Err(format!("counter says {total}, expected {rounds}"));
    }
    emit(
        "procactor",
        "actor_ask",
        dt / rounds as f64 * 1e6,
        "us/call",
        "lower",
    );
    Ok(())
}

fn actor_tell(quick: bool) -> Result<(), String> {
    let n: u64 = if quick { 50_000 } else { 200_000 };
    let e = |e: procactor::Error| e.to_string();
    let c: ActorRef<Counter> = procactor::spawn::<Counter>(()).map_err(e)?;
    let t = Instant::now();
    for _ in 0..n {
        c.cast().add(1).map_err(e)?;
    }
    let total = c.get().map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    c.stop().map_err(e)?;
    c.join().map_err(e)?;
    if total != n {
        return Err(format!("counter says {total}, expected {n}"));
    }
    emit("procactor", "actor_tell", n as f64 / dt, "msgs/s", "higher");
    Ok(())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn spawn_many(quick: bool) -> Result<(), String> {
    let n = if quick { 50 } else { 200 };
    // The default start method, and the fork server (whose first use starts it: done before the
    // clock starts, as for `spawn`).
    for (system, method) in [
        ("procactor", StartMethod::Spawn),
        ("procactor-forkserver", StartMethod::ForkServer),
    ] {
        procactor::set_start_method(method);
        let warm = procactor::spawn::<Idle>(()).map_err(|e| e.to_string());
        let measured = warm.and_then(|w| {
            w.stop().map_err(|e| e.to_string())?;
            w.join().map_err(|e| e.to_string())?;
            spawn_many_once(system, n)
        });
        procactor::set_start_method(StartMethod::Spawn);
        measured?;
    }
    Ok(())
}

fn spawn_many_once(system: &str, n: usize) -> Result<(), String> {
    let e = |e: procactor::Error| e.to_string();
    let t = Instant::now();
    let actors: Vec<ActorRef<Idle>> =
        procactor::actor::spawn_many::<Idle>(std::iter::repeat_n((), n)).map_err(e)?;
    let pids: Vec<u32> = actors
        .iter()
        .map(|a| a.getpid())
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    if pids.iter().zip(&actors).any(|(p, a)| *p != a.pid()) {
        return Err("an actor answered with another pid".into());
    }
    let mut rss: Vec<u64> = pids.iter().filter_map(|p| rss_kib(*p)).collect();
    rss.sort_unstable();
    for a in &actors {
        a.stop().map_err(e)?;
    }
    for a in &actors {
        a.join().map_err(e)?;
    }
    if rss.len() != n {
        return Err("could not read every actor's VmRSS".into());
    }
    emit(system, "spawn_many", dt * 1e3, "ms", "lower");
    emit(
        system,
        "idle_rss",
        rss[rss.len() / 2] as f64 / 1024.0,
        "MiB/process",
        "lower",
    );
    Ok(())
}

/// The start methods the queue and lock workloads run with: the default, and fork (CPython's
/// peer forks too), since these timings include starting the processes.
const METHODS: [(&str, StartMethod); 2] = [
    ("procactor", StartMethod::Spawn),
    ("procactor-fork", StartMethod::Fork),
];

fn producer((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).expect("producer: put");
    }
}

fn consumer((q, n, out): (Queue<u64>, u64, Queue<u64>)) {
    let mut sum = 0;
    for _ in 0..n {
        sum += q.get().expect("consumer: get");
    }
    out.put(sum).expect("consumer: out");
}

fn queue(workload: &str, producers: u64, consumers: u64, quick: bool) -> Result<(), String> {
    let n_total: u64 = if quick { 40_000 } else { 200_000 };
    let e = |e: procactor::Error| e.to_string();
    for (system, method) in METHODS {
        let q = Queue::<u64>::new().map_err(e)?;
        let out = Queue::<u64>::new().map_err(e)?;
        let (per_p, per_c) = (n_total / producers, n_total / consumers);
        let t = Instant::now();
        let mut ps = Vec::new();
        for _ in 0..producers {
            ps.push(
                Process::new(producer, (q.clone(), per_p))
                    .start_method(method)
                    .start()
                    .map_err(e)?,
            );
        }
        for _ in 0..consumers {
            ps.push(
                Process::new(consumer, (q.clone(), per_c, out.clone()))
                    .start_method(method)
                    .start()
                    .map_err(e)?,
            );
        }
        let mut sum = 0;
        for _ in 0..consumers {
            sum += out.get().map_err(e)?;
        }
        let dt = t.elapsed().as_secs_f64();
        for p in ps {
            p.join().map_err(e)?;
        }
        if sum != producers * (per_p * (per_p - 1) / 2) {
            return Err(format!("{workload}: the consumers summed {sum}"));
        }
        emit(system, workload, n_total as f64 / dt, "msgs/s", "higher");
    }
    Ok(())
}

fn queue_1p1c(quick: bool) -> Result<(), String> {
    queue("queue_1p1c", 1, 1, quick)
}

fn queue_4p4c(quick: bool) -> Result<(), String> {
    queue("queue_4p4c", 4, 4, quick)
}

fn locked_incr((v, lock, n): (RawValue<u64>, Lock, u64)) {
    for _ in 0..n {
        let _g = lock.acquire().expect("lock");
        v.set(v.get() + 1);
    }
}

fn lock_counter(quick: bool) -> Result<(), String> {
    let per: u64 = if quick { 10_000 } else { 50_000 };
    let procs = 4;
    let e = |e: procactor::Error| e.to_string();
    for (system, method) in METHODS {
        let v = RawValue::new(0u64).map_err(e)?;
        let lock = Lock::new().map_err(e)?;
        let t = Instant::now();
        let ps = (0..procs)
            .map(|_| {
                Process::new(locked_incr, (v.clone(), lock.clone(), per))
                    .start_method(method)
                    .start()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        for p in ps {
            p.join().map_err(e)?;
        }
        let dt = t.elapsed().as_secs_f64();
        if v.get() != procs * per {
            return Err(format!(
                "lock_counter: {} increments, not {}",
                v.get(),
                procs * per
            ));
        }
        emit(
            system,
            "lock_counter",
            (procs * per) as f64 / dt,
            "incr/s",
            "higher",
        );
    }
    // The uncontended cost, in one process (no syscall: tens of nanoseconds).
    let lock = Lock::new().map_err(e)?;
    let n = 1_000_000;
    let t = Instant::now();
    for _ in 0..n {
        drop(std::hint::black_box(lock.acquire().map_err(e)?));
    }
    let ns = t.elapsed().as_secs_f64() / n as f64 * 1e9;
    eprintln!("peers: uncontended Lock acquire+release: {ns:.1} ns");
    emit(
        "procactor",
        "lock_uncontended",
        ns,
        "ns/acquire+release",
        "lower",
    );
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

/// python_mp.py's busy(n), translated exactly; black_box keeps the loop from being folded.
#[inline(never)]
fn busy(n: u64) -> u64 {
    let n = std::hint::black_box(n);
    let mut acc: u64 = 0;
    for i in 0..n {
        acc = (acc * 31 + i) % 1_000_003;
    }
    std::hint::black_box(acc)
}

fn pool_map_small(quick: bool) -> Result<(), String> {
    let n: u64 = if quick { 200_000 } else { 1_000_000 };
    let e = |e: procactor::Error| e.to_string();
    let pool = Pool::new(procactor::cpu_count()).map_err(e)?;
    let t = Instant::now();
    let r = pool.map(square, 0..n).map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    drop(pool);
    if r.len() as u64 != n || r[r.len() - 1] != (n - 1) * (n - 1) {
        return Err("pool_map_small: wrong results".into());
    }
    emit(
        "procactor",
        "pool_map_small",
        n as f64 / dt,
        "items/s",
        "higher",
    );
    Ok(())
}

fn pool_map_cpu(quick: bool) -> Result<(), String> {
    let tasks = if quick { 200 } else { 1000 };
    let work = 20_000u64;
    let e = |e: procactor::Error| e.to_string();
    let t = Instant::now();
    let seq: Vec<u64> = (0..tasks).map(|_| busy(work)).collect();
    let t_seq = t.elapsed().as_secs_f64();
    let pool = Pool::new(procactor::cpu_count()).map_err(e)?;
    let t = Instant::now();
    let par = pool.map(busy, vec![work; tasks]).map_err(e)?;
    let t_par = t.elapsed().as_secs_f64();
    drop(pool);
    if seq != par {
        return Err("pool_map_cpu: results differ from the sequential run".into());
    }
    emit(
        "procactor",
        "pool_map_cpu",
        t_seq / t_par,
        "x speedup",
        "higher",
    );
    Ok(())
}

fn pool_apply_async(quick: bool) -> Result<(), String> {
    let n: u64 = if quick { 2_000 } else { 10_000 };
    let e = |e: procactor::Error| e.to_string();
    let pool = Pool::new(procactor::cpu_count()).map_err(e)?;
    let t = Instant::now();
    let rs = (0..n)
        .map(|i| pool.apply_async(square, i))
        .collect::<procactor::Result<Vec<_>>>()
        .map_err(e)?;
    let total = rs
        .iter()
        .map(|r| r.get())
        .sum::<procactor::Result<u64>>()
        .map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    drop(pool);
    if total != (0..n).map(|i| i * i).sum::<u64>() {
        return Err("pool_apply_async: wrong total".into());
    }
    emit(
        "procactor",
        "pool_apply_async",
        n as f64 / dt,
        "tasks/s",
        "higher",
    );
    Ok(())
}

fn executor_submit(quick: bool) -> Result<(), String> {
    let n: u64 = if quick { 2_000 } else { 10_000 };
    let e = |e: procactor::Error| e.to_string();
    let ex = Executor::new(procactor::cpu_count()).map_err(e)?;
    let t = Instant::now();
    let fs = (0..n)
        .map(|i| ex.submit(square, i))
        .collect::<procactor::Result<Vec<_>>>()
        .map_err(e)?;
    let total = as_completed(&fs)
        .map(|f| f.result())
        .sum::<procactor::Result<u64>>()
        .map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    drop(ex);
    if total != (0..n).map(|i| i * i).sum::<u64>() {
        return Err("executor_submit: wrong total".into());
    }
    emit(
        "procactor",
        "executor_submit",
        n as f64 / dt,
        "tasks/s",
        "higher",
    );
    Ok(())
}

fn dict_client((d, n, done): (DictProxy<u64, u64>, u64, Queue<bool>)) -> bool {
    for i in 0..n {
        if d.insert(i, i).is_err() {
            return false;
        }
    }
    for i in 0..n {
        if d.get(&i).ok().flatten() != Some(i) {
            return false;
        }
    }
    done.put(true).is_ok()
}

fn manager_dict(quick: bool) -> Result<(), String> {
    let n: u64 = if quick { 2_000 } else { 10_000 };
    let e = |e: procactor::Error| e.to_string();
    let m = Manager::start().map_err(e)?;
    let d = m.dict::<u64, u64>().map_err(e)?;
    let done = Queue::<bool>::new().map_err(e)?;
    // As the Python peer: the child's start is inside the timing.
    let t = Instant::now();
    let p = Process::new(dict_client, (d.clone(), n, done.clone()))
        .start()
        .map_err(e)?;
    let ok = done.get_timeout(Duration::from_secs(120)).map_err(e)?;
    let dt = t.elapsed().as_secs_f64();
    if !ok || !p.join().map_err(e)? || d.len().map_err(e)? != n as usize {
        return Err("manager_dict: the child saw wrong values".into());
    }
    emit(
        "procactor",
        "manager_dict",
        dt / (2 * n) as f64 * 1e6,
        "us/op",
        "lower",
    );
    Ok(())
}

fn list_client((l, per): (ListProxy<u64>, u64)) {
    for i in 0..per {
        l.append(i).expect("append");
    }
    // Appends are pipelined: one waiting call makes sure they all arrived.
    l.len().expect("len");
}

fn manager_list_append(quick: bool) -> Result<(), String> {
    let per: u64 = if quick { 1_000 } else { 5_000 };
    let e = |e: procactor::Error| e.to_string();
    let m = Manager::start().map_err(e)?;
    let l = m.list::<u64>().map_err(e)?;
    let t = Instant::now();
    let ps = (0..4)
        .map(|_| Process::new(list_client, (l.clone(), per)).start())
        .collect::<procactor::Result<Vec<_>>>()
        .map_err(e)?;
    for p in ps {
        p.join().map_err(e)?;
    }
    let dt = t.elapsed().as_secs_f64();
    if l.len().map_err(e)? != 4 * per as usize {
        return Err("manager_list_append: wrong length".into());
    }
    emit(
        "procactor",
        "manager_list_append",
        (4 * per) as f64 / dt,
        "ops/s",
        "higher",
    );
    Ok(())
}

/// The child of `connection_rtt`: connects and echoes 8-byte messages until the end.
fn tcp_echo((address, plaintext): (Address, bool)) -> u64 {
    let mut c = Client::new(&address).authkey(KEY);
    if plaintext {
        c = c.plaintext();
    }
    let conn = c.connect::<()>().expect("connection_rtt: connect");
    let mut buf = Vec::new();
    let mut n = 0;
    while conn.recv_bytes_into(&mut buf).is_ok() {
        if conn.send_bytes(&buf).is_err() {
            break;
        }
        n += 1;
    }
    n
}

fn connection_rtt(quick: bool) -> Result<(), String> {
    let rounds: u64 = if quick { 5_000 } else { 20_000 };
    let e = |e: procactor::Error| e.to_string();
    // Encrypted (the default), and CPython's protocol (what the Python peer measures).
    for (system, plaintext) in [("procactor", false), ("procactor-plaintext", true)] {
        let mut l = Listener::bind("127.0.0.1:0").map_err(e)?.authkey(KEY);
        if plaintext {
            l = l.plaintext();
        }
        let p = Process::new(tcp_echo, (l.address().clone(), plaintext))
            .start()
            .map_err(e)?;
        let conn = l.accept_timeout::<()>(Duration::from_secs(60)).map_err(e)?;
        let mut buf = Vec::new();
        conn.send_bytes(&0u64.to_le_bytes()).map_err(e)?;
        conn.recv_bytes_into(&mut buf).map_err(e)?;
        let t = Instant::now();
        for i in 1..rounds {
            conn.send_bytes(&i.to_le_bytes()).map_err(e)?;
            conn.recv_bytes_into(&mut buf).map_err(e)?;
            if buf != i.to_le_bytes() {
                return Err(format!("connection_rtt: round {i} echoed something else"));
            }
        }
        let us = t.elapsed().as_secs_f64() / (rounds - 1) as f64 * 1e6;
        drop(conn);
        if p.join().map_err(e)? != rounds {
            return Err("connection_rtt: the echo served another number of rounds".into());
        }
        emit(system, "connection_rtt", us, "us/roundtrip", "lower");
    }
    Ok(())
}

/// The client of `remote_manager_dict`: n inserts then n reads through a remote manager; the
/// time of those 2n operations (µs), or why they were wrong.
fn remote_dict_client((address, n): (Address, u64)) -> Result<f64, String> {
    let e = |e: procactor::Error| e.to_string();
    let r = RemoteManager::connect(&Client::new(&address).authkey(KEY)).map_err(e)?;
    let d: DictProxy<u64, u64> = r.get("d").map_err(e)?;
    let t = Instant::now();
    for i in 0..n {
        d.insert(i, i).map_err(e)?;
    }
    for i in 0..n {
        if d.get(&i).map_err(e)? != Some(i) {
            return Err(format!("remote_manager_dict: wrong value for {i}"));
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

fn remote_manager_dict(quick: bool) -> Result<(), String> {
    let n: u64 = if quick { 2_000 } else { 10_000 };
    let e = |e: procactor::Error| e.to_string();
    let m = Manager::start().map_err(e)?;
    let gw = m
        .serve(Listener::bind("127.0.0.1:0").map_err(e)?.authkey(KEY))
        .map_err(e)?;
    let d = m.dict::<u64, u64>().map_err(e)?;
    gw.register("d", &d).map_err(e)?;
    let p = Process::new(remote_dict_client, (gw.address().clone(), n))
        .start()
        .map_err(e)?;
    let us = p.join().map_err(e)??;
    if d.len().map_err(e)? != n as usize {
        return Err("remote_manager_dict: wrong length".into());
    }
    emit(
        "procactor",
        "remote_manager_dict",
        us / (2 * n) as f64,
        "us/op",
        "lower",
    );
    Ok(())
}

type Workload = fn(bool) -> Result<(), String>;

fn main() {
    procactor::init();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect());
    let workloads: [(&str, Workload); 17] = [
        ("spawn", spawn),
        ("pipe_rtt", pipe_rtt),
        ("pipe_bulk", pipe_bulk),
        ("queue_1p1c", queue_1p1c),
        ("queue_4p4c", queue_4p4c),
        ("lock_counter", lock_counter),
        ("pool_map_small", pool_map_small),
        ("pool_map_cpu", pool_map_cpu),
        ("pool_apply_async", pool_apply_async),
        ("executor_submit", executor_submit),
        ("actor_ask", actor_ask),
        ("actor_tell", actor_tell),
        ("spawn_many", spawn_many),
        ("manager_dict", manager_dict),
        ("manager_list_append", manager_list_append),
        ("connection_rtt", connection_rtt),
        ("remote_manager_dict", remote_manager_dict),
    ];
    let mut failed = false;
    for (name, run) in workloads {
        if only.as_ref().is_some_and(|o| !o.iter().any(|w| w == name)) {
            continue;
        }
        if let Err(e) = run(quick) {
            eprintln!("peers: {name} failed: {e}");
            failed = true;
        }
    }
    if let Some(o) = &only {
        for w in o.iter().filter(|w| !workloads.iter().any(|(n, _)| n == w)) {
            eprintln!("peers: {w} is not implemented yet; skipped");
        }
    }
    std::process::exit(i32::from(failed));
}
