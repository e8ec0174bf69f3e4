//! # procactor
//!
//! Python's `multiprocessing`, done the Rust way: every worker is an isolated OS process, messages
//! are typed Rust values, and failure is data. A panic, a `kill -9` or an `exit(3)` in a child
//! comes back to the parent as an [`Error`]; it never takes the parent down or hangs it.
//!
//! ```
//! procactor::init(); // first line of main: spawned children start here
//!
//! use procactor::{Connection, Pipe, Process};
//!
//! fn shout(conn: Connection<String>) -> usize {
//!     let msg = conn.recv().unwrap();
//!     conn.send(msg.to_uppercase()).unwrap();
//!     msg.len()
//! }
//!
//! let (here, there) = Pipe::<String>::duplex()?;
//! let child = Process::new(shout, there).name("shouter").start()?;
//! here.send("hello".into())?;
//! assert_eq!(here.recv()?, "HELLO");
//! assert_eq!(child.join()?, 5);
//! # Ok::<(), procactor::Error>(())
//! ```
//!
//! ## Start-up
//! With the default start method ([`StartMethod::Spawn`]) a child is a fresh run of the same
//! binary: [`init()`] (or [`#[procactor::main]`](main)) must come first in `main`, where the child
//! takes over. A program that forgets it gets an [`Error::Start`] naming the line to add, never a
//! hang or a fork bomb. In integration tests, whose `main` belongs to the test harness, put
//! [`test_support!()`] once in each test file instead.

pub use procactor_macros::{actor, entry, main, Message};
pub use procactor_runtime::*;

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
