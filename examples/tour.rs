//! A tour of what procactor can do, printing what happens. Run it with
//! `cargo run --release --example tour`. It grows with every capability.

use std::time::{Duration, Instant};

use procactor::{
    actor::ActorBuilder, actor::ChildSpec, actor::Down, actor::Mailbox, actor::Strategy,
    actor::Supervisor, shared::RawValue, ActorRef, Array, Barrier, Connection, Context, Error,
    Event, JoinableQueue, Lock, Pipe, Process, Queue, StartMethod, Value,
};
use serde_bytes::ByteBuf;

/// The tour's own logger: prints every record (the children's arrive tagged with name and pid).
struct PrintLogger;

impl log::Log for PrintLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        println!("    log {:<5} {}: {}", r.level(), r.target(), r.args());
    }
    fn flush(&self) {}
}

fn greet(name: String) -> String {
    log::info!("greeting {name} from a child process");
    format!("Hello, {name}! (from pid {})", std::process::id())
}

fn crash(how: String) -> u32 {
    match how.as_str() {
        "panic" => panic!("something went wrong in the child"),
        "exit" => std::process::exit(3),
        _ => loop {
            std::thread::park();
        },
    }
}

/// Byte buffers travel as `serde_bytes::ByteBuf` (one copy), not `Vec<u8>` (a value per byte).
fn echo(conn: Connection<ByteBuf>) -> usize {
    let mut n = 0;
    while let Ok(msg) = conn.recv() {
        n += msg.len();
        if conn.send(msg).is_err() {
            break;
        }
    }
    n
}

fn who(_: ()) -> String {
    let me = procactor::current_process();
    let parent =
        procactor::process::parent_process().map(|p| format!("{} (pid {})", p.name, p.pid));
    format!(
        "I am {} (pid {}), child of {}",
        me.name,
        me.pid,
        parent.unwrap_or_default()
    )
}

/// An actor: its state lives in its own process; every `pub fn` is a typed message.
struct Counter {
    total: u64,
}

#[procactor::actor]
impl Counter {
    fn init(start: u64) -> Self {
        Counter { total: start }
    }

    pub fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }

    pub fn nap(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }

    pub fn crash(&mut self) -> u64 {
        panic!("the counter crashed on purpose")
    }
}

/// An actor that watches others and keeps their obituaries.
struct Watcher {
    downs: Vec<String>,
}

#[procactor::actor]
impl Watcher {
    fn init(_: ()) -> Self {
        Watcher { downs: Vec::new() }
    }

    pub fn watch(&mut self, c: ActorRef<Counter>, ctx: &mut Context<Self>) {
        let _ = ctx.monitor(&c);
    }

    pub fn downs(&self) -> Vec<String> {
        self.downs.clone()
    }

    fn on_down(&mut self, down: Down) {
        self.downs.push(format!("{} {}", down.name, down.reason));
    }
}

