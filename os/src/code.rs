//! Functions as something another process of the tree can call: [`CodeRef`], the one place where
//! an address becomes a function again (the only `transmute` of procactor).
//!
//! A function travels as [`SignedCode`]: its offset from a fixed symbol of this binary (ASLR maps
//! the binary at a different base in every process), the binary's identity, and an HMAC-SHA256
//! tag under the process tree's secret over both and the function's type. A process turns it
//! back into a function only through [`CodeRef::verify`], which checks all three: a reference
//! from another program, a corrupted or forged one, or one sent as another type is refused, never
//! called. Nothing a stranger sends is ever executed.
//!
//! Functions can also be registered by name ([`EntryPoint`], which `#[procactor::entry]`
//! writes): [`lookup`] resolves a name to the function, after checking its type, in any binary
//! that links it. Names are what crosses hosts: nothing but a registered function can be called
//! that way.
//!
//! Only code of the main executable can travel: the same offset means the same code in another
//! process only there. A function in a shared library (a `dlopen`ed plugin, a `-C prefer-dynamic`
//! build) is refused by [`CodeRef::new`] with an error that says so.

use std::any::TypeId;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::sys;

/// What a [`CodeRef`] holds: a function pointer (`fn(A) -> R`, `fn(&mut T)`, ...).
///
/// Implemented for the `Copy + Send + Sync` types that format as a pointer (`fmt::Pointer`):
/// function pointers and shared references, which are addresses without padding or niches
/// beyond non-null. [`CodeRef::new`] takes only values that point into the main program's code,
/// so [`CodeRef::get`] gives back what such a value was (in the runtime: always a function).
pub trait FnPtr: Copy + Send + Sync + std::fmt::Pointer + 'static {}

impl<F: Copy + Send + Sync + std::fmt::Pointer + 'static> FnPtr for F {}

/// A function of this binary that another process of the tree may call: made from a function
/// by [`new`](CodeRef::new), or from what another process sent by [`verify`](CodeRef::verify).
#[derive(Clone, Copy)]
pub struct CodeRef<F: FnPtr> {
    offset: isize,
    _f: PhantomData<F>,
}

impl<F: FnPtr> std::fmt::Debug for CodeRef<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeRef")
            .field("type", &std::any::type_name::<F>())
            .field("offset", &self.offset)
            .finish()
    }
}

/// A [`CodeRef`] as it travels between processes of one tree.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedCode {
    offset: isize,
    exe: (u64, u64),
    tag: u64,
}

impl<F: FnPtr> CodeRef<F> {
    /// A reference to `f`, which must be code of the main executable.
    pub fn new(f: F) -> Result<CodeRef<F>> {
        let addr = address(f);
        if !in_main_executable(addr) {
            return Err(Error::Unsupported(
                "procactor sends a child only functions of the main executable, and this one \
                 lives in a shared library (a dlopen'ed plugin or a `-C prefer-dynamic` build): \
                 move it into the binary, or register it by name with #[procactor::entry]",
            ));
        }
        Ok(CodeRef {
            offset: (addr as isize).wrapping_sub(anchor_address() as isize),
            _f: PhantomData,
        })
    }

    /// The function, callable here.
    pub fn get(self) -> F {
        let addr = (anchor_address() as isize).wrapping_add(self.offset) as usize;
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
        // SAFETY: `F` is a pointer type (`FnPtr`), the size of an address. A `CodeRef<F>` exists
        // only for an offset that `new` took from the bits of an `F` pointing into this binary's
        // code, that `at` took from a registered `F`'s address (its type checked), or that
        // `verify` checked was signed by a process of this tree, running this same binary, from
        // a `CodeRef<F>` of this same `F` (its `TypeId` is in the tag). The same binary maps the
        // same code at the same offset from `anchor` in every process, so `addr` is the value
        // that `F` had there, moved by the difference of the two load addresses: the same
        // function (for the function pointers that are the only `F` the runtime uses).
        unsafe { std::mem::transmute_copy::<usize, F>(&addr) }
    }

