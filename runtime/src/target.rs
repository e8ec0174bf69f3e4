//! What another process can run: a function, or a closure that captures nothing. The
//! [`Target`] bound gives a procactor message, not a type mismatch, when something else is
//! passed (a closure that captures variables, a method, a function of borrowed arguments).

use procactor_os::code;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// A value that can travel to another process and back: an argument or a result of a
/// [`Target`]. It is sent by value, encoded with serde, so it owns its data. Every type with
/// serde's `Serialize` and `Deserialize` that holds no borrowed data is one (there is nothing
/// to implement).
///
/// ```
/// fn takes<T: procactor::process::Portable>(_: T) {}
/// takes((String::from("a"), vec![1u8, 2], 3.5f64));
/// ```
///
/// A borrowed value is not (the other process does not have what it points to):
///
/// ```compile_fail
/// fn takes<T: procactor::process::Portable>(_: T) {}
/// let s = String::from("a");
/// takes(&s);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel to another process",
    label = "sent by value to another process",
    note = "arguments and results travel by value, encoded with serde: use an owned type \
            (`String` for `&str`, `Vec<T>` for `&[T]`) with serde's `Serialize` and `Deserialize`",
    note = "to run a method, wrap it in a function of an owned value: \
            `fn task(s: State) -> R {{ s.method() }}`"
)]
pub trait Portable: Serialize + DeserializeOwned + 'static {}

impl<T: Serialize + DeserializeOwned + 'static> Portable for T {}

/// A [`Target`] that takes its argument (`fn(A) -> R`).
#[derive(Debug)]
pub enum WithArg {}

/// A [`Target`] that takes none (`fn() -> R`): its argument is `()`.
#[derive(Debug)]
pub enum NoArg {}

/// A function another process can run on an `A`, giving an `R`: a function (`fn task(x: A) ->
/// R`, or `fn task() -> R` with `()` as the argument), a function pointer, or a closure that
/// captures nothing. The `M` parameter tells the two shapes apart; it is always inferred.
///
/// ```
/// # procactor::init();
/// use procactor::Process;
///
/// fn answer() -> u32 {
///     42
/// }
///
/// assert_eq!(Process::new(answer, ()).start()?.join()?, 42);
/// assert_eq!(Process::new(|x: u32| x + 1, 41).start()?.join()?, 42);
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// A closure that captures a variable cannot run elsewhere (the other process does not have
/// the variable): send what it needs as the argument instead.
///
/// ```compile_fail
/// # procactor::init();
/// let name = String::from("x");
/// let p = procactor::Process::new(move |n: u32| format!("{name}{n}"), 1);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run in another process",
    label = "a child process can run a function or a closure that captures nothing",
    note = "a child gets a copy of the code, not of your variables: send what it needs as the \
            argument, `Process::new(task, (a, b))` with `fn task((a, b): (A, B)) -> R`",
    note = "the argument is taken by value and owns its data (`String`, not `&str`); to run a \
            method, wrap it: `fn task(s: State) -> R {{ s.method() }}`",
    note = "a function of no argument is a target too: `fn task() -> R`, with `()` as the argument"
)]
pub trait Target<A, R, M>: 'static {
    /// The function pointer that travels (a shim for function items and closures).
    #[doc(hidden)]
    fn into_fn(self) -> Result<fn(A) -> R>;
}

impl<F, A, R> Target<A, R, WithArg> for F
where
    F: Fn(A) -> R + Copy + 'static,
    A: 'static,
    R: 'static,
{
    fn into_fn(self) -> Result<fn(A) -> R> {
        refuse_captures::<F>();
        code::fn_pointer(self).ok_or_else(captures)
    }
}

impl<F, R> Target<(), R, NoArg> for F
where
    F: Fn() -> R + Copy + 'static,
    R: 'static,
{
    fn into_fn(self) -> Result<fn(()) -> R> {
        refuse_no_arg_pointers::<F>();
        // (Never `None`: only zero-sized callables pass the check above.)
        code::fn_pointer_no_arg(self).ok_or(Error::Unsupported(NO_ARG_POINTER))
    }
}

/// The size of a function pointer: a closure capturing exactly this much is told apart from one
/// at run time (by type), anything else at compile time.
const ADDRESS: usize = std::mem::size_of::<fn()>();

/// Stops the build on a closure that captures something other than one address (that one is
/// told apart from a function pointer at run time, by type).
fn refuse_captures<F>() {
    const {
        assert!(
            std::mem::size_of::<F>() == 0 || std::mem::size_of::<F>() == ADDRESS,
            "procactor: a closure that captures variables cannot run in another process (the \
             other process does not have them): pass a function or a closure that captures \
             nothing, and send what it needs as the argument"
        )
    };
}

/// What a zero-argument target that is not zero-sized gets told.
const NO_ARG_POINTER: &str = "procactor: a zero-argument target must be the function itself or a \
     closure that captures nothing (not a `fn() -> R` pointer, not a capturing closure): pass \
     `task`, or make it `fn task(_: ()) -> R`, whose pointers can travel";

/// Stops the build on a zero-argument target with bytes: a `fn() -> R` pointer (which has no
/// shim to travel through: only a zero-sized callable can be conjured in the child) or a
/// closure that captures something.
fn refuse_no_arg_pointers<F>() {
    const { assert!(std::mem::size_of::<F>() == 0, "{}", NO_ARG_POINTER) };
}

fn captures() -> Error {
    Error::Unsupported(
        "a closure that captures variables cannot run in another process (it does not have \
         them): pass a function or a closure that captures nothing, and send what it needs as \
         the argument",
    )
}