fn ask_from_a_child(c: ActorRef<Counter>) -> u64 {
    c.add(100).unwrap_or(0)
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn actors() -> Result<(), Error> {
    section("Actors: #[procactor::actor] turns methods into typed messages");
    let c = procactor::spawn::<Counter>(1)?;
    println!("  Counter actor runs as pid {}", c.pid());
    println!("  ask add(2) -> {}", c.add(2)?);
    let t = Instant::now();
    for _ in 0..100_000 {
        c.cast().add(1)?;
    }
    println!(
        "  100,000 tells then one ask -> {} in {:?} (tells go in batches)",
        c.add(0)?,
        t.elapsed()
    );
    let child = Process::new(ask_from_a_child, c.clone()).start()?;
    println!(
        "  a ref travels to another process, which asks add(100) -> {}",
        child.join()?
    );
    println!(
        "  ask with a timeout on a slow handler: {}",
        c.timeout(Duration::from_millis(50)).nap(300).unwrap_err()
    );

    section("Actors: failures, monitors, the registry, bounded mailboxes");
    let w = procactor::spawn::<Watcher>(())?;
    w.watch(c.clone())?;
    println!(
        "  a handler panics; the caller gets: {}",
        c.crash().unwrap_err()
    );
    wait_until(|| w.downs().map(|d| !d.is_empty()).unwrap_or(true));
    println!("  the watcher's on_down saw: {:?}", w.downs()?);
    let c2 = procactor::spawn::<Counter>(0)?;
    procactor::actor::register("tour-counter", &c2)?;
    let found = procactor::actor::whereis::<Counter>("tour-counter")?.map(|r| r.pid());
    println!("  registered as \"tour-counter\"; whereis finds pid {found:?}");
    c2.kill()?;
    println!("  killed with SIGKILL: join says {}", c2.join()?);
    let b = ActorBuilder::<Counter>::new(0)
        .mailbox(Mailbox::bounded(1))
        .spawn()?;
    b.cast().nap(200)?;
    b.cast().add(1)?;
    println!(
        "  a full bounded mailbox: try_send gives \"{}\"",
        b.try_cast().add(1).unwrap_err()
    );
    b.stop()?;
    w.stop()?;
    println!("  stopped: {} / {}", b.join()?, w.join()?);

    section("Supervisor: a crashed child is replaced by a fresh process");
    let sup = Supervisor::new(Strategy::OneForOne)
        .child(ChildSpec::new::<Counter>("tour-supervised", 0)?)
        .start()?;
    let before = sup.child::<Counter>("tour-supervised")?;
    let _ = before.crash();
    wait_until(|| sup.restarts().unwrap_or(1) > 0);
    let after = sup.child::<Counter>("tour-supervised")?;
    println!(
        "  child pid {} crashed; now pid {} answers add(5) -> {}",
        before.pid(),
        after.pid(),
        after.add(5)?
    );
    sup.stop()?;
    println!("  supervisor stopped: {}", sup.join()?);
    Ok(())
}

fn produce((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).expect("put");
    }
}

fn hold_lock((lock, held): (Lock, Event)) {
    let _g = lock.acquire().expect("acquire");
    held.set();
    std::thread::sleep(Duration::from_secs(3600));
}

fn bump((v, a, start): (Value<u64>, Array<u32>, Barrier)) -> u32 {
    let index = start.wait().expect("barrier");
    for _ in 0..10_000 {
        *v.lock() += 1;
    }
    a.set(index as usize, 1);
    index
}

fn square_jobs(q: JoinableQueue<u64>) {
    while let Ok(_job) = q.get() {
        q.task_done().expect("task_done");
    }
}

fn queues_and_locks() -> Result<(), Error> {
    section("Queue: many producers and consumers, in shared memory");
    let q = Queue::<u64>::bounded(1000)?;
    let t = Instant::now();
    let producers = (0..2)
        .map(|_| Process::new(produce, (q.clone(), 50_000)).start())
        .collect::<Result<Vec<_>, _>>()?;
    let mut sum = 0;
    for _ in 0..100_000 {
        sum += q.get_timeout(Duration::from_secs(30))?;
    }
    for p in producers {
        p.join()?;
    }
    println!(
        "  2 producers -> 100,000 items (sum {sum}) in {:?}, processes started included",
        t.elapsed()
    );
    println!("  try_get on the empty queue: {}", q.try_get().unwrap_err());
    q.close();
    println!("  after close, put says: {}", q.put(1).unwrap_err());
    let jobs = JoinableQueue::<u64>::new()?;
    let worker = Process::new(square_jobs, jobs.clone()).start()?;
    for j in 0..100 {
        jobs.put(j)?;
    }
    jobs.join_timeout(Duration::from_secs(30))?;
    println!("  JoinableQueue: 100 jobs put, join() returned once the worker marked all done");
    jobs.close();
    worker.join()?;

    section("Locks that survive their holder: kill -9 inside the critical section");
    let lock = Lock::new()?;
    let held = Event::new()?;
    let holder = Process::new(hold_lock, (lock.clone(), held.clone())).start()?;
    held.wait_timeout(Duration::from_secs(30))?;
    holder.kill()?;
    let _ = holder.join();
    let g = lock.acquire_timeout(Duration::from_secs(30))?;
    println!(
        "  holder pid {} killed holding the lock: acquired anyway, owner_died = {} (CPython hangs here)",
        holder.pid(),
        g.owner_died()
    );
    drop(g);

    section("Value, Array, Barrier: shared memory with robust locks");
    let v = Value::new(0u64)?;
    let a = Array::new(3, 0u32)?;
    let start = Barrier::new(3)?;
    let ps = (0..2)
        .map(|_| Process::new(bump, (v.clone(), a.clone(), start.clone())).start())
        .collect::<Result<Vec<_>, _>>()?;
    let mine = start.wait()?;
    a.set(mine as usize, 1);
    let theirs = ps.iter().map(|p| p.join()).collect::<Result<Vec<_>, _>>()?;
    println!(
        "  barrier arrival indexes: me {mine}, children {theirs:?}; array {:?}",
        a.to_vec()
    );
    println!("  2 x 10,000 `*v.lock() += 1` = {}", v.get());
    let raw = RawValue::new(1.5f64)?;
    raw.set(raw.get() * 2.0);
    println!("  RawValue (no lock): {}", raw.get());
    Ok(())
}

