//! Processes: pidfds, signals, `posix_spawn` of this binary, `fork`/`clone`, exit, identity
//! of the binary and of the process, randomness and the monotonic clock.

use std::ffi::{CString, OsString};
use std::io::{self};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use super::*;

/// How a child ended, as `waitid` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this status code.
    Code(i32),
    /// A signal (this number) killed it.
    Signal(i32),
    /// It ended, but its status went to someone else: SIGCHLD set to SIG_IGN (the kernel then
    /// reaps children itself), or a `wait()` outside procactor.
    Lost,
}

/// Opens a pidfd on our child `pid`.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Kills and reaps our child `pid` when no pidfd could be had for it. By pid, safely: an unreaped
/// child keeps its pid, so it cannot name another process.
pub fn kill_and_reap(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// Reaps the child behind `pidfd` if it has ended (or waits for it when `block`).
pub fn reap(pidfd: BorrowedFd, block: bool) -> io::Result<Option<ExitStatus>> {
    let mut opts = WaitIdOptions::EXITED;
    if !block {
        opts |= WaitIdOptions::NOHANG;
    }
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), opts) {
            Ok(None) => return Ok(None),
            Ok(Some(st)) => {
                if let Some(sig) = st.terminating_signal() {
                    return Ok(Some(ExitStatus::Signal(sig)));
                }
                return Ok(Some(ExitStatus::Code(st.exit_status().unwrap_or(0))));
            }
            Err(Errno::INTR) => continue,
            // Not waitable: taken elsewhere once it ended (a pidfd is readable from then on).
            Err(Errno::CHILD)
                if !block && wait_readable(&[pidfd], Some(Instant::now()))?.is_none() =>
            {
                return Ok(None)
            }
            Err(Errno::CHILD) => return Ok(Some(ExitStatus::Lost)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sends `sig` to the process behind `pidfd` (race-free: never another process reusing the pid).
pub fn signal(pidfd: BorrowedFd, sig: i32) -> io::Result<()> {
    // SAFETY: `sig` is one of the signal constants the caller names (SIGTERM, SIGKILL).
    let sig = unsafe { Signal::from_raw_unchecked(sig) };
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Asks the kernel to SIGKILL this process when the thread that created it ends.
pub fn kill_me_when_parent_thread_ends() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        Signal::KILL,
    ))?)
}

/// Is `pid` still our parent (false once it died and we were re-parented)?
pub fn parent_is(pid: u32) -> bool {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) == Some(pid)
}

/// This process's id, cached (and forgotten in a forked child).
#[inline]
pub fn getpid() -> u32 {
    use std::sync::atomic::Ordering;
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only stores to an atomic.
    HOOK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forget_pid));
    });
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// The parent process's pid (after the parent ends, the process that adopted this one).
pub fn getppid() -> u32 {
    rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
}

/// The calling thread's id.
#[inline]
pub fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// Number of threads in this process (from /proc/self/stat).
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Field 20 counted after the ")" that ends the command name (which may hold spaces).
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(17)?.parse().ok()
        })
        .unwrap_or(1)
}

/// Online CPUs (Python's `os.cpu_count()`).
pub fn cpu_count() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// CPUs this process may run on (its affinity mask, e.g. under `taskset`). One syscall: std's
/// `available_parallelism` also reads cgroup files, which costs a new child ~100 us.
pub fn usable_cpus() -> usize {
    rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count().max(1) as usize)
}

/// Raises the soft limit on open files to the hard limit: every pipe end is a descriptor.
pub fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: lim.maximum,
                ..lim
            },
        );
    }
}

/// Identity of the running binary (device and inode of /proc/self/exe), to check that a child
/// runs the very same code before it calls a function pointer from its parent.
pub fn exe_identity() -> (u64, u64) {
    match rustix::fs::stat("/proc/self/exe") {
        Ok(st) => (st.st_dev, st.st_ino),
        Err(_) => (0, 0),
    }
}

