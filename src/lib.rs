#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub use procactor_macros::{actor, entry, main, Message};
// The names most programs use, at the root; everything else in its module below.
/// The message trait (the derive of the same name implements it).
pub use procactor_runtime::Message;
pub use procactor_runtime::{
    cpu_count, current_process, init, set_start_method, spawn, Actor, ActorRef, Array, Barrier,
    Condition, Connection, Context, Error, Event, Executor, ExitReason, JoinableQueue, Lock,
    Manager, Panic, Pipe, Pool, Process, ProcessHandle, Queue, RLock, Result, Semaphore,
    SharedMemory, StartMethod, Target, TrySendError, Value,
};

/// Processes: start one ([`Process`]), wait for it and read its outcome ([`ProcessHandle`]), the start methods, and what a process knows about itself and its children (Python's `multiprocessing.Process`, `current_process`, `active_children`).
pub mod process {
    pub use procactor_runtime::{
        active_children, cpu_count, current_process, exit_join_timeout, get_start_method, init,
        parent_process, set_exit_join_timeout, set_start_method, NoArg, ParentProcess, Portable,
        Process, ProcessHandle, ProcessInfo, StartMethod, Target, WithArg,
    };
}

/// Typed pipes between processes: [`Pipe`] makes a pair of [`Connection`]s (Python's `multiprocessing.Pipe`).
pub mod pipe {
    pub use procactor_runtime::{Connection, Descriptor, Pipe, DEFAULT_MAX_MESSAGE_SIZE};
}

/// Connections between programs and hosts: [`Listener`](connection::Listener), [`Client`](connection::Client) and [`wait`](connection::wait) (Python's `multiprocessing.connection`), authenticated by an authkey and encrypted by default; CPython's protocol on request.
pub use procactor_runtime::connection;

/// Queues between processes: [`Queue`], [`SimpleQueue`] and [`JoinableQueue`] (Python's `multiprocessing.Queue` and friends), in shared memory, bounded or not.
pub mod queue {
    pub use procactor_runtime::{JoinableQueue, Queue, QueueBuilder, SimpleQueue};
}

/// Synchronisation between processes: locks, semaphores, events, conditions and barriers in shared memory, robust against a holder that dies (Python's `multiprocessing.Lock` and friends).
pub mod sync {
    pub use procactor_runtime::{
        Barrier, BoundedSemaphore, Condition, Event, Lock, LockGuard, RLock, RLockGuard, Semaphore,
        SemaphoreGuard,
    };
}

/// Plain data in shared memory: [`Value`] and [`Array`] with their own lock, [`RawValue`] and [`RawArray`] without, and raw [`SharedMemory`] (Python's `Value`, `Array`, `shared_memory`).
pub mod shared {
    pub use procactor_runtime::{
        Array, ArrayGuard, DataGuard, Pod, RawArray, RawValue, SharedMemory, Value, ValueGuard,
    };
}

/// Pools of worker processes: [`Pool`] (`map`, `imap`, `apply_async`, ...) and [`Executor`] with its [`Future`]s (Python's `multiprocessing.Pool` and `concurrent.futures.ProcessPoolExecutor`).
pub mod pool {
    pub use procactor_runtime::{
        as_completed, as_completed_timeout, wait, wait_timeout, AsCompleted, AsCompletedTimeout,
        AsyncResult, Executor, ExecutorBuilder, Future, Imap, ImapUnordered, Pool, PoolBuilder,
        ReturnWhen, Waited,
    };
}

/// Actors: a process with a typed mailbox. `#[procactor::actor]` on an `impl` block, [`spawn`] to start one, [`ActorRef`] to call it, supervision, monitors and registered names.
pub mod actor {
    pub use procactor_runtime::actor_names::{name_of, named, spawn_named, ActorEntry};
    pub use procactor_runtime::{
        register, spawn, spawn_many, unregister, whereis, Actor, ActorBuilder, ActorId, ActorRef,
        Caller, ChildInfo, ChildSpec, Context, Down, InitError, Mailbox, Message, Monitor, Restart,
        Schema, Strategy, Supervisor, SupervisorRef, Tell, Timed, TryTell,
    };
}

/// A manager process that hosts shared lists, dicts, sets, values and namespaces behind proxies (Python's `multiprocessing.Manager`).
pub mod manager {
    pub use procactor_runtime::{
        DictIter, DictProxy, Gateway, HostedProxy, HostedTell, ListIter, ListProxy, Manager,
        ManagerBuilder, Namespace, RemoteManager, RemoteOptions, SetProxy, Shared, ValueProxy,
    };
}

pub use procactor_runtime::entry;

/// The traits and the most used types, for a glob import: `use procactor::prelude::*;`. It
/// brings no `Error`, `Result` or `Future`, which would shadow your own or the standard ones.
///
/// ```
/// use procactor::prelude::*;
///
/// procactor::init();
/// fn double(x: u32) -> u32 { x * 2 }
/// let p = Process::new(double, 21).start()?;
/// assert_eq!(p.join()?, 42);
/// # Ok::<(), procactor::Error>(())
/// ```
pub mod prelude {
    pub use procactor_runtime::{
        Actor, ActorRef, Array, Connection, Context, Executor, Lock, Manager, Message, Pipe, Pool,
        Process, Queue, Value,
    };
}

#[doc(hidden)]
pub use procactor_runtime::__private;

/// Makes `procactor` work in a test binary (integration tests, benches with a harness), whose
/// `main` is not yours: it runs [`init()`] from a constructor, before the harness starts.
///
/// ```
/// // tests/my_test.rs
/// procactor::test_support!();
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// // #[test]
/// fn runs_in_a_child() {
///     let p = procactor::Process::new(double, 21).start().unwrap();
///     assert_eq!(p.join().unwrap(), 42);
/// }
/// # fn main() { runs_in_a_child() }
/// ```
#[macro_export]
macro_rules! test_support {
    () => {
        #[used]
        #[link_section = ".init_array"]
        static __PROCACTOR_TEST_SUPPORT: extern "C" fn() = {
            extern "C" fn __procactor_test_support() {
                $crate::__private::test_support_init()
            }
            __procactor_test_support
        };
    };
}

/// A library's own `#[cfg(test)]` unit tests start processes like any program, with
/// `test_support!()` once in the test module (the harness owns `main`).
#[cfg(test)]
mod tests {
    crate::test_support!();

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn a_library_unit_test_starts_processes() {
        let p = crate::Process::new(double, 21).start().unwrap();
        assert_eq!(p.join().unwrap(), 42);
        let pool = crate::Pool::new(1).unwrap();
        assert_eq!(pool.map(double, [1, 2]).unwrap(), [2, 4]);
    }
}