fn tour_square(x: u64) -> u64 {
    x * x
}

fn tour_nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Kills its own worker on 3: the OOM killer, staged.
fn tour_oom(x: u64) -> u64 {
    if x == 3 {
        // SAFETY: raising a signal on ourselves has no preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    x
}

fn tour_picky(x: u64) -> u64 {
    assert!(x != 2, "two is not allowed");
    x
}

fn pools() -> Result<(), Error> {
    section("Pool: map, imap, apply_async over worker processes");
    let pool = procactor::Pool::new(2)?;
    let t = Instant::now();
    let squares = pool.map(tour_square, 0..100_000)?;
    println!(
        "  map(square, 0..100_000) in {:?}: ..., {}, {}",
        t.elapsed(),
        squares[99_998],
        squares[99_999]
    );
    let firsts: Vec<u64> = pool.imap(tour_square, 0..5)?.collect::<Result<_, _>>()?;
    println!("  imap yields in order as results arrive: {firsts:?}");
    let pending = (0..1000)
        .map(|i| pool.apply_async(tour_square, i))
        .collect::<Result<Vec<_>, _>>()?;
    let total: u64 = pending.iter().map(|r| r.get()).sum::<Result<u64, _>>()?;
    println!("  1000 x apply_async, then get: total {total}");

    section("Pool faults: a panic, a worker killed by SIGKILL, a task past its deadline");
    let results = pool.try_map(tour_picky, 0..4)?;
    println!("  try_map with a panicking item: {results:?}");
    let before = pool.pids();
    let results = pool.try_map(tour_oom, 0..6)?;
    println!(
        "  item 3 SIGKILLs its worker: {:?}",
        results[3].as_ref().unwrap_err()
    );
    println!(
        "  the other items: {:?}; workers {before:?} -> {:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .collect::<Vec<_>>(),
        pool.pids()
    );
    println!("  (CPython's Pool hangs for ever here; ProcessPoolExecutor breaks for good)");
    let timed = procactor::Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(200))
        .build()?;
    println!(
        "  task_timeout 200 ms, task sleeps 60 s: {}",
        timed.apply(tour_nap, 60_000).unwrap_err()
    );
    println!("  and the pool goes on: {} ms", timed.apply(tour_nap, 5)?);
    let r = pool.map_async(tour_nap, vec![60_000; 10_000])?;
    let t = Instant::now();
    pool.terminate();
    println!(
        "  terminate() with 10,000 one-minute tasks queued: {:?}, results say: {}",
        t.elapsed(),
        r.get().unwrap_err()
    );

    section("Executor: futures, as_completed, map");
    let ex = procactor::Executor::new(3)?;
    let t = Instant::now();
    let futures = [300, 100, 200]
        .into_iter()
        .map(|ms| ex.submit(tour_nap, ms))
        .collect::<Result<Vec<_>, _>>()?;
    for f in procactor::pool::as_completed(&futures) {
        println!(
            "  as_completed: {} ms nap at {} ms",
            f.result()?,
            t.elapsed().as_millis()
        );
    }
    let mapped: Vec<u64> = ex.map(tour_nap, [30, 10, 20])?.collect::<Result<_, _>>()?;
    println!("  executor.map keeps input order: {mapped:?}");
    ex.shutdown(true, false);
    println!(
        "  shutdown: submit now says: {}",
        ex.submit(tour_nap, 1).unwrap_err()
    );
    Ok(())
}

