//! Platform code: every system call the runtime makes, behind one small module (as mio does).
//! Linux only: SEQPACKET sockets, SCM_RIGHTS, pidfd, `posix_spawn`, `fork`, `clone(CLONE_PARENT)`.

use std::ffi::{CString, OsString};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags,
    SocketType,
};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// Most descriptors one message may carry (the kernel's SCM_MAX_FD).
pub(crate) const MAX_FDS: usize = 253;

/// A connected pair of SEQPACKET sockets: reliable, ordered, and record boundaries kept.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// A connected pair of stream sockets, for payloads too large for one record.
pub(crate) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Most parts handed to the kernel as separate iovecs; a record of more is copied into one
/// buffer first (the kernel refuses more than UIO_MAXIOV, 1024, with EMSGSIZE).
const MAX_IOV: usize = 64;

/// Sends one record made of `parts`, with `fds` attached. With `block`, waits while the peer's
/// buffer is full; without, returns `Ok(false)` then.
pub(crate) fn send_record_with(
    fd: BorrowedFd,
    parts: &[IoSlice],
    fds: &[BorrowedFd],
    block: bool,
) -> io::Result<bool> {
    if parts.len() > MAX_IOV {
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        return send_record_with(fd, &[IoSlice::new(&joined)], fds, block);
    }
    // On the stack, sized for the most a message may carry: no allocation per send.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut flags = SendFlags::NOSIGNAL;
    if !block {
        flags |= SendFlags::DONTWAIT;
    }
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors in one message"));
        }
        match sendmsg(fd, parts, &mut control, flags) {
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if !block => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `recv_record` found.
pub(crate) enum Recv {
    /// A record of this many bytes (in the buffer) and the descriptors that came with it.
    Record(usize, Vec<OwnedFd>),
    /// The peer closed its end.
    Eof,
    /// Nothing there yet (non-blocking only).
    WouldBlock,
    /// A record we do not take (too long, or with more descriptors than any message may
    /// carry), dropped; the descriptors that came with it are handed back to be closed.
    Bad(&'static str, Vec<OwnedFd>),
}

/// Receives one record into `buf`. A record longer than `buf` is an error (our peers never send
/// one; a stranger's garbage might), and so are descriptors beyond MAX_FDS.
pub(crate) fn recv_record(fd: BorrowedFd, buf: &mut [u8], nonblocking: bool) -> io::Result<Recv> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg(fd, &mut iov, &mut control, flags) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(rights) = m {
                        fds.extend(rights);
                    }
                }
                if msg.flags.contains(ReturnFlags::TRUNC) {
                    return Ok(Recv::Bad("oversized record", fds));
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    return Ok(Recv::Bad("too many descriptors", fds));
                }
                // Zero bytes: the peer closed, or a stranger sent an empty record (ours always
                // have a header). Only a real close sets RDHUP.
                if msg.bytes == 0 && fds.is_empty() && peer_closed(fd) {
                    return Ok(Recv::Eof);
                }
                return Ok(Recv::Record(msg.bytes, fds));
            }
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(Recv::WouldBlock),
            Err(Errno::CONNRESET) => return Ok(Recv::Eof),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until the peer of a connected socket has closed its end, at most until `deadline`;