    /// The form that travels: signed with this process tree's secret.
    pub fn sign(self) -> SignedCode {
        let exe = exe_identity();
        SignedCode {
            offset: self.offset,
            exe,
            tag: tag(self.offset, exe, TypeId::of::<F>()),
        }
    }

    /// The function `code` refers to, if a process of this tree, running this same binary,
    /// signed it as an `F`.
    pub fn verify(code: SignedCode) -> Result<CodeRef<F>> {
        // A pool worker checks the same few references for every task: a reference this thread
        // already checked as an `F` (under the current key) is not checked again.
        if VERIFIED.with(|v| v.borrow_mut().get(&(code, TypeId::of::<F>())).is_some()) {
            return Ok(CodeRef {
                offset: code.offset,
                _f: PhantomData,
            });
        }
        let checked = Self::verify_now(code)?;
        VERIFIED.with(|v| v.borrow_mut().insert((code, TypeId::of::<F>()), ()));
        Ok(checked)
    }

    fn verify_now(code: SignedCode) -> Result<CodeRef<F>> {
        if code.exe != exe_identity() {
            return Err(Error::Unsupported(
                "a function reference from another program: only processes of the same binary \
                 can send each other functions (names registered with #[procactor::entry] work \
                 between binaries)",
            ));
        }
        let want = tag(code.offset, code.exe, TypeId::of::<F>());
        if !bool::from(want.to_le_bytes().ct_eq(&code.tag.to_le_bytes())) {
            return Err(Error::Unsupported(
                "a function reference that does not check (forged, corrupted, of another type, \
                 or from another process tree): refused",
            ));
        }
        Ok(CodeRef {
            offset: code.offset,
            _f: PhantomData,
        })
    }
}

impl<F: FnPtr> CodeRef<F> {
    fn at(addr: usize) -> CodeRef<F> {
        CodeRef {
            offset: (addr as isize).wrapping_sub(anchor_address() as isize),
            _f: PhantomData,
        }
    }
}

/// A function registered by name, gathered at link time (what `#[procactor::entry]` writes).
///
/// Made only by [`EntryPoint::new`], from a type that gives the function ([`Registered`]): its
/// recorded type is always the function's, so [`lookup`] can trust it.
pub struct EntryPoint {
    name: &'static str,
    type_id: fn() -> TypeId,
    type_name: fn() -> &'static str,
    address: fn() -> usize,
}

/// Gives the function an [`EntryPoint`] registers.
pub trait Registered<F: FnPtr> {
    /// The function.
    fn function() -> F;
}

fn address_of_registered<F: FnPtr, R: Registered<F>>() -> usize {
    address(R::function())
}

impl std::fmt::Debug for EntryPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryPoint")
            .field("name", &self.name)
            .field("type", &(self.type_name)())
            .finish()
    }
}

impl EntryPoint {
    /// The entry point `name` for the function `R` gives.
    pub const fn new<F: FnPtr, R: Registered<F>>(name: &'static str) -> EntryPoint {
        EntryPoint {
            name,
            type_id: TypeId::of::<F>,
            type_name: std::any::type_name::<F>,
            address: address_of_registered::<F, R>,
        }
    }

    /// Its name: the function's path (`module_path!()` and its name) unless given.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its type's name (for errors, and for peers in other binaries to compare).
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }
}

/// Every entry point of this binary.
#[linkme::distributed_slice]
pub static ENTRIES: [EntryPoint];