/// Starts a fresh copy of this binary (same argv, environment plus `extra_env`) that inherits
/// `keep_fd` (close-on-exec cleared in the child only). `posix_spawn` uses vfork: no page-table
/// copy, however large the parent is.
pub fn spawn_self(keep_fd: BorrowedFd, extra_env: (&str, &str)) -> io::Result<u32> {
    let to_c = |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("NUL byte in argv or env"));
    let args: Vec<OsString> = std::env::args_os().collect();
    let argv: Vec<CString> = args
        .iter()
        .map(|a| to_c(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k.as_bytes() != extra_env.0.as_bytes())
        .map(|(k, v)| to_c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<io::Result<_>>()?;
    envp.push(to_c(format!("{}={}", extra_env.0, extra_env.1).as_bytes())?);
    let exe = to_c(b"/proc/self/exe")?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|c| c.as_ptr() as *mut _).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|c| c.as_ptr() as *mut _).collect();
    envp_p.push(std::ptr::null_mut());

    // SAFETY: every pointer handed to posix_spawn points into `argv`, `envp` or `exe`, which
    // outlive the call; the file-actions and attr objects are initialised before use and
    // destroyed on every path.
    unsafe {
        let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        let mut attr = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        libc::posix_spawn_file_actions_init(actions.as_mut_ptr());
        libc::posix_spawnattr_init(attr.as_mut_ptr());
        // dup2(fd, fd) in a file action clears FD_CLOEXEC in the child (glibc >= 2.29).
        let raw = keep_fd.as_raw_fd();
        let mut rc = libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), raw, raw);
        let mut mask = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(mask.as_mut_ptr());
        if rc == 0 {
            rc = libc::posix_spawnattr_setsigmask(attr.as_mut_ptr(), mask.as_ptr());
        }
        if rc == 0 {
            rc = libc::posix_spawnattr_setflags(
                attr.as_mut_ptr(),
                libc::POSIX_SPAWN_SETSIGMASK as _,
            );
        }
        let mut pid: libc::pid_t = 0;
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                exe.as_ptr(),
                actions.as_ptr(),
                attr.as_ptr(),
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
        libc::posix_spawnattr_destroy(attr.as_mut_ptr());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(pid as u32)
    }
}

/// Which way a `fork_child` call forks.
#[derive(Debug)]
pub enum ForkKind {
    /// Plain `fork()`: the child is ours.
    Fork,
    /// `clone(CLONE_PARENT)`: the child becomes our parent's child (the fork server uses this so
    /// that the process that asked for the child can wait for it, signal it and read its status).
    SiblingOfSelf,
}

/// Forks. Returns `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// In the child only the calling thread exists: a lock another thread held stays held there. That
/// is a deadlock to avoid, not unsoundness: the child's memory is a private copy, no thread races
/// on it. The runtime keeps its own state in `PerProcess` cells, reset in the child, warns when
/// it forks with other threads alive, and glibc's allocator resets its locks across fork.
pub fn fork_child(kind: ForkKind) -> io::Result<Option<u32>> {
    // SAFETY: see above: nothing in the child refers to another thread's stack or state.
    let pid = unsafe {
        match kind {
            ForkKind::Fork => libc::fork() as libc::c_long,
            // Raw clone with no new stack behaves as fork (copy-on-write), with the parent changed.
            ForkKind::SiblingOfSelf => libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            ),
        }
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            forget_pid();
            Ok(None)
        }
        p => Ok(Some(p as u32)),
    }
}

/// Ends the process at once: no destructors, no atexit handlers (which, after a fork, belong to
/// the parent's C libraries).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// The start time of process `pid` (clock ticks since boot, field 22 of /proc/PID/stat), to tell
/// it from a later process with a recycled pid. `None` if it is gone.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Random bytes from the kernel (`getrandom`): addresses that other users cannot guess.
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        match rustix::rand::getrandom(&mut out[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Our own user id.
pub fn getuid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The address ranges of the main program's executable segments (not those of shared
/// libraries), from the dynamic linker's list, whose first entry is the program itself.
pub fn main_program_text() -> Vec<(usize, usize)> {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the dynamic linker passes a valid entry; `out` is the `Vec` below, alive for
        // the whole call of `dl_iterate_phdr`, and only this thread touches it.
        let (info, out) = unsafe { (&*info, &mut *out.cast::<Vec<(usize, usize)>>()) };
        if !info.dlpi_phdr.is_null() {
            // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
            let headers =
                unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
            for h in headers {
                if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0 {
                    let lo = (info.dlpi_addr as usize).wrapping_add(h.p_vaddr as usize);
                    out.push((lo, lo.wrapping_add(h.p_memsz as usize)));
                }
            }
        }
        1 // the first entry is the main program: stop there
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `first` matches the callback type and reads `out` as the `Vec` it is.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut out).cast()) };
    out
}

/// Ends this process with SIGKILL (a daemon whose parent died).
pub fn kill_self() {
    // SAFETY: raising SIGKILL on ourselves has no preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Runs `hook` when the process calls `exit` (on the thread that calls it).
pub fn at_exit(hook: extern "C" fn()) {
    // SAFETY: registers a plain function with no captured state.
    unsafe { libc::atexit(hook) };
}

/// The soft limit on open descriptors (`u64::MAX`: none).
pub fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}
