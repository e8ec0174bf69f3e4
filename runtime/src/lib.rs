//! The runtime behind [procactor](https://docs.rs/procactor): use it through the `procactor`
//! facade crate, which re-exports everything public here.
//!
//! Layers. Below this crate is `procactor-os` (every system call and every `unsafe` block: its
//! `error`, `sys`, `per_process`, `closer`, `wire`, `futex`, `robust`, `shm`, `pod` and `code`
//! modules), which this crate cannot reach around: it is `#![deny(unsafe_code)]` and depends on
//! neither `libc` nor `rustix`. Above it, this crate's modules, bottom up; a module uses only
//! modules to its left (`tests/layers.rs` checks it):
//!
//! LAYERS: identity sync shared target message pipe descriptor exit names queue logs bootstrap init_fn process actor pool manager
//!
//! `identity` (who this process is, the tree's session), `sync` (robust locks), `shared`
//! (values), `target` (what a child can run), `message` (schemas), `pipe`, `descriptor` (any
//! open descriptor in a message), `exit` (a process's exit work), `names` (the tree's name
//! table), `queue`, `logs` (children's log records), `bootstrap` (init, jobs, the start methods
//! and the fork server), `init_fn` (initializers run in another process), `process`, `actor`,
//! `pool` (Pool, Executor), `manager` (shared objects behind proxies).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![deny(unsafe_code)]

use procactor_os::{closer, error, per_process, shm, sys, wire};

mod actor;
mod bootstrap;
pub mod connection;
mod descriptor;
mod exit;
#[cfg(test)]
mod fuzz;
mod identity;
mod init_fn;
mod logs;
mod manager;
mod message;
mod names;
mod pipe;
mod pool;
mod process;
mod queue;
mod shared;
mod sync;
mod target;

pub use actor::{
    register, spawn, spawn_many, unregister, whereis, Actor, ActorBuilder, ActorId, ActorRef,
    Caller, ChildInfo, ChildSpec, Context, Down, InitError, Mailbox, Monitor, Restart, Strategy,
    Supervisor, SupervisorRef, Tell, Timed, TryTell,
};
pub use bootstrap::{get_start_method, init, set_start_method, StartMethod};
/// Plain-old-data types can live in [`Value`] and [`Array`] (derive it with `bytemuck`).
pub use bytemuck::Pod;
pub use descriptor::Descriptor;
pub use error::{Error, ExitReason, Panic, Result, TrySendError};
pub use manager::{
    DictIter, DictProxy, Gateway, HostedProxy, HostedTell, ListIter, ListProxy, Manager,
    ManagerBuilder, Namespace, RemoteManager, RemoteOptions, SetProxy, Shared, ValueProxy,
};
pub use message::{Message, Schema};
pub use pipe::{Connection, Pipe};
pub use target::{NoArg, Portable, Target, WithArg};

/// The largest message a receiving end accepts unless told otherwise: 1 GiB. A larger one is
/// refused from its header, before any of it is read (see [`Error::TooLarge`],
/// [`Connection::with_max_message_size`], [`ActorBuilder::max_message_size`]).
///
/// ```
/// assert_eq!(procactor::pipe::DEFAULT_MAX_MESSAGE_SIZE, 1 << 30);
/// ```
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = wire::DEFAULT_LIMIT;
pub use pool::{
    as_completed, as_completed_timeout, wait, wait_timeout, AsCompleted, AsCompletedTimeout,
    AsyncResult, Executor, ExecutorBuilder, Future, Imap, ImapUnordered, Pool, PoolBuilder,
    ReturnWhen, Waited,
};
pub use process::{
    active_children, cpu_count, current_process, exit_join_timeout, parent_process,
    set_exit_join_timeout, ParentProcess, Process, ProcessHandle, ProcessInfo,
};
pub use queue::{JoinableQueue, Queue, QueueBuilder, SimpleQueue};
pub use shared::{
    Array, ArrayGuard, DataGuard, RawArray, RawValue, SharedMemory, Value, ValueGuard,
};
pub use sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
    SemaphoreGuard,
};

/// Functions registered by name with [`#[procactor::entry]`](macro@crate::entry): what crosses
/// to another binary (another host) instead of an address.
///
/// ```
/// #[procactor::entry(name = "demo::triple")]
/// fn triple(x: u32) -> u32 {
///     x * 3
/// }
///
/// let f = procactor::entry::lookup::<fn(u32) -> u32>("demo::triple")?;
/// assert_eq!(f(14), 42);
/// assert_eq!(procactor::entry::name_of(triple as fn(u32) -> u32), Some("demo::triple"));
/// # Ok::<(), procactor::Error>(())
/// ```
pub mod entry {
    pub use procactor_os::code::{lookup, name_of};
}

/// Actor types registered by name (see [`named`](actor_names::named)); the facade puts these in
/// `procactor::actor`.
pub mod actor_names {
    pub use crate::actor::{name_of, named, spawn_named, ActorEntry};
}

/// What the macros' generated code names: only through here (`::procactor::__private::...`), so
/// the public API can move without breaking them. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::actor::{Actor, ActorEntry, Caller, Context, Down, InitError, ACTORS};
    pub use crate::bootstrap::{init, test_support_init};
    pub use crate::error::ExitReason;
    pub use crate::message::{Message, ProbeMessage, ProbeTypeName, Schema, SchemaProbe};
    pub use procactor_os::{code, linkme};
    pub use serde;

    /// The methods an `ActorRef` answers to (its own, and those of the traits it implements or
    /// that the prelude brings): `#[actor]` refuses a message by one of these names, which the
    /// generated method could not be called by. `procactor-macros` keeps a copy (it cannot
    /// depend on this crate); its tests check that the two agree and that every method of
    /// `ActorRef` is here.
    pub const RESERVED_METHOD_NAMES: &[&str] = &[
        "ask",
        "ask_timeout",
        "tell",
        "try_tell",
        "tell_timeout",
        "cast",
        "try_cast",
        "timeout",
        "stop",
        "kill",
        "join",
        "join_timeout",
        "monitor",
        "id",
        "name",
        "pid",
        "is_alive",
        "call",
        "clone",
        "clone_from",
        "clone_into",
        "to_owned",
        "into",
        "try_into",
        "eq",
        "ne",
        "fmt",
        "serialize",
        "deserialize",
    ];

    /// What a message argument or reply must be (checked by `#[actor]` on the offending type).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel in an actor message",
        label = "not serializable: an actor message argument or reply must implement serde's \
                 `Serialize` and `Deserialize` (and own its data: no borrowed `&str`)",
        note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`"
    )]
    pub trait MessageType {}

    impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> MessageType for T {}
}