/// The function registered as `name`, if it is an `F`.
pub fn lookup<F: FnPtr>(name: &str) -> Result<F> {
    let mut found = ENTRIES.iter().filter(|e| e.name == name);
    let entry = found.next().ok_or_else(|| {
        Error::NotFound(format!(
            "no function is registered as {name:?} in this binary (mark it #[procactor::entry])"
        ))
    })?;
    if found.next().is_some() {
        return Err(Error::NotFound(format!(
            "two functions are registered as {name:?}: give one another name with              #[procactor::entry(name = \"...\")]"
        )));
    }
    if (entry.type_id)() != TypeId::of::<F>() {
        return Err(Error::NotFound(format!(
            "{name:?} is a `{}`, not a `{}`",
            (entry.type_name)(),
            std::any::type_name::<F>()
        )));
    }
    // The address of the registered function, of type `F` (checked just above).
    Ok(CodeRef::<F>::at((entry.address)()).get())
}

/// The name `f` is registered under, if it is.
pub fn name_of<F: FnPtr>(f: F) -> Option<&'static str> {
    let addr = address(f);
    ENTRIES
        .iter()
        .find(|e| (e.type_id)() == TypeId::of::<F>() && (e.address)() == addr)
        .map(|e| e.name)
}

/// `f`, signed: `CodeRef::new(f)?.sign()`, remembered by this thread (a pool signs the same
/// task function for every task).
pub fn sign<F: FnPtr>(f: F) -> Result<SignedCode> {
    let key = (address(f), TypeId::of::<F>());
    if let Some(code) = SIGNED.with(|c| c.borrow_mut().get(&key)) {
        return Ok(code);
    }
    let code = CodeRef::new(f)?.sign();
    SIGNED.with(|c| c.borrow_mut().insert(key, code));
    Ok(code)
}

/// A few recent entries of one thread, forgotten when the tree's key changes (see `tag`).
struct Recent<K, V> {
    generation: u64,
    entries: Vec<(K, V)>,
    next: usize,
}

impl<K: PartialEq, V: Copy> Recent<K, V> {
    const fn new() -> Self {
        Recent {
            generation: 0,
            entries: Vec::new(),
            next: 0,
        }
    }

    fn current(&mut self) -> &mut Vec<(K, V)> {
        let generation = KEY_GENERATION.load(Ordering::Acquire);
        if self.generation != generation {
            self.entries.clear();
            self.generation = generation;
        }
        &mut self.entries
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.current()
            .iter()
            .find(|(k, _)| k == key)
            .map(|&(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V) {
        let next = self.next;
        let entries = self.current();
        if entries.len() < TAG_CACHE {
            entries.push((key, value));
        } else {
            entries[next % TAG_CACHE] = (key, value);
            self.next = next.wrapping_add(1);
        }
    }
}

thread_local! {
    static SIGNED: std::cell::RefCell<Recent<(usize, TypeId), SignedCode>> =
        const { std::cell::RefCell::new(Recent::new()) };
    static VERIFIED: std::cell::RefCell<Recent<(SignedCode, TypeId), ()>> =
        const { std::cell::RefCell::new(Recent::new()) };
}

/// `f`'s address.
fn address<F: FnPtr>(f: F) -> usize {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    // SAFETY: `F` is a pointer type (`FnPtr`: no padding) of the size of `usize` (checked
    // above): its bits are an address.
    unsafe { std::mem::transmute_copy::<F, usize>(&f) }
}

/// A number for the type `F`, unique in this binary (even between two types of one name).
fn signature(type_id: TypeId) -> u64 {
    use std::hash::{Hash, Hasher};
    // Unkeyed: the same binary gives the same number in every process.
    let mut h = std::hash::DefaultHasher::new();
    type_id.hash(&mut h);
    h.finish()
}

/// A fixed point in this binary: functions travel as offsets from it.
#[inline(never)]
fn anchor() {}

#[inline]
fn anchor_address() -> usize {
    anchor as fn() as usize
}

/// This binary's identity (device and inode of its file): the same offsets mean the same code
/// only between processes that run the same file.
#[inline]
pub fn exe_identity() -> (u64, u64) {
    static ID: OnceLock<(u64, u64)> = OnceLock::new();
    *ID.get_or_init(sys::exe_identity)
}

/// The HMAC-SHA256 (truncated to 64 bits) under the tree's secret of a function's offset, the
/// binary's identity and the function's type. A pool task signs its entry and function, and its
/// worker checks them, on every call: the last few tags this thread computed are kept, so a hot
/// function costs one look-up, not four HMACs (the cache holds at most `TAG_CACHE` entries, so a
/// stream of forged references cannot grow it, and a new key empties it).
#[inline]
fn tag(offset: isize, exe: (u64, u64), type_id: TypeId) -> u64 {
    let key = (offset, exe, type_id);
    TAGS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(tag) = cache.get(&key) {
            return tag;
        }
        let tag = compute_tag(offset, exe, signature(type_id));
        cache.insert(key, tag);
        tag
    })
}

