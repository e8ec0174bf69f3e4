//! Another local user attacks a running program: it reads our actors' socket paths where every
//! user can (`/proc/net/unix`), tries to connect to them and to add sockets beside them, listens
//! (placed there by root) at the path of an actor that has ended with a forged welcome naming a
//! victim's pid, and tries to open our processes' descriptors and our named shared memory. None
//! of it gets in: no connection, no welcome, no forged reply accepted, no signal sent to the pid
//! it chose.
//!
//! It needs root, to run the impostor as a fresh unprivileged uid (one with no account: nothing
//! to clean up); without root it says so and passes. (harness = false: this file's `main` is the
//! program, and, with `PROCACTOR_IMPOSTOR` set, the impostor too.)

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::raw;
use common::BOUND;
use procactor::{ActorRef, Error, Manager, Process, SharedMemory};

const IMPOSTOR_UID: u32 = 47_111;

pub struct Vault {
    secret: u64,
}

#[procactor::actor]
impl Vault {
    fn init(secret: u64) -> Self {
        Vault { secret }
    }

    pub fn secret(&self) -> u64 {
        self.secret
    }
}

fn main() {
    procactor::init();
    if let Ok(what) = std::env::var("PROCACTOR_IMPOSTOR") {
        impostor(&what);
        return;
    }
    if rustix::process::getuid().as_raw() != 0 {
        println!(
            "security: skipped: running a process as another user needs root (uid {} here)",
            rustix::process::getuid().as_raw()
        );
        return;
    }
    let exe = Impostors::new();
    let mut checks = 0;

    // 1. An actor's socket is in the program's private directory: another user sees its path in
    // /proc/net/unix, and can neither connect to it nor add a socket beside it.
    let vault = procactor::spawn::<Vault>(42).unwrap();
    let addr = raw::address(&vault);
    assert!(std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .contains(&addr));
    assert_eq!(exe.run(&format!("connect:{addr}")), "denied");
    let session = addr.rsplit_once('/').unwrap().0.to_string();
    assert_eq!(
        exe.run(&format!("bind:{session}/0000000000000001:0")),
        "denied"
    );
    assert_eq!(vault.secret().unwrap(), 42);
    checks += 1;

    // 2. Names are not sockets: nothing to squat. The tree's table works as ever.
    procactor::actor::register("vault", &vault).unwrap();
    let found = procactor::actor::whereis::<Vault>("vault")
        .unwrap()
        .unwrap();
    assert_eq!((found.pid(), found.secret().unwrap()), (vault.pid(), 42));
    checks += 1;

    // 3. The actor ends, and (as only root could arrange) a stranger's listener appears at its
    // path, with a forged welcome that names a victim's pid and forged replies. The caller's
    // own check of who listens (SO_PEERCRED) refuses it: nobody of ours believes it.
    let mut victim = Command::new("sleep").arg("60").spawn().unwrap();
    vault.kill().unwrap();
    let _ = vault.join_timeout(BOUND);
    let own = exe.own_dir();
    let fake = exe.spawn(&format!("bind:{own}/sock:{}", victim.id()));
    std::fs::rename(format!("{own}/sock"), &addr).unwrap();
    let forged_pid = fake.pid;
    let from_a_child = Process::new(use_the_dead_vault, vault.clone())
        .start()
        .unwrap()
        .join_timeout(BOUND)
        .unwrap();
    assert_eq!(from_a_child, "gone gone none", "seen from a child");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim whose pid the forged welcome named was killed"
    );
    assert!(
        common::pid_alive(forged_pid),
        "the impostor itself was signalled"
    );
    assert!(procactor::actor::whereis::<Vault>("vault")
        .unwrap()
        .is_none());
    checks += 1;

    // 4. The manager refuses the stranger too.
    let m = Manager::start().unwrap();
    let l = m.list_from(vec![1u8, 2]).unwrap();
    assert_eq!(exe.run(&format!("connect:{}", raw::address(&l))), "denied");
    assert_eq!(l.len().unwrap(), 2);
    checks += 1;

    // 5. Our processes' descriptors (a manager's shared memory among them) and our named
    // shared memory stay closed to the stranger.
    let fd_path = std::fs::read_dir(format!("/proc/{}/fd", m.pid()))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .last()
        .unwrap();
    assert_eq!(exe.run(&format!("open:{}", fd_path.display())), "denied");
    let name = format!("procactor-security-{}", std::process::id());
    let shm = SharedMemory::create(&name, 4096).unwrap();
    assert_eq!(exe.run(&format!("open:/dev/shm/{name}")), "denied");
    shm.unlink().unwrap();
    checks += 1;

    drop(fake);
    let _ = victim.kill();
    let _ = victim.wait();
    drop(m);
    println!("security: {checks} passed; 0 failed (impostor uid {IMPOSTOR_UID})");
}

/// In a child (not the actor's spawner): the dead actor's ref, whose address a stranger holds.
fn use_the_dead_vault(v: ActorRef<Vault>) -> String {
    let ask = match v.timeout(Duration::from_secs(5)).secret() {
        Err(Error::ActorDied { .. }) => "gone",
        Ok(_) => "FORGED REPLY ACCEPTED",
        Err(_) => "other error",
    };
    let alive = if v.is_alive() { "alive" } else { "gone" };
    let _ = v.kill();
    let found = match procactor::actor::whereis::<Vault>("vault") {
        Ok(None) => "none",
        Ok(Some(_)) => "IMPOSTOR FOUND",
        Err(_) => "error",
    };
    format!("{ask} {alive} {found}")
}