/// false if it has not by then.
pub(crate) fn wait_peer_closed(fd: BorrowedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut pfd = [PollFd::new(&fd, PollFlags::RDHUP)];
        match poll(&mut pfd, Some(&timeout)) {
            Ok(_)
                if pfd[0]
                    .revents()
                    .intersects(PollFlags::RDHUP | PollFlags::HUP) =>
            {
                return true
            }
            Ok(_) | Err(Errno::INTR) if Instant::now() < deadline => {}
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
}

/// Copies the first bytes of the next record into `buf` without taking the record, and
/// without its descriptors (which stay with it for the `recv_record` that takes it). Never
/// blocks: `Ok(None)` when there is no record (or the peer closed).
pub(crate) fn peek_record(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match rustix::net::recv(fd, &mut *buf, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((0, _)) if peer_closed(fd) => return Ok(None),
            Ok((n, _)) => return Ok(Some(n)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) | Err(Errno::CONNRESET) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// True once the peer of a connected socket has closed (or shut down) its end.
pub(crate) fn peer_closed(fd: BorrowedFd) -> bool {
    let mut pfd = [PollFd::new(&fd, PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut pfd, Some(&zero)) {
        Ok(_) => pfd[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP),
        Err(_) => true,
    }
}

/// Writes all of `data` to a stream socket.
pub(crate) fn write_all(fd: BorrowedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::net::send(fd, data, SendFlags::NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes all of `data` to a file.
pub(crate) fn write_file(fd: BorrowedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What [`read_stream_until`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// `buf` holds `target` bytes.
    Full,
    /// The peer closed first.
    Eof,
    /// The deadline passed first (what arrived so far is in `buf`).
    TimedOut,
}

/// Appends bytes from a stream socket to `buf` until it holds `target` bytes, without
/// zero-filling first, waiting at most until `deadline` (`None`: as long as it takes;
/// `Some(now)`: only what is there).
pub(crate) fn read_stream_until(
    fd: BorrowedFd,
    buf: &mut Vec<u8>,
    target: usize,
    deadline: Option<Instant>,
) -> io::Result<Filled> {
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    buf.reserve_exact(target.saturating_sub(buf.len()));
    if deadline.is_none() {
        // An earlier receive that timed out may have left a timeout on the socket.
        set_socket_timeout(fd, Timeout::Recv, None)?;
    }
    let mut timeout_set = false;
    while buf.len() < target {
        let flags = match deadline {
            None => RecvFlags::WAITALL,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    RecvFlags::DONTWAIT
                } else {
                    // The socket is ours alone (it came with one frame): its receive timeout
                    // bounds the blocking read; WAITALL then returns what came by then.
                    set_socket_timeout(fd, Timeout::Recv, Some(left))?;
                    timeout_set = true;
                    RecvFlags::WAITALL
                }
            }
        };
        let want = target - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        match rustix::net::recv(fd, spare, flags).map(|((got, _), _)| got.len()) {
            Ok(0) => return Ok(Filled::Eof),
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Filled::TimedOut);
                }
            }
            Err(Errno::CONNRESET) => return Ok(Filled::Eof),
            Err(e) => return Err(e.into()),
        }
    }
    if timeout_set {
        set_socket_timeout(fd, Timeout::Recv, None)?;
    }
    Ok(Filled::Full)
}

/// Is `fd` a memory file (memfd)? Only those support seals; a stream, a pipe, a device or a
/// file on a slow filesystem does not, and reading one could block.
pub(crate) fn is_memfd(fd: BorrowedFd) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok()
}

/// The size of the file behind `fd`.
pub(crate) fn file_size(fd: BorrowedFd) -> io::Result<u64> {
    Ok(u64::try_from(rustix::fs::fstat(fd)?.st_size).unwrap_or(0))
}

/// Appends the first `len` bytes of a file to `buf` (read from offset 0, whoever else holds
/// the file's offset); `Ok(false)` if the file is shorter.
pub(crate) fn read_file_prefix(fd: BorrowedFd, buf: &mut Vec<u8>, len: usize) -> io::Result<bool> {
    buf.reserve_exact(len);
    let start = buf.len();
    while buf.len() - start < len {
        let at = (buf.len() - start) as u64;
        let want = len - (buf.len() - start);
        let spare = &mut buf.spare_capacity_mut()[..want];
        match rustix::io::pread(fd, spare, at).map(|(got, _)| got.len()) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Waits until one of `fds` is readable (or hung up); `None` when `deadline` passes first.
pub(crate) fn wait_readable(
    fds: &[BorrowedFd],
    deadline: Option<Instant>,
) -> io::Result<Option<usize>> {
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    loop {
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                Some(Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                }))
            }
        };
        match poll(&mut pfds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
            Ok(_) => {
                let ready = pfds.iter().position(|p| !p.revents().is_empty());
                if let Some(i) = ready {
                    return Ok(Some(i));
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`wait_ready`] waits for on one descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Something to read (or EOF).
    Read,
    /// Room to write (a socket whose peer reads again).
    Write,
}

/// Waits until one of `fds` is ready for what it is watched for, hung up or in error (then the
/// next read or write says why: a waiter must not sleep through it), at most until `deadline`.
/// For each descriptor, whether it is; all false when the deadline passed first.
pub(crate) fn wait_ready(
    fds: &[(BorrowedFd, Want)],
    deadline: Option<Instant>,
) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<PollFd> = fds
        .iter()
        .map(|(fd, want)| {
            let flags = match want {
                Want::Read => PollFlags::IN,
                Want::Write => PollFlags::OUT,
            };
            PollFd::new(fd, flags)
        })
        .collect();
    loop {
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        match poll(&mut pfds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(vec![false; pfds.len()]);
                }
            }
            Ok(_) => return Ok(pfds.iter().map(|p| !p.revents().is_empty()).collect()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until a socket has room for a record (or is hung up or in error), at most until
/// `deadline`; false if the deadline passed first.
pub(crate) fn wait_writable(fd: BorrowedFd, deadline: Option<Instant>) -> io::Result<bool> {
    Ok(wait_ready(&[(fd, Want::Write)], deadline)?[0])
}

/// How a child ended, as `waitid` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitStatus {
    Code(i32),
    Signal(i32),
    /// It ended, but its status went to someone else: SIGCHLD set to SIG_IGN (the kernel then
    /// reaps children itself), or a `wait()` outside procactor.
    Lost,
}

/// Opens a pidfd on our child `pid`.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Kills and reaps our child `pid` when no pidfd could be had for it. By pid, safely: an unreaped
/// child keeps its pid, so it cannot name another process.
pub(crate) fn kill_and_reap(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// Reaps the child behind `pidfd` if it has ended (or waits for it when `block`).
pub(crate) fn reap(pidfd: BorrowedFd, block: bool) -> io::Result<Option<ExitStatus>> {
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
pub(crate) fn signal(pidfd: BorrowedFd, sig: i32) -> io::Result<()> {
    // SAFETY: `sig` is one of the signal constants the caller names (SIGTERM, SIGKILL).
    let sig = unsafe { Signal::from_raw_unchecked(sig) };
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Asks the kernel to SIGKILL this process when the thread that created it ends.
pub(crate) fn kill_me_when_parent_thread_ends() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        Signal::KILL,
    ))?)
}

/// Is `pid` still our parent (false once it died and we were re-parented)?
pub(crate) fn parent_is(pid: u32) -> bool {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32) == Some(pid)
}