/// How many tags a thread keeps.
const TAG_CACHE: usize = 16;

type TagKey = (isize, (u64, u64), TypeId);

thread_local! {
    static TAGS: std::cell::RefCell<Recent<TagKey, u64>> =
        const { std::cell::RefCell::new(Recent::new()) };
}

/// Bumped whenever this process adopts a key: cached tags of another key are dropped.
static KEY_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn compute_tag(offset: isize, exe: (u64, u64), signature: u64) -> u64 {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&tree_key())
        .expect("HMAC takes keys of any length");
    mac.update(&offset.to_le_bytes());
    mac.update(&exe.0.to_le_bytes());
    mac.update(&exe.1.to_le_bytes());
    mac.update(&signature.to_le_bytes());
    let out = mac.finalize().into_bytes();
    u64::from_le_bytes(out[..8].try_into().expect("32 bytes"))
}

/// The tree's secret, once drawn or adopted: a leaked box, never freed (a key is replaced at most
/// once per process, by [`adopt_tree_key`]). No lock: a child forked while another thread was
/// reading it cannot find it held.
static KEY: AtomicPtr<[u8; 32]> = AtomicPtr::new(std::ptr::null_mut());

/// The process tree's secret: 256 random bits the root draws, inherited by every descendant
/// (forked children share the memory; exec'd ones get it in their job and [`adopt_tree_key`]).
pub fn tree_key() -> [u8; 32] {
    let current = KEY.load(Ordering::Acquire);
    // SAFETY: a non-null KEY points to a leaked box, never freed.
    if let Some(key) = unsafe { current.as_ref() } {
        return *key;
    }
    let drawn = sys::random_bytes::<32>().unwrap_or_else(|e| {
        // Pre-3.17 kernels only: tags then only catch corruption, not forgery.
        log::error!(target: "procactor::code", "getrandom: {e}");
        let mixed = u128::from(sys::getpid()) << 64 | u128::from(sys::monotonic_ns());
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(&mixed.to_le_bytes());
        k
    });
    let fresh = Box::into_raw(Box::new(drawn));
    match KEY.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => drawn,
        Err(theirs) => {
            // Another thread drew (or adopted) one first: that one is the key.
            // SAFETY: `fresh` was never shared; `theirs` is non-null (only null is replaced)
            // and points to a leaked box.
            unsafe {
                drop(Box::from_raw(fresh));
                *theirs
            }
        }
    }
}

