//! Platform code: every system call the runtime makes, behind one small module (as mio does).
//! Linux only: SEQPACKET sockets, SCM_RIGHTS, pidfd, `posix_spawn`, `fork`, `clone(CLONE_PARENT)`.

use std::ffi::{CString, OsString};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
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

/// Most parts one `sendmsg` takes (the kernel's UIO_MAXIOV); more fail with EMSGSIZE.
const MAX_IOV: usize = 1024;

/// `parts` as one buffer, when there are more of them than the kernel takes in one call.
fn joined_if_too_many(parts: &[IoSlice]) -> Option<Vec<u8>> {
    (parts.len() > MAX_IOV).then(|| parts.iter().flat_map(|p| p.iter().copied()).collect())
}

/// Sends one record made of `parts`, with `fds` attached. Blocks while the peer's buffer is full.
pub(crate) fn send_record(fd: BorrowedFd, parts: &[IoSlice], fds: &[BorrowedFd]) -> io::Result<()> {
    let joined = joined_if_too_many(parts);
    let one;
    let parts = match &joined {
        Some(all) => {
            one = [IoSlice::new(all)];
            &one[..]
        }
        None => parts,
    };
    // On the stack, sized for the most a message may carry: no allocation per send.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors in one message"));
        }
        match sendmsg(fd, parts, &mut control, SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
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
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "oversized record",
                    ));
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "too many descriptors",
                    ));
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

/// True once the peer of a connected socket has closed (or shut down) its end.
fn peer_closed(fd: BorrowedFd) -> bool {
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

/// Appends bytes from a stream socket to `buf` until it holds `target` bytes, without
/// zero-filling first; `Ok(false)` if the peer closed before that.
pub(crate) fn read_until_len(fd: BorrowedFd, buf: &mut Vec<u8>, target: usize) -> io::Result<bool> {
    buf.reserve_exact(target.saturating_sub(buf.len()));
    // A side stream is a socket; a detached payload (see `Channel::send_detached`) a memory file.
    let mut socket = true;
    while buf.len() < target {
        let want = target - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        let got = if socket {
            rustix::net::recv(fd, spare, RecvFlags::WAITALL).map(|((got, _), _)| got.len())
        } else {
            rustix::io::read(fd, spare).map(|(got, _)| got.len())
        };
        match got {
            Err(Errno::NOTSOCK) if socket => socket = false,
            Ok(0) => return Ok(false),
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` spare bytes.
                unsafe { buf.set_len(buf.len() + n) };
            }
            Err(Errno::INTR) => continue,
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

/// A SEQPACKET socket listening on an abstract-namespace address (Linux: no file, gone with the
/// last descriptor). Actors are reached by such addresses, so any process can connect by name.
pub(crate) fn listen_abstract(name: &str) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes())?;
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

/// Connects to an abstract-namespace SEQPACKET address.
pub(crate) fn connect_abstract(name: &str) -> io::Result<OwnedFd> {
    let addr = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes())?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    loop {
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
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

/// The user id of the process at the other end of a Unix socket.
pub(crate) fn peer_uid(fd: BorrowedFd) -> io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(fd)?.uid.as_raw())
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
    let joined = joined_if_too_many(parts);
    let one;
    let parts = match &joined {
        Some(all) => {
            one = [IoSlice::new(all)];
            &one[..]
        }
        None => parts,
    };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let fds = with.as_slice();
    loop {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for a descriptor"));
        }
        match sendmsg(
            fd,
            parts,
            &mut control,
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
        ) {
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
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
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
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
pub(crate) fn shutdown_write(fd: BorrowedFd) {
    // Fails only if the peer is already gone, which is what we wanted.
    let _ = rustix::net::shutdown(fd, rustix::net::Shutdown::Write);
}