fn tour_bump(d: procactor::manager::DictProxy<String, u64>) {
    for _ in 0..500 {
        d.update(&"hits".to_string(), |n| *n += 1).expect("update");
    }
}

fn tour_racy_bump(d: procactor::manager::DictProxy<String, u64>) {
    let k = "hits".to_string();
    for _ in 0..500 {
        let n = d.get(&k).expect("get").unwrap_or(0);
        d.insert(k.clone(), n + 1).expect("insert");
    }
}

fn tour_enrol(rosters: procactor::manager::DictProxy<String, procactor::manager::ListProxy<u32>>) {
    let l = rosters.get(&"a".to_string()).expect("get").expect("roster");
    l.append(procactor::current_process().pid).expect("append");
}

fn tour_hold(l: procactor::manager::ListProxy<u32>) {
    l.append(1).expect("append");
    std::thread::sleep(Duration::from_secs(60));
}

struct TourScore {
    best: u64,
}

#[procactor::actor]
impl TourScore {
    fn init(_: ()) -> Self {
        TourScore { best: 0 }
    }
    pub fn offer(&mut self, score: u64) -> u64 {
        self.best = self.best.max(score);
        self.best
    }
}

fn manager() -> Result<(), Error> {
    use procactor::Manager;
    section("Manager: shared lists and dicts behind proxies, atomic updates inside the manager");
    let m = Manager::start()?;
    println!("  manager process pid {}", m.pid());
    let d = m.dict::<String, u64>()?;
    d.insert("hits".into(), 0)?;
    let run = |f: fn(procactor::manager::DictProxy<String, u64>)| -> Result<(), Error> {
        let ps = (0..4)
            .map(|_| Process::new(f, d.clone()).start())
            .collect::<Result<Vec<_>, _>>()?;
        for p in ps {
            p.join()?;
        }
        Ok(())
    };
    run(tour_bump)?;
    println!(
        "  4 processes x 500 d.update(k, |n| *n += 1): {} (nothing lost)",
        d.get(&"hits".into())?.unwrap_or(0)
    );
    d.insert("hits".into(), 0)?;
    run(tour_racy_bump)?;
    println!(
        "  4 processes x 500 Python-style d[k] = d[k] + 1: {} (updates lost between read and write)",
        d.get(&"hits".into())?.unwrap_or(0)
    );

    let rosters = m.dict::<String, procactor::manager::ListProxy<u32>>()?;
    rosters.insert("a".into(), m.list()?)?;
    let ps = (0..3)
        .map(|_| Process::new(tour_enrol, rosters.clone()).start())
        .collect::<Result<Vec<_>, _>>()?;
    for p in ps {
        p.join()?;
    }
    let inner = rosters.get(&"a".into())?.expect("roster");
    println!(
        "  nested: 3 children appended through a list proxy kept in a dict: {:?}",
        inner.snapshot()?
    );
    let score = m.host::<TourScore>(())?;
    score.offer(7)?;
    println!(
        "  hosted actor (no process of its own): best score {}",
        score.offer(3)?
    );
    println!("  objects in the manager: {}", m.object_count()?);

    section("Manager faults: a holder killed, the manager killed");
    let l = m.list::<u32>()?;
    let holder = Process::new(tour_hold, l.clone()).start()?;
    while l.is_empty()? {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(l);
    let before = m.object_count()?;
    holder.kill()?;
    let _ = holder.join();
    let t = Instant::now();
    while m.object_count()? == before && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "  a list held only by a child: {before} objects, child killed with SIGKILL, now {}",
        m.object_count()?
    );
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    let t = Instant::now();
    let err = loop {
        match d.len() {
            Err(e) => break e,
            Ok(_) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Ok(_) => break Error::Timeout(t.elapsed()),
        }
    };
    println!(
        "  manager killed with SIGKILL: d.len() says {err:?} after {:?}",
        t.elapsed()
    );
    Ok(())
}

fn section(title: &str) {
    println!("\n== {title}");
}