/// Makes `key` this process's tree secret (a child that was sent its parent's).
pub fn adopt_tree_key(key: [u8; 32]) {
    // The key it replaces is leaked: another thread may still be reading it.
    KEY.store(Box::into_raw(Box::new(key)), Ordering::Release);
    KEY_GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Does now, in this thread, what its forked copies would otherwise each do on first use:
/// find where the main executable's code lies and the binary's identity, and set up this
/// thread's code caches (a thread-local with a destructor registers it with the C library,
/// which asks the loader: code pages of both, 64 KiB at a time, that every child would then
/// hold on its own). The fork server calls it before it forks anything.
///
/// ```
/// procactor_os::code::prepare_to_fork(); // idempotent: the second call finds it all done
/// procactor_os::code::prepare_to_fork();
/// ```
pub fn prepare_to_fork() {
    let _ = in_main_executable(anchor_address());
    let _ = exe_identity();
    SIGNED.with(|_| ());
    VERIFIED.with(|_| ());
    TAGS.with(|_| ());
}

/// Is `addr` in an executable segment of the main program (not of a shared library)?
#[inline]
fn in_main_executable(addr: usize) -> bool {
    static TEXT: OnceLock<Vec<(usize, usize)>> = OnceLock::new();
    let text = TEXT.get_or_init(sys::main_program_text);
    let inside = |a: usize| text.iter().any(|&(lo, hi)| lo <= a && a < hi);
    inside(addr) && inside(anchor_address())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    fn triple(x: u32) -> u32 {
        x * 3
    }

    #[test]
    fn a_function_of_the_binary_round_trips() {
        let code = CodeRef::new(double as fn(u32) -> u32).unwrap();
        let back = CodeRef::<fn(u32) -> u32>::verify(code.sign()).unwrap();
        assert_eq!(back.get()(21), 42);
    }

    #[test]
    fn a_reference_sent_as_another_type_is_refused() {
        let code = CodeRef::new(double as fn(u32) -> u32).unwrap().sign();
        assert!(CodeRef::<fn(u64) -> u64>::verify(code).is_err());
    }

    #[test]
    fn a_moved_offset_or_a_forged_tag_is_refused() {
        let code = CodeRef::new(double as fn(u32) -> u32).unwrap().sign();
        let other = CodeRef::new(triple as fn(u32) -> u32).unwrap().sign();
        let moved = SignedCode {
            offset: other.offset,
            ..code
        };
        assert!(CodeRef::<fn(u32) -> u32>::verify(moved).is_err());
        // Any bit of the offset or the tag changed: refused, never called.
        for bit in 0..64 {
            let moved = SignedCode {
                offset: code.offset ^ (1 << bit),
                ..code
            };
            assert!(
                CodeRef::<fn(u32) -> u32>::verify(moved).is_err(),
                "offset bit {bit}"
            );
            let forged = SignedCode {
                tag: code.tag ^ (1 << bit),
                ..code
            };
            assert!(
                CodeRef::<fn(u32) -> u32>::verify(forged).is_err(),
                "tag bit {bit}"
            );
        }
        let elsewhere = SignedCode {
            exe: (code.exe.0, code.exe.1 ^ 1),
            ..code
        };
        assert!(CodeRef::<fn(u32) -> u32>::verify(elsewhere).is_err());
    }

    #[test]
    fn cached_tags_answer_as_computed_ones_and_stay_bounded() {
        let code = CodeRef::new(double as fn(u32) -> u32).unwrap().sign();
        // Checked twice: the second time from the cache, with the same answer.
        assert!(CodeRef::<fn(u32) -> u32>::verify(code).is_ok());
        assert!(CodeRef::<fn(u32) -> u32>::verify(code).is_ok());
        // Many distinct forged references do not grow the cache past its bound.
        for bit in 0..64 {
            let forged = SignedCode {
                tag: code.tag ^ (1 << bit),
                ..code
            };
            assert!(CodeRef::<fn(u32) -> u32>::verify(forged).is_err());
        }
        TAGS.with(|c| assert!(c.borrow().entries.len() <= TAG_CACHE));
        // (A new key empties the cache through `KEY_GENERATION`; changing this process's key
        // here would race the other tests, which sign with it.)
    }

    #[test]
    fn code_of_a_shared_library_is_refused() {
        // `getpid` lives in the C library, a shared object.
        let in_libc = libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize;
        assert!(in_main_executable(double as fn(u32) -> u32 as usize));
        assert!(!in_main_executable(in_libc));
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;

    fn add_one(x: u64) -> u64 {
        x + 1
    }

    struct AddOne;
    impl Registered<fn(u64) -> u64> for AddOne {
        fn function() -> fn(u64) -> u64 {
            add_one
        }
    }

    #[linkme::distributed_slice(ENTRIES)]
    static ADD_ONE: EntryPoint = EntryPoint::new::<fn(u64) -> u64, AddOne>("tests::add_one");

    #[test]
    fn a_registered_function_is_found_by_name_and_type() {
        let f = lookup::<fn(u64) -> u64>("tests::add_one").unwrap();
        assert_eq!(f(41), 42);
        assert_eq!(name_of(add_one as fn(u64) -> u64), Some("tests::add_one"));
        assert_eq!(ADD_ONE.type_name(), "fn(u64) -> u64");
    }

    #[test]
    fn a_wrong_type_or_an_unknown_name_is_refused() {
        let err = lookup::<fn(u32) -> u32>("tests::add_one").unwrap_err();
        assert!(err.to_string().contains("fn(u64) -> u64"), "{err}");
        assert!(lookup::<fn(u64) -> u64>("tests::nothing").is_err());
        assert_eq!(name_of((|x| x) as fn(u64) -> u64), None);
    }
}

/// `f` as a function pointer: itself if it is one, or a shim that calls it if it is a function
/// item or a closure that captures nothing (both have no bytes: there is only one such value).
/// `None` for a closure that captures variables: another process cannot have them.
pub fn fn_pointer<F, A, R>(f: F) -> Option<fn(A) -> R>
where
    F: Fn(A) -> R + Copy + 'static,
    A: 'static,
    R: 'static,
{
    if std::mem::size_of::<F>() == 0 {
        return Some(call_stateless::<F, A, R>);
    }
    (&f as &dyn std::any::Any)
        .downcast_ref::<fn(A) -> R>()
        .copied()
}

/// A zero-argument function item or capture-free closure, as an `fn(()) -> R`.
pub fn fn_pointer_no_arg<F, R>(_: F) -> Option<fn(()) -> R>
where
    F: Fn() -> R + Copy + 'static,
    R: 'static,
{
    (std::mem::size_of::<F>() == 0).then_some(call_stateless_no_arg::<F, R>)
}

/// The value of a zero-sized callable type.
fn stateless<F: Copy>() -> F {
    // Only reached for zero-sized `F` (see `fn_pointer`); checked again, at no cost.
    assert!(std::mem::size_of::<F>() == 0, "not a stateless callable");
    // SAFETY: `F` has no bytes (checked just above), so there is nothing to initialise. Only
    // function items and closures reach here (`fn_pointer` is bounded by `Fn`, which on stable
    // Rust only functions, closures and function pointers implement, and function pointers are
    // not zero-sized), and they are `Copy`: the caller had one in hand and could copy it at
    // will. A zero-sized closure captures nothing or only zero-sized `Copy` values, which have
    // no bytes to get wrong; what such a value means (a proof that something was done) does not
    // cross to another process, as for any value sent to a child.
    unsafe { std::mem::zeroed::<F>() }
}

fn call_stateless<F: Fn(A) -> R + Copy, A, R>(a: A) -> R {
    stateless::<F>()(a)
}

fn call_stateless_no_arg<F: Fn() -> R + Copy, R>((): ()) -> R {
    stateless::<F>()()
}

#[cfg(test)]
mod fn_pointer_tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    #[test]
    fn items_closures_and_pointers_become_pointers_captures_do_not() {
        assert_eq!(fn_pointer(double).unwrap()(21), 42);
        assert_eq!(fn_pointer(|x: u32| x + 1).unwrap()(41), 42);
        let p: fn(u32) -> u32 = double;
        assert_eq!(fn_pointer(p).unwrap()(4), 8);
        let k = 5u32;
        assert!(fn_pointer(move |x: u32| x + k).is_none());
        assert_eq!(fn_pointer_no_arg(|| 42u8).unwrap()(()), 42);
        // The shim of a function item is code of this binary: it can travel.
        assert!(CodeRef::new(fn_pointer(double).unwrap()).is_ok());
    }
}
