//! The floor of [procactor](https://docs.rs/procactor): everything that talks to the kernel or
//! reads memory the compiler cannot check. Use procactor through its facade crate; this crate's
//! API follows the runtime's needs and is not stable.
//!
//! Every `unsafe` block of procactor is in this crate, and every system call goes through
//! [`sys`]. The runtime above it is `#![deny(unsafe_code)]`, so the compiler keeps it that way.
//!
//! Modules, bottom up (a module uses only those above it):
//! `error` → `sys` (every syscall) → `per_process` (state reset after fork) → `closer` (peers'
//! descriptors closed off the thread) → `wire` (codec, deadlines, channels, descriptors in
//! messages) → `futex` → `robust` (the robust mutex) → `shm` (shared memory, seals, typed
//! layouts) → `code` (functions as something a child can call); `cpython` (CPython's frames and
//! authkey challenge, without I/O) uses only `error` and `sys`.

#![warn(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    missing_debug_implementations,
    unreachable_pub
)]

#[cfg(target_os = "linux")]
pub mod closer;
#[cfg(target_os = "linux")]
pub mod code;
#[cfg(target_os = "linux")]
pub mod cpython;
#[cfg(target_os = "linux")]
pub mod error;
#[cfg(target_os = "linux")]
pub mod futex;
#[cfg(target_os = "linux")]
pub mod noise;
#[cfg(target_os = "linux")]
pub mod per_process;
#[cfg(target_os = "linux")]
pub mod pod;
#[cfg(target_os = "linux")]
pub mod robust;
#[cfg(target_os = "linux")]
pub mod shm;
#[cfg(target_os = "linux")]
pub mod sys;
#[cfg(target_os = "linux")]
pub mod wire;

#[doc(hidden)]
pub use linkme;

// One clear error on another system, instead of a cascade from every module above.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "procactor runs on Linux only: it is built on pidfds, memfd seals, SEQPACKET sockets with \
     SCM_RIGHTS and SO_PEERCRED, and futexes (see the Platform section of the README)"
);
