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
//! layouts) → `code` (functions as something a child can call).

#![warn(unsafe_op_in_unsafe_fn, missing_debug_implementations, unreachable_pub)]
// The floor's internal API is not fully documented yet (about 50 items moved here from the
// runtime, where they were crate-private): allowed until they are, the other crates warn.
#![allow(missing_docs)]

pub mod closer;
pub mod code;
pub mod error;
pub mod futex;
pub mod per_process;
pub mod pod;
pub mod robust;
pub mod shm;
pub mod sys;
pub mod wire;

#[doc(hidden)]
pub use linkme;