/// Our pid, cached: it is asked on every actor call, and a system call per ask shows. Forgotten in
/// a forked child, by a `pthread_atfork` handler (glibc's `fork`) and by `fork_child` (raw clone).
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn forget_pid() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

pub(crate) fn getpid() -> u32 {
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

pub(crate) fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get() as u32
}

/// Clears (or sets) close-on-exec on `fd`.
pub(crate) fn set_cloexec(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let flags = if on {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}

/// Number of threads in this process (from /proc/self/stat).
pub(crate) fn thread_count() -> usize {
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
pub(crate) fn cpu_count() -> usize {
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
pub(crate) fn usable_cpus() -> usize {
    rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count().max(1) as usize)
}

/// Raises the soft limit on open files to the hard limit: every pipe end is a descriptor.
pub(crate) fn raise_nofile_limit() {
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
pub(crate) fn exe_identity() -> (u64, u64) {
    match rustix::fs::stat("/proc/self/exe") {
        Ok(st) => (st.st_dev, st.st_ino),
        Err(_) => (0, 0),
    }
}

/// Starts a fresh copy of this binary (same argv, environment plus `extra_env`) that inherits
/// `keep_fd` (close-on-exec cleared in the child only). `posix_spawn` uses vfork: no page-table
/// copy, however large the parent is.
pub(crate) fn spawn_self(keep_fd: BorrowedFd, extra_env: (&str, &str)) -> io::Result<u32> {
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

/// The seals every memory object of fixed size carries: its size can never change again
/// (`F_SEAL_SHRINK`, `F_SEAL_GROW`), so no holder of its descriptor can truncate it and kill every
/// other user with SIGBUS; and no seal can be added (`F_SEAL_SEAL`: seals are never removed, and
/// an added `F_SEAL_FUTURE_WRITE` would stop new processes from mapping it writable).
pub(crate) const SIZE_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A new, empty anonymous memory file (memfd, close-on-exec) that accepts seals; none is set yet.
/// `name` only shows in `/proc/PID/fd` (as `memfd:NAME`).
pub(crate) fn memfd(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

/// A new memory file of `len` zero bytes, sealed with [`SIZE_SEALS`] before anyone else can have
/// its descriptor: its size is `len` for good.
pub(crate) fn sized_memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = memfd(name)?;
    rustix::fs::ftruncate(&fd, len)?;
    add_seals(fd.as_fd(), SIZE_SEALS)?;
    Ok(fd)
}

/// Adds `seals` to a memory file made by [`memfd`]. Fails with EPERM once `F_SEAL_SEAL` is set,
/// and with EBUSY when adding `F_SEAL_WRITE` while the file is mapped writable somewhere.
pub(crate) fn add_seals(fd: BorrowedFd, seals: SealFlags) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, seals)?)
}

/// The seals of `fd` (none for a file that cannot carry any: a pipe, a regular file).
pub(crate) fn seals(fd: BorrowedFd) -> io::Result<SealFlags> {
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => Ok(seals),
        Err(Errno::INVAL) => Ok(SealFlags::empty()),
        Err(e) => Err(e.into()),
    }
}

