//! The runtime behind [procactor](https://docs.rs/procactor): use it through the `procactor`
//! facade crate, which re-exports everything public here.
//!
//! Modules, bottom up (a module uses only those above it):
//! `error` → `sys` (every syscall) → `per_process` → `wire` (frames, descriptors in messages) → `pipe` →
//! `logs` (children's log records) → `bootstrap` (start methods, `init`) → `forkserver` →
//! `process`.

#![warn(missing_docs)]

mod bootstrap;
mod error;
mod forkserver;
mod logs;
mod per_process;
mod pipe;
mod process;
mod sys;
mod wire;

pub use bootstrap::{get_start_method, init, set_start_method, StartMethod};
pub use error::{Error, Result};
pub use pipe::{Connection, Pipe};
pub use process::{
    active_children, cpu_count, current_process, parent_process, Process, ProcessHandle,
    ProcessInfo,
};

#[doc(hidden)]
pub mod __private {
    pub use crate::bootstrap::test_support_init;
}
