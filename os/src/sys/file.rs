//! Files and descriptors: memfds and their seals, reads and writes, directories private to
//! the user, close-on-exec.

use std::io::{self};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;

use super::*;

/// Writes all of `data` to a file.
pub fn write_file(fd: BorrowedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Is `fd` a memory file (memfd)? Only those support seals; a stream, a pipe, a device or a
/// file on a slow filesystem does not, and reading one could block.
pub fn is_memfd(fd: BorrowedFd) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok()
}

/// The size of the file behind `fd`.
pub fn file_size(fd: BorrowedFd) -> io::Result<u64> {
    Ok(u64::try_from(rustix::fs::fstat(fd)?.st_size).unwrap_or(0))
}

/// Appends the first `len` bytes of a file to `buf` (read from offset 0, whoever else holds
/// the file's offset); `Ok(false)` if the file is shorter.
pub fn read_file_prefix(fd: BorrowedFd, buf: &mut Vec<u8>, len: usize) -> io::Result<bool> {
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

/// Clears (or sets) close-on-exec on `fd`.
pub fn set_cloexec(fd: BorrowedFd, on: bool) -> io::Result<()> {
    let flags = if on {
        rustix::io::FdFlags::CLOEXEC
    } else {
        rustix::io::FdFlags::empty()
    };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}

/// The seals every memory object of fixed size carries: its size can never change again
/// (`F_SEAL_SHRINK`, `F_SEAL_GROW`), so no holder of its descriptor can truncate it and kill every
/// other user with SIGBUS; and no seal can be added (`F_SEAL_SEAL`: seals are never removed, and
/// an added `F_SEAL_FUTURE_WRITE` would stop new processes from mapping it writable).
pub const SIZE_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// A new, empty anonymous memory file (memfd, close-on-exec) that accepts seals; none is set yet.
/// `name` only shows in `/proc/PID/fd` (as `memfd:NAME`).
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

/// A new memory file of `len` zero bytes, sealed with [`SIZE_SEALS`] before anyone else can have
/// its descriptor: its size is `len` for good.
pub fn sized_memfd(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = memfd(name)?;
    rustix::fs::ftruncate(&fd, len)?;
    add_seals(fd.as_fd(), SIZE_SEALS)?;
    Ok(fd)
}

/// Adds `seals` to a memory file made by [`memfd`]. Fails with EPERM once `F_SEAL_SEAL` is set,
/// and with EBUSY when adding `F_SEAL_WRITE` while the file is mapped writable somewhere.
pub fn add_seals(fd: BorrowedFd, seals: SealFlags) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, seals)?)
}

/// The seals of `fd` (none for a file that cannot carry any: a pipe, a regular file).
pub fn seals(fd: BorrowedFd) -> io::Result<SealFlags> {
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) => Ok(seals),
        Err(Errno::INVAL) => Ok(SealFlags::empty()),
        Err(e) => Err(e.into()),
    }
}

/// The size in bytes, owner and identity (device, inode) of the file behind `fd`.
pub fn file_stat(fd: BorrowedFd) -> io::Result<FileStat> {
    let st = rustix::fs::fstat(fd)?;
    Ok(FileStat {
        size: u64::try_from(st.st_size).unwrap_or(0),
        uid: st.st_uid,
        id: (st.st_dev, st.st_ino),
    })
}

/// What [`file_stat`] tells.
#[derive(Debug)]
pub struct FileStat {
    /// Size in bytes (0 if the kernel reports a negative one).
    pub size: u64,
    /// User id of the owner.
    pub uid: u32,
    /// Device and inode numbers: the same pair means the same file.
    pub id: (u64, u64),
}

/// Opens /dev/null, for [`release_fd`].
pub fn dev_null() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// In a forked child: lets go of what `fd` refers to (another pipe's socket) by pointing `fd` at
/// `null` instead. The number stays open, so the objects in the copied memory that own it can
/// still drop it safely; using it just fails.
pub fn release_fd(fd: RawFd, null: BorrowedFd) {
    // SAFETY: dup3 onto a descriptor number this process image owns; it replaces the open file
    // atomically and leaves the number valid for its owner.
    unsafe {
        if libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) < 0 {
            libc::close(fd);
        }
    }
}

/// Duplicates a descriptor (close-on-exec).
pub fn dup(fd: BorrowedFd) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Is the descriptor number `fd` open in this process? (A raw number, checked before anything
/// claims to own or borrow it.)
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless; EBADF just says it is not open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Removes the file at `path` (a socket's, once nobody is to connect to it); absent is fine.
pub fn unlink(path: &str) {
    let _ = rustix::fs::unlink(path);
}

/// Makes (or checks) the directory `path`, private to this user: mode 0700, owned by us, a real
/// directory (not a symlink). `false` if it exists and is not all of that (another user made it,
/// or it is open to others): the caller then chooses another. Its parent must be one where
/// other users cannot replace it (/tmp is sticky).
pub fn private_dir(path: &str) -> io::Result<bool> {
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
pub fn remove_dir_all(path: &str) {
    let _ = std::fs::remove_dir_all(path);
}

/// Takes ownership of descriptor `fd`, which this process inherited from its parent for the
/// runtime alone (its number came in the environment). The caller checked that it is open and
/// above the standard three; nothing else in this process knows the number.
pub fn adopt_inherited_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: as above: an open descriptor that nothing else owns.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// Creates the named POSIX shared-memory object `path` (`/name`), readable and writable by its
/// owner only (mode 0600 whatever the umask). `Ok(None)` if the name exists.
pub fn shm_create(path: &str) -> io::Result<Option<OwnedFd>> {
    use rustix::fs::Mode;
    use rustix::shm::OFlags;
    let fd = match rustix::shm::open(
        path,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if let Err(e) = rustix::fs::fchmod(&fd, Mode::RUSR | Mode::WUSR) {
        let _ = rustix::shm::unlink(path);
        return Err(e.into());
    }
    Ok(Some(fd))
}

/// Opens the existing named shared-memory object `path` for reading and writing.
pub fn shm_open(path: &str) -> io::Result<OwnedFd> {
    Ok(rustix::shm::open(
        path,
        rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    )?)
}

/// Removes the name of a shared-memory object.
pub fn shm_unlink(path: &str) -> io::Result<()> {
    Ok(rustix::shm::unlink(path)?)
}

/// Makes `fd` non-blocking.
pub fn set_nonblocking(fd: BorrowedFd) -> io::Result<()> {
    Ok(rustix::io::ioctl_fionbio(fd, true)?)
}