/// The size in bytes, owner and identity (device, inode) of the file behind `fd`.
pub(crate) fn file_stat(fd: BorrowedFd) -> io::Result<FileStat> {
    let st = rustix::fs::fstat(fd)?;
    Ok(FileStat {
        size: u64::try_from(st.st_size).unwrap_or(0),
        uid: st.st_uid,
        id: (st.st_dev, st.st_ino),
    })
}

/// What [`file_stat`] tells.
pub(crate) struct FileStat {
    pub size: u64,
    pub uid: u32,
    pub id: (u64, u64),
}

/// Which way a `fork_child` call forks.
pub(crate) enum ForkKind {
    /// Plain `fork()`: the child is ours.
    Fork,
    /// `clone(CLONE_PARENT)`: the child becomes our parent's child (the fork server uses this so
    /// that the process that asked for the child can wait for it, signal it and read its status).
    SiblingOfSelf,
}

/// Forks. Returns `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
///
/// # Safety
/// In the child only the calling thread exists; the caller must not rely on locks other threads
/// may have held (glibc's allocator is safe: it resets its locks across fork).
pub(crate) unsafe fn fork_child(kind: ForkKind) -> io::Result<Option<u32>> {
    let pid = match kind {
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
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Opens /dev/null, for [`release_fd`].
pub(crate) fn dev_null() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// In a forked child: lets go of what `fd` refers to (another pipe's socket) by pointing `fd` at
/// `null` instead. The number stays open, so the objects in the copied memory that own it can
/// still drop it safely; using it just fails.
pub(crate) fn release_fd(fd: RawFd, null: BorrowedFd) {
    // SAFETY: dup3 onto a descriptor number this process image owns; it replaces the open file
    // atomically and leaves the number valid for its owner.
    unsafe {
        if libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) < 0 {
            libc::close(fd);
        }
    }
}

/// Duplicates a descriptor (close-on-exec).
pub(crate) fn dup(fd: BorrowedFd) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Is the descriptor number `fd` open in this process? (A raw number, checked before anything
/// claims to own or borrow it.)
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless; EBADF just says it is not open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// A SEQPACKET socket listening at `path` (in the session's private directory: see
/// [`private_dir`]). Only processes that may enter that directory can connect.
pub(crate) fn listen_path(path: &str) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    // Non-blocking: the owner accepts until there is nobody left waiting.
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, 1024)?;
    Ok(fd)
}

/// Connects to the SEQPACKET socket at `path`. Waits at most `patience` while the listener's
/// backlog is full (a listener that stopped accepting must not hang us): `TimedOut` then;
/// `Duration::ZERO` does not wait at all (`WouldBlock` then).
pub(crate) fn connect_path(path: &str, patience: Duration) -> io::Result<OwnedFd> {
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    let addr = rustix::net::SocketAddrUnix::new(path)?;
    let mut flags = SocketFlags::CLOEXEC;
    if patience.is_zero() {
        flags |= SocketFlags::NONBLOCK;
    }
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?;
    if !patience.is_zero() {
        // A Unix socket's connect waits for backlog room for at most the send timeout.
        set_socket_timeout(&fd, Timeout::Send, Some(patience))?;
    }
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => break,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if patience.is_zero() => return Err(io::ErrorKind::WouldBlock.into()),
            Err(Errno::AGAIN) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e.into()),
        }
    }
    if patience.is_zero() {
        rustix::io::ioctl_fionbio(&fd, false)?;
    } else {
        set_socket_timeout(&fd, Timeout::Send, None)?;
    }
    Ok(fd)
}

/// Removes the file at `path` (a socket's, once nobody is to connect to it); absent is fine.
pub(crate) fn unlink(path: &str) {
    let _ = rustix::fs::unlink(path);
}