#[procactor::main]
fn main() -> Result<(), Error> {
    log::set_logger(&PrintLogger).expect("the tour's logger");
    log::set_max_level(log::LevelFilter::Info);
    println!(
        "procactor tour: every child below is a separate OS process ({} CPUs)",
        procactor::cpu_count()
    );

    section("Process: run a function in a child, get its value back");
    let p = Process::new(greet, "World".to_string())
        .name("greeter")
        .start()?;
    let said = p.join()?;
    println!(
        "  {} (pid {}) returned {said:?}; exitcode {:?}",
        p.name(),
        p.pid(),
        p.exitcode()
    );
    let p = Process::new(who, ()).name("curious").start()?;
    println!("  {}", p.join()?);

    section("Start methods: spawn (re-exec), fork, fork server");
    for method in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::ForkServer,
    ] {
        // The first fork-server start also starts the server; time the second.
        Process::new(|x: u32| x, 0)
            .start_method(method)
            .start()?
            .join()?;
        let t = Instant::now();
        let v = Process::new(|x: u32| x * 2, 21)
            .start_method(method)
            .start()?
            .join()?;
        println!(
            "  {:<10} start + join: {:>9.2?}  -> {v}",
            format!("{method:?}"),
            t.elapsed()
        );
    }

    section("Failure is data: panics, exits and signals come back as errors");
    for how in ["panic", "exit", "kill"] {
        let p = Process::new(crash, how.to_string())
            .name(format!("crash-{how}"))
            .start()?;
        if how == "kill" {
            std::thread::sleep(Duration::from_millis(50));
            p.kill()?;
        }
        match p.join() {
            Err(e) => println!("  {how:>5}: {e}  (exitcode {:?})", p.exitcode()),
            Ok(v) => println!("  {how:>5}: unexpectedly returned {v}"),
        }
    }
    let p = Process::new(crash, "hang".to_string()).start()?;
    let t = Instant::now();
    let e = p.join_timeout(Duration::from_millis(100)).unwrap_err();
    println!(
        "  a hanging child: join_timeout gave {e:?} after {:.0?}; terminating it",
        t.elapsed()
    );
    p.terminate()?;
    println!("  then join: {}", p.join().unwrap_err());

    section("Pipes: typed messages between processes");
    let (here, there) = Pipe::<ByteBuf>::duplex()?;
    let child = Process::new(echo, there).name("echo").start()?;
    let t = Instant::now();
    for i in 0..1000u32 {
        here.send(ByteBuf::from(i.to_le_bytes().to_vec()))?;
        here.recv()?;
    }
    println!("  1000 round trips: {:.1?} each", t.elapsed() / 1000);
    let big = ByteBuf::from(vec![42u8; 64 << 20]);
    let t = Instant::now();
    here.send(big.clone())?;
    let back = here.recv()?;
    println!(
        "  a 64 MiB message there and back, intact: {} ({:.0?})",
        back == big,
        t.elapsed()
    );
    drop(here);
    println!(
        "  dropped our end: the child saw the disconnect and returned {} bytes echoed",
        child.join()?
    );

    let (here, there) = Pipe::<u64>::duplex()?;
    let child = Process::new(crash, "hang".to_string()).start()?;
    let holder = Process::new(|c: Connection<u64>| drop(c.recv()), there).start()?;
    holder.kill()?;
    println!(
        "  the process holding the other end was killed: recv gives {:?}",
        here.recv().unwrap_err()
    );
    let _ = holder.join();
    child.kill()?;
    let _ = child.join();

    let (a, b) = Pipe::<u64>::duplex()?;
    a.send_bytes(b"not a u64 at all")?;
    a.send(7)?;
    println!("  garbage arrives: {}", b.recv().unwrap_err());
    println!("  and the next message is fine: {}", b.recv()?);

    section("Daemons and active_children");
    let d = Process::new(crash, "hang".to_string())
        .name("daemon")
        .daemon(true)
        .start()?;
    let names: Vec<String> = procactor::process::active_children()
        .into_iter()
        .map(|c| c.name)
        .collect();
    println!("  running children: {names:?} (a daemon dies with its parent, even on SIGKILL)");
    d.kill()?;
    let _ = d.join();
    println!(
        "  after kill + join: {:?}",
        procactor::process::active_children()
    );

    queues_and_locks()?;
    actors()?;
    pools()?;
    manager()?;

    println!("\ntour done");
    Ok(())
}
