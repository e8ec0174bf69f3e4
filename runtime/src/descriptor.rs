//! [`Descriptor`]: any open file descriptor, sent inside a message (Python's
//! `multiprocessing.reduction.send_handle` / `recv_handle`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::wire::Fd;

/// An open file descriptor (a file, a socket, a pipe, an eventfd...) that travels inside a
/// message between processes of this host: the kernel gives the receiver its own descriptor
/// for the same open file, usable at once (Python's `send_handle` / `recv_handle`). A network
/// connection refuses it (a descriptor means nothing on another host).
///
/// ```
/// # procactor::init();
/// use std::io::{Read, Seek, Write};
/// use procactor::pipe::Descriptor;
/// use procactor::Process;
///
/// fn write_into(d: Descriptor) {
///     let mut f = std::fs::File::from(d.into_owned());
///     f.write_all(b"written by the child").unwrap();
/// }
///
/// let mut file = tempfile_in_tmp()?;
/// Process::new(write_into, Descriptor::new(file.try_clone()?))
///     .start()?
///     .join()?;
/// let mut s = String::new();
/// file.rewind()?;
/// file.read_to_string(&mut s)?;
/// assert_eq!(s, "written by the child");
/// # fn tempfile_in_tmp() -> std::io::Result<std::fs::File> {
/// #     let p = std::env::temp_dir().join(format!("procactor-doc-{}", std::process::id()));
/// #     let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p)?;
/// #     std::fs::remove_file(&p)?;
/// #     Ok(f)
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Descriptor(OwnedFd);

impl Descriptor {
    /// Wraps an owned descriptor (a `File`, a `TcpStream`, a `UnixStream`, an `OwnedFd`...).
    ///
    /// ```
    /// let d = procactor::pipe::Descriptor::new(std::fs::File::open("/dev/null")?);
    /// # drop(d);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new(fd: impl Into<OwnedFd>) -> Descriptor {
        Descriptor(fd.into())
    }

    /// The descriptor, to turn into what it is (`File::from`, `TcpStream::from`...).
    ///
    /// ```
    /// use procactor::pipe::Descriptor;
    /// let d = Descriptor::new(std::fs::File::open("/dev/null")?);
    /// let f = std::fs::File::from(d.into_owned());
    /// # drop(f);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn into_owned(self) -> OwnedFd {
        self.0
    }

    /// Another descriptor for the same open file (`dup`).
    ///
    /// ```
    /// use procactor::pipe::Descriptor;
    /// let d = Descriptor::new(std::fs::File::open("/dev/null")?);
    /// let e = d.try_clone()?;
    /// # drop((d, e));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<Descriptor> {
        self.0
            .try_clone()
            .map(Descriptor)
            .map_err(|e| Error::io("dup", e))
    }
}

impl AsFd for Descriptor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl From<OwnedFd> for Descriptor {
    fn from(fd: OwnedFd) -> Descriptor {
        Descriptor(fd)
    }
}

impl Serialize for Descriptor {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::wire::SendFd(self.0.as_fd()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Descriptor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Fd::deserialize(d).map(|fd| Descriptor(fd.0))
    }
}