/// Makes (or checks) the directory `path`, private to this user: mode 0700, owned by us, a real
/// directory (not a symlink). `false` if it exists and is not all of that (another user made it,
/// or it is open to others): the caller then chooses another. Its parent must be one where
/// other users cannot replace it (/tmp is sticky).
pub(crate) fn private_dir(path: &str) -> io::Result<bool> {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::mkdir(path, Mode::RWXU) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    // Opened without following a symlink, then checked through the descriptor (no race between
    // the check and the use of a name another user could swap).
    let dir = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::NOTDIR | Errno::LOOP) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&dir)?;
    Ok(st.st_uid == getuid() && st.st_mode & 0o077 == 0)
}

/// Removes a directory and everything in it; errors are ignored (it may be gone already).
pub(crate) fn remove_dir_all(path: &str) {
    let _ = std::fs::remove_dir_all(path);
}

/// The start time of process `pid` (clock ticks since boot, field 22 of /proc/PID/stat), to tell
/// it from a later process with a recycled pid. `None` if it is gone.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Accepts one pending connection without blocking: `None` when there is none. The new socket
/// is blocking; the caller polls before it reads.
pub(crate) fn accept(listener: BorrowedFd) -> io::Result<Option<OwnedFd>> {
    loop {
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Who is at the other end of a Unix socket, from the kernel (SO_PEERCRED): for an accepted
/// socket, the process that connected; for a connected one, the process that last called
/// `listen` on the listening socket. Never from anything the peer wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub pid: u32,
    pub uid: u32,
}

pub(crate) fn peer_cred(fd: BorrowedFd) -> io::Result<PeerCred> {
    // Through libc, not rustix: the kernel reports pid 0 for a peer in a pid namespace we cannot
    // see, which rustix's non-zero `Pid` cannot hold.
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into the `ucred` we own and sets `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid.max(0) as u32,
        uid: cred.uid,
    })
}

/// Calls `listen` again on a listening socket this process received: the kernel then reports
/// this process (not the one that bound it) to those who connect (see [`peer_cred`]).
pub(crate) fn relisten(fd: BorrowedFd) -> io::Result<()> {
    Ok(rustix::net::listen(fd, 1024)?)
}

/// Random bytes from the kernel (`getrandom`): addresses that other users cannot guess.
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
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
pub(crate) fn getuid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Sends one record (with at most one descriptor) without blocking: `Ok(false)` if the peer's
/// buffer is full.
pub(crate) fn try_send_record(
    fd: BorrowedFd,
    parts: &[IoSlice],
    with: Option<BorrowedFd>,
) -> io::Result<bool> {
    send_record_with(fd, parts, with.as_slice(), false)
}

/// What a descriptor in a [`Poller`] is reported for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest {
    /// Input, or the peer shutting down its writing side.
    pub read: bool,
    /// Room in the send buffer.
    pub write: bool,
}

impl Interest {
    pub(crate) const READ: Interest = Interest {
        read: true,
        write: false,
    };

    fn flags(self) -> rustix::event::epoll::EventFlags {
        use rustix::event::epoll::EventFlags;
        let mut f = EventFlags::empty();
        if self.read {
            // RDHUP only with input: a peer that shut down its writing side would otherwise
            // keep a descriptor we do not read ready for ever (level-triggered).
            f |= EventFlags::IN | EventFlags::RDHUP;
        }
        if self.write {
            f |= EventFlags::OUT;
        }
        f
    }
}

/// Level-triggered readiness for many descriptors at once (epoll): an actor's event loop.
pub(crate) struct Poller {
    ep: OwnedFd,
    events: Vec<rustix::event::epoll::Event>,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        use rustix::event::epoll;
        let empty = epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        };
        Ok(Poller {
            ep: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            events: vec![empty; 256],
        })
    }

    /// Watches `fd` for input or hang-up, reported as `token`.
    pub(crate) fn add(&self, fd: BorrowedFd, token: u64) -> io::Result<()> {
        use rustix::event::epoll;
        Ok(epoll::add(
            &self.ep,
            fd,
            epoll::EventData::new_u64(token),
            Interest::READ.flags(),
        )?)
    }

    /// Changes what an added `fd` is reported for (as `token`). The poller is level-triggered:
    /// a descriptor watched for writing is reported on every wait while its buffer has room, so
    /// watch for writing only while there is something to write. Hang-up and error are always
    /// reported (the kernel's rule), even with no interest at all: a caller must act on them
    /// (close, or stop watching), not wait for them to go away.
    pub(crate) fn modify(&self, fd: BorrowedFd, token: u64, interest: Interest) -> io::Result<()> {
        Ok(rustix::event::epoll::modify(
            &self.ep,
            fd,
            rustix::event::epoll::EventData::new_u64(token),
            interest.flags(),
        )?)
    }

    pub(crate) fn remove(&self, fd: BorrowedFd) {
        // Fails only if the fd was never added; closing it removes it anyway.
        let _ = rustix::event::epoll::delete(&self.ep, fd);
    }

    /// Tokens of the ready descriptors, waiting at most until `deadline` (`Some(now)`: not at
    /// all). Empty when the deadline passed.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        ready: &mut Vec<u64>,
    ) -> io::Result<()> {
        ready.clear();
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        loop {
            match rustix::event::epoll::wait(&self.ep, &mut self.events, timeout.as_ref()) {
                Ok(n) => {
                    ready.extend(self.events[..n].iter().map(|e| e.data.u64()));
                    return Ok(());
                }
                Err(Errno::INTR) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// An eventfd (non-blocking): a counter another thread bumps to wake a poller.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::{eventfd, EventfdFlags};
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// Adds one to an eventfd (wakes its poller).
pub(crate) fn eventfd_signal(fd: BorrowedFd) {
    // Fails only when the counter would overflow: the poller is awake then anyway.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Resets an eventfd to zero.
pub(crate) fn eventfd_drain(fd: BorrowedFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(fd, &mut buf);
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Shuts the sending direction of a socket: the peer reads what is queued, then EOF.
/// Shuts a connected socket down both ways: the peer sees the hang-up at once, though the socket
/// (and whatever its unread records carry) is only released by its close. Never blocks.
pub(crate) fn shutdown_both(fd: BorrowedFd) {
    // Fails only if the peer is already gone, which is what we wanted.
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Both);
}

pub(crate) fn shutdown_write(fd: BorrowedFd) {
    // Fails only if the peer is already gone, which is what we wanted.
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one wait that does not block reports.
    fn ready_now(p: &mut Poller) -> Vec<u64> {
        let mut ready = Vec::new();
        p.wait(Some(Instant::now()), &mut ready).unwrap();
        ready
    }

    #[test]
    fn a_poller_reports_what_each_descriptor_is_watched_for() {
        let mut p = Poller::new().unwrap();
        let (a, b) = seqpacket_pair().unwrap();
        p.add(a.as_fd(), 7).unwrap();
        assert!(ready_now(&mut p).is_empty(), "nothing to read yet");
        let both = Interest {
            read: true,
            write: true,
        };
        p.modify(a.as_fd(), 7, both).unwrap();
        assert_eq!(ready_now(&mut p), [7], "room to write");
        let none = Interest {
            read: false,
            write: false,
        };
        p.modify(a.as_fd(), 7, none).unwrap();
        assert!(try_send_record(b.as_fd(), &[IoSlice::new(b"x")], None).unwrap());
        assert!(ready_now(&mut p).is_empty(), "input not watched");
        // A peer that only stops writing does not wake a descriptor not watched for input
        // (level-triggered, it would on every wait).
        rustix::net::shutdown(&b, rustix::net::Shutdown::Write).unwrap();
        assert!(
            ready_now(&mut p).is_empty(),
            "half-close reported without input interest"
        );
        p.modify(a.as_fd(), 7, Interest::READ).unwrap();
        assert_eq!(ready_now(&mut p), [7]);
        // A hang-up is reported whatever the interest.
        p.modify(a.as_fd(), 7, none).unwrap();
        drop(b);
        assert_eq!(ready_now(&mut p), [7]);
    }

    #[test]
    fn wait_writable_waits_for_room_at_most_until_its_deadline() {
        let (a, b) = seqpacket_pair().unwrap();
        let chunk = vec![0u8; 60_000];
        while try_send_record(a.as_fd(), &[IoSlice::new(&chunk)], None).unwrap() {}
        let t = Instant::now();
        let deadline = t + Duration::from_millis(50);
        assert!(!wait_writable(a.as_fd(), Some(deadline)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(50));
        let mut buf = vec![0u8; 70_000];
        while matches!(
            recv_record(b.as_fd(), &mut buf, true).unwrap(),
            Recv::Record(..)
        ) {}
        assert!(wait_writable(a.as_fd(), Some(Instant::now() + Duration::from_secs(10))).unwrap());
    }
}