/// The impostor binary (a copy of this one that the stranger may execute) and its processes.
struct Impostors {
    dir: std::path::PathBuf,
    exe: std::path::PathBuf,
}

struct Running {
    child: Child,
    pid: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Impostors {
    fn new() -> Impostors {
        let dir = std::env::temp_dir().join(format!("procactor-impostor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("impostor");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        Impostors { dir, exe }
    }

    /// A directory the stranger may write in (for a socket of its own).
    fn own_dir(&self) -> String {
        let own = self.dir.join("own");
        std::fs::create_dir_all(&own).unwrap();
        std::os::unix::fs::chown(&own, Some(IMPOSTOR_UID), Some(IMPOSTOR_UID)).unwrap();
        own.to_string_lossy().into_owned()
    }

    fn command(&self, what: &str) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("PROCACTOR_IMPOSTOR", what)
            .env_remove("PROCACTOR_BOOT")
            .uid(IMPOSTOR_UID)
            .gid(IMPOSTOR_UID)
            .current_dir("/")
            .stdout(Stdio::piped());
        c
    }

    /// Runs one impostor action to its end; what it reports.
    fn run(&self, what: &str) -> String {
        let mut child = self.command(what).spawn().unwrap();
        let mut out = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut out)
            .unwrap();
        let deadline = Instant::now() + BOUND;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the impostor hung");
            std::thread::sleep(Duration::from_millis(5));
        }
        out.trim().to_string()
    }

    /// Starts an impostor that keeps running (a listener) once it says it is ready.
    fn spawn(&self, what: &str) -> Running {
        let mut child = self.command(what).spawn().unwrap();
        let mut out = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut out)
            .unwrap();
        assert_eq!(out.trim(), "listening", "{what}");
        let pid = child.id();
        Running { child, pid }
    }
}

impl Drop for Impostors {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The stranger's side: `connect:ADDR`, `bind:ADDR:VICTIM_PID` or `open:PATH`. It prints one
/// line: what it got.
fn impostor(what: &str) {
    let (verb, arg) = what.split_once(':').unwrap();
    let say = |s: &str| {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    };
    match verb {
        "connect" => {
            let fd = rustix::net::socket(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                None,
            )
            .unwrap();
            match rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(arg).unwrap()) {
                Ok(()) => {}
                Err(rustix::io::Errno::ACCESS) => return say("denied"),
                Err(e) => return say(&format!("error {e}")),
            }
            raw::send_frame(fd.as_fd(), raw::HELLO, 0, b"\x01", &[]);
            match raw::recv_frame(fd.as_fd(), Duration::from_secs(5)) {
                Some((raw::WELCOME, _, _)) => say("welcome"),
                Some((k, _, _)) => say(&format!("frame {k}")),
                None => say("eof"),
            }
        }
        "bind" => {
            let (addr, victim) = arg.rsplit_once(':').unwrap();
            let victim: u32 = victim.parse().unwrap();
            let listener = rustix::net::socket(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                None,
            )
            .unwrap();
            match rustix::net::bind(&listener, &rustix::net::SocketAddrUnix::new(addr).unwrap()) {
                Ok(()) => {}
                Err(rustix::io::Errno::ACCESS) => return say("denied"),
                Err(e) => return say(&format!("error {e}")),
            }
            rustix::net::listen(&listener, 16).unwrap();
            say("listening");
            // Every caller gets a welcome naming the victim's pid, and a reply to anything.
            let welcome = forged_welcome(victim);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let Ok(conn) = rustix::net::accept(&listener) else {
                    continue;
                };
                let welcome = welcome.clone();
                std::thread::spawn(move || {
                    raw::send_frame(conn.as_fd(), raw::WELCOME, 0, &welcome, &[]);
                    while let Some((_, _, _)) =
                        raw::recv_frame(conn.as_fd(), Duration::from_secs(5))
                    {
                        // A reply to request 1, 2, ...: "42" in any encoding.
                        for id in 0..8u64 {
                            raw::send_frame(conn.as_fd(), 24, id, &[0, 42], &[]);
                        }
                    }
                });
            }
        }
        "open" => match std::fs::OpenOptions::new().read(true).open(arg) {
            Ok(_) => say("opened"),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => say("denied"),
            Err(e) => say(&format!("error {e}")),
        },
        _ => say("unknown"),
    }
}

/// A welcome as an actor would write it (postcard of `Welcome`), naming `pid`.
fn forged_welcome(pid: u32) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Welcome {
        name: String,
        pid: u32,
        id: u64,
        addr: String,
        capacity: Option<u32>,
        slot: u32,
        limit: u64,
    }
    postcard::to_stdvec(&Welcome {
        name: "Vault".into(),
        pid,
        id: 1,
        addr: String::new(),
        capacity: None,
        slot: 0,
        limit: 1 << 30,
    })
    .unwrap()
}
