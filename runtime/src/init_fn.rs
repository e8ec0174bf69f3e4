//! Initializers: a `fn(A)` and its argument, run once in another process before it serves (a
//! pool's workers, a manager). The function travels signed, with a monomorphised entry that
//! decodes its argument; a panic in it is reported, not lost.

use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};

use procactor_os::code::{CodeRef, SignedCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap;
use crate::error::{Error, Result};
use crate::wire::{self, Fd};

/// An initializer on its way to the process that runs it: its entry, the user's `fn(A)`, and
/// the encoded argument (with the descriptors of the handles in it).
#[derive(Serialize, Deserialize)]
pub(crate) struct Call {
    pub(crate) entry: SignedCode,
    pub(crate) func: SignedCode,
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<Fd>,
}

impl Call {
    /// `f(args)`, to run elsewhere.
    pub(crate) fn new<A: Serialize + DeserializeOwned + 'static>(
        f: fn(A),
        args: &A,
    ) -> Result<Call> {
        let (entry, func) = sign(f)?;
        let mut bytes = Vec::new();
        let raw = wire::encode(args, &mut bytes)?;
        // Duplicates: the argument (and its descriptors) may be dropped before the call goes.
        let fds = raw
            .iter()
            .map(|&fd| crate::sys::dup(wire::borrow_collected(fd)).map(Fd))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io("dup", e))?;
        Ok(Call {
            entry,
            func,
            bytes,
            fds,
        })
    }

    /// Runs it here: why it failed, if it did.
    pub(crate) fn run(self) -> Failure {
        let fds = self.fds.into_iter().map(|f| f.0).collect();
        run(self.entry, self.func, &self.bytes, fds)
    }
}

/// Why an initializer failed: its panic's message, and where it panicked.
pub(crate) type Failure = Option<(String, Option<String>)>;

type Entry = fn(func: SignedCode, bytes: &[u8], fds: Vec<OwnedFd>) -> Failure;

/// The entry point for `fn(A)` initializers, and the user's function, signed.
pub(crate) fn sign<A: DeserializeOwned + 'static>(f: fn(A)) -> Result<(SignedCode, SignedCode)> {
    Ok((
        CodeRef::new(entry::<A> as Entry)?.sign(),
        CodeRef::new(f)?.sign(),
    ))
}

/// Runs an initializer made by [`sign`] on its encoded argument.
pub(crate) fn run(entry: SignedCode, func: SignedCode, bytes: &[u8], fds: Vec<OwnedFd>) -> Failure {
    match CodeRef::<Entry>::verify(entry) {
        Ok(entry) => entry.get()(func, bytes, fds),
        Err(e) => Some((e.to_string(), None)),
    }
}

fn entry<A: DeserializeOwned + 'static>(
    func: SignedCode,
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Failure {
    let args = match wire::decode::<A>(bytes, fds) {
        Ok(a) => a,
        Err(e) => return Some((format!("its argument did not decode: {e}"), None)),
    };
    let f = match CodeRef::<fn(A)>::verify(func) {
        Ok(f) => f.get(),
        Err(e) => return Some((e.to_string(), None)),
    };
    match panic::catch_unwind(AssertUnwindSafe(move || f(args))) {
        Ok(()) => None,
        Err(payload) => Some(bootstrap::caught_panic(&*payload)),
    }
}
