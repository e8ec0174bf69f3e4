//! Procedural macros for [procactor](https://docs.rs/procactor). Use them through the facade:
//! `#[procactor::main]`, `#[procactor::actor]`, `#[derive(procactor::Message)]`.
//!
//! Each macro goes through the same steps, one module each: **parse** (the tokens into a small
//! model of the item), **validate** (every mistake in the model, combined into one error, so a
//! build reports them all), **expand** (the model into code). After a mistake the macro emits the
//! errors *and* a stand-in for the item that compiles, so the mistake is the only error: uses of
//! the item elsewhere do not fail too.
//!
//! The generated code names the runtime only through `::procactor::__private::...`, which stays
//! put when the public API moves.

#![warn(missing_docs, unreachable_pub)]

mod actor;
mod diag;
mod entry;
mod main_fn;
mod message;
mod register;

use proc_macro::TokenStream;

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

/// Registers a function by name, so that a process of another binary of the same program can
/// ask for it by that name ([`procactor::entry::lookup`]); functions sent to another host travel
/// as these names, never as addresses.
///
/// The name is the function's path (`module_path!()` and its name) unless `name = "..."` says
/// otherwise. The function keeps working as a plain function.
///
/// ```
/// #[procactor::entry]
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// #[procactor::entry(name = "bump")]
/// fn bump(n: &mut u64) {
///     *n += 1;
/// }
///
/// let f = procactor::entry::lookup::<fn(u64) -> u64>(concat!(module_path!(), "::double"))?;
/// assert_eq!(f(21), 42);
/// assert_eq!(procactor::entry::name_of(bump as fn(&mut u64)), Some("bump"));
/// // The type is checked: a name is never called as another type.
/// assert!(procactor::entry::lookup::<fn(u32) -> u32>("bump").is_err());
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// On `impl Actor for T` it registers the actor type `T` (what `#[procactor::actor]` does for
/// the actors it writes), to start by name with [`procactor::actor::spawn_named`]:
///
/// ```
/// # procactor::init();
/// use procactor::{Actor, Context};
/// struct Upper;
/// #[procactor::entry(name = "upper")]
/// impl Actor for Upper {
///     type Args = ();
///     type Msg = String;
///     type Reply = String;
///     fn init(_: (), _: &mut Context<Self>) -> Result<Self, procactor::actor::InitError> { Ok(Upper) }
///     fn handle(&mut self, s: String, _: &mut Context<Self>) -> String { s.to_uppercase() }
/// }
/// let u = procactor::actor::spawn_named::<Upper>("upper", ())?;
/// assert_eq!(u.ask("hi".into())?, "HI");
/// # u.stop()?; u.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// [`procactor::entry::lookup`]: https://docs.rs/procactor/latest/procactor/entry/fn.lookup.html
/// [`procactor::actor::spawn_named`]: https://docs.rs/procactor/latest/procactor/actor/fn.spawn_named.html
#[proc_macro_attribute]
pub fn entry(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(attr.into(), item.into()).into()
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
/// The actor type is registered by name, to start by name ([`spawn_named`]) from a program that
/// does not know its type: under `module_path!()::Type`, or `#[procactor::actor(name = "...")]`.
///
/// [`spawn_named`]: https://docs.rs/procactor/latest/procactor/actor/fn.spawn_named.html
///
/// Arguments and replies must have serde's traits. The schema that a caller and the actor compare
/// when they meet is made of the message and argument names and of each argument and reply
/// type's own `Message::schema()` (its type name, for a type that only has serde's derives).
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
/// a.cast().deposit(-20)?;                     // tell: no reply awaited
/// assert_eq!(a.timeout(std::time::Duration::from_secs(5)).balance()?, 130);
/// # a.stop()?; a.join()?;
/// # Ok::<(), procactor::Error>(())
/// ```
///
/// Misuse is a compile error on the offending span, every mistake of the block at once: a `self`
/// by value, an async or generic method, a borrowed argument, an argument that is not
/// serde-serializable, a message named like a method of `ActorRef`, a missing `init`:
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
    actor::actor(attr.into(), item.into()).into()
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

#[cfg(test)]
mod tests {
    use proc_macro2::{TokenStream, TokenTree};
    use quote::quote;

    /// Every path in `tokens` that starts at `::procactor`, as `procactor::a::b` (its segments up
    /// to the first that is not followed by `::ident`).
    fn procactor_paths(tokens: TokenStream, out: &mut Vec<String>) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let colon =
            |i: usize| matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':');
        let ident = |i: usize| match tokens.get(i) {
            Some(TokenTree::Ident(id)) => Some(id.to_string()),
            _ => None,
        };
        for (i, t) in tokens.iter().enumerate() {
            if let TokenTree::Group(g) = t {
                procactor_paths(g.stream(), out);
            }
            if i < 2 || !colon(i - 2) || !colon(i - 1) || ident(i).as_deref() != Some("procactor") {
                continue;
            }
            let mut path = vec!["procactor".to_string()];
            let mut at = i + 1;
            while colon(at) && colon(at + 1) {
                match ident(at + 2) {
                    Some(segment) => path.push(segment),
                    None => break,
                }
                at += 3;
            }
            out.push(path.join("::"));
        }
    }

    /// Generated code names the runtime through `::procactor::__private` alone, so moving the
    /// public API (`procactor::actor::Schema` to `procactor::message::Schema`, say) breaks no macro.
    #[test]
    fn generated_code_names_the_runtime_through_private_only() {
        let actor = quote! {
            impl Counter {
                fn init(start: u64, ctx: &mut Context<Self>) -> Result<Self, String> { todo!() }
                pub fn add(&mut self, n: u64, ctx: &mut Context<Self>) -> u64 { n }
                pub fn get(&self) -> u64 { 0 }
                fn started(&mut self, ctx: &mut Context<Self>) {}
                fn stopping(&mut self) {}
                fn stopped(&mut self, reason: &ExitReason) {}
                fn on_down(&mut self, down: Down) {}
                fn on_exit(&mut self, down: Down, ctx: &mut Context<Self>) {}
            }
        };
        let faulty_actor = quote! {
            impl Counter {
                pub fn add(self, n: &str) -> u64 { 0 }
            }
        };
        let main = quote!(
            fn main() {}
        );
        let faulty_main = quote!(
            fn main(args: Vec<String>) {}
        );
        let expansions = [
            crate::actor::actor(TokenStream::new(), actor),
            crate::actor::actor(TokenStream::new(), faulty_actor),
            crate::main_fn::main(TokenStream::new(), main),
            crate::main_fn::main(TokenStream::new(), faulty_main),
            crate::message::derive(quote!(
                enum E<T> {
                    A { x: Vec<T> },
                    B(u8),
                    C,
                }
            )),
        ];
        let mut paths = Vec::new();
        for tokens in expansions {
            procactor_paths(tokens, &mut paths);
        }
        for expected in [
            "procactor::__private::Actor",
            "procactor::__private::Message",
            "procactor::__private::Schema::derived",
            "procactor::__private::init",
            "procactor::__private::Caller",
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} in {paths:?}"
            );
        }
        let outside: Vec<_> = paths
            .iter()
            .filter(|p| p.split("::").nth(1) != Some("__private"))
            .collect();
        assert!(outside.is_empty(), "paths outside __private: {outside:?}");
    }
}
