//! Procedural macros for [procactor](https://docs.rs/procactor). Use them through the facade:
//! `#[procactor::main]`, `#[procactor::actor]`, `#[derive(procactor::Message)]`. The generated
//! code names everything through `::procactor::...`.

mod actor;
mod diag;
mod main_fn;
mod message;

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;

/// Makes `procactor::init()` the first statement of `main`, where spawned children take over.
///
/// ```
/// #[procactor::main]
/// fn main() {
///     let p = procactor::Process::new(|x: u32| x + 1, 1).start().unwrap();
///     assert_eq!(p.join().unwrap(), 2);
/// }
/// ```
///
/// It goes on a plain function without parameters (`fn main()`, possibly returning a `Result`):
///
/// ```compile_fail
/// #[procactor::main]
/// fn main(x: u32) {}
/// ```
///
/// nor an async one (start the async runtime inside `main`: children take over before it runs):
///
/// ```compile_fail
/// #[procactor::main]
/// async fn main() {}
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    main_fn::main(attr.into(), item.into()).into()
}

/// Turns an `impl` block into an actor whose methods are typed messages.
///
/// Every `pub fn` taking `&self` or `&mut self` becomes a message: a variant of the generated
/// `<Name>Msg` enum, its return value a variant of `<Name>Reply`, and a method of the generated
/// `<Name>Api` trait, implemented for `ActorRef<Name>` (ask) and its `send()` (tell),
/// `try_send()` and `timeout(d)` forms. A trailing `ctx: &mut Context<Self>` parameter gives a
/// handler the actor's context.
///
/// `fn init(args: T) -> Self` (or `-> Result<Self, E>`, optionally with `ctx` after `args`)
/// builds the state in the actor's own process. Private methods named `started`, `stopping`,
/// `stopped`, `on_down` and `on_exit` are the lifecycle hooks; other private methods are left
/// alone.
///
/// ```
/// # procactor::init();
/// struct Account { cents: i64 }
///
/// #[procactor::actor]
/// impl Account {
///     fn init(cents: i64) -> Self { Account { cents } }
///     /// Adds (or, negative, takes) money; the new balance.
///     pub fn deposit(&mut self, cents: i64) -> i64 { self.cents += cents; self.cents }
///     pub fn balance(&self) -> i64 { self.cents }
/// }
///
/// let a = procactor::spawn::<Account>(100)?;
/// assert_eq!(a.deposit(50)?, 150);
/// a.send().deposit(-20)?;                     // tell: no reply awaited
/// assert_eq!(a.timeout(std::time::Duration::from_secs(5)).balance()?, 130);
/// # a.stop()?; a.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// Misuse is a compile error on the offending span: a `self` by value, a generic method, an
/// argument that is not serde-serializable, a message named like a method of `ActorRef`:
///
/// ```compile_fail
/// struct A;
/// #[procactor::actor]
/// impl A {
///     fn init(_: ()) -> Self { A }
///     pub fn stop(&self) {}
/// }
/// ```
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let keep: TokenStream2 = item.clone().into();
    match actor::expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            // The error, plus the impl block unchanged: no cascade of "method not found".
            let e = e.to_compile_error();
            quote!(#e #keep).into()
        }
    }
}

/// Implements `procactor::Message` for a struct or enum (next to serde's derives). Its schema,
/// which an `ActorRef` checks when it first meets its actor, is made of the type's path, its
/// variant and field names, and each field type's own `Message::schema()`: so every field type
/// must be a `Message` too (the standard types are; derive it on your own), and the fingerprint
/// follows what the field types are, not how they are written.
///
/// ```
/// use procactor::Message;
///
/// #[derive(serde::Serialize, serde::Deserialize, Message)]
/// struct Item { sku: String, count: u32 }
///
/// type Items = Vec<Item>;
///
/// #[derive(serde::Serialize, serde::Deserialize, Message)]
/// enum Command { Add { items: Items }, Reset }
///
/// assert!(Command::schema().name.ends_with("Command"));
/// assert_eq!(Command::schema(), Command::schema()); // the same in every build
/// ```
///
/// A field whose type is not a `Message` is a compile error on that field's type:
///
/// ```compile_fail
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Plain { x: u32 }
///
/// #[derive(serde::Serialize, serde::Deserialize, procactor::Message)]
/// struct Wrapper { inner: Plain } // error: `Plain` is not a procactor `Message`
/// ```
#[proc_macro_derive(Message)]
pub fn derive_message(item: TokenStream) -> TokenStream {
    message::derive(item.into()).into()
}
