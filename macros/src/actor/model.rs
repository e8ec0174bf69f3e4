//! What `#[actor]` knows about an `impl` block once parsed: no tokens left to re-read, no verdict
//! yet (that is [`validate`](super::validate)'s).

use proc_macro2::Span;
use quote::format_ident;

/// An `impl` block under `#[actor]`.
pub(crate) struct ActorImpl {
    /// The attribute's `name = "..."`, if given: the name the actor type is registered under
    /// (else `module::Type`).
    pub(crate) registered_as: syn::Result<Option<syn::LitStr>>,
    /// The block as written: emitted back unchanged but for lint attributes.
    pub(crate) imp: syn::ItemImpl,
    /// `Counter` in `impl Counter`, the `Self` of the block.
    pub(crate) self_ty: syn::Type,
    /// `Counter`: the generated items are `CounterMsg`, `CounterReply` and `CounterApi`.
    pub(crate) name: syn::Ident,
    /// The methods that mean something to the actor, in the order written.
    pub(crate) methods: Vec<Method>,
}

/// What a method is to the actor.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `fn init`: builds the state.
    Init,
    /// `started`, `stopping`, `stopped`, `on_down`, `on_exit`.
    Hook,
    /// A `pub fn` with a `self` receiver.
    Message,
}

/// The lifecycle hooks, by name.
pub(crate) const HOOKS: &[&str] = &["started", "stopping", "stopped", "on_down", "on_exit"];

/// A method of the block, as much of it as the expansion needs.
pub(crate) struct Method {
    pub(crate) role: Role,
    pub(crate) ident: syn::Ident,
    /// Whether the method is `pub`.
    pub(crate) public: bool,
    pub(crate) receiver: Receiver,
    /// The `async`, if the method has one.
    pub(crate) asyncness: Option<Span>,
    pub(crate) generics: syn::Generics,
    /// The typed parameters, but for the context.
    pub(crate) args: Vec<Arg>,
    /// Whether the last parameter is a `&mut Context<Self>`.
    pub(crate) takes_ctx: bool,
    /// The `&mut Context<Self>` parameters that are not last (a mistake).
    pub(crate) misplaced_ctx: Vec<Span>,
    /// Where the parameters are.
    pub(crate) inputs: Span,
    /// The return type, `()` if none is written.
    pub(crate) output: syn::Type,
    /// Whether the return type is a `Result<..>` (for `init`).
    pub(crate) returns_result: bool,
    /// The `///` lines, which the generated method keeps.
    pub(crate) docs: Vec<syn::Attribute>,
}

/// How a method takes `self`.
pub(crate) enum Receiver {
    /// An associated function.
    None,
    /// `&self` or `&mut self` (where its `self` is).
    Ref(Span),
    /// `self`, `mut self` or `self: Box<Self>` (a mistake for a message).
    Other(Span),
}

/// A message argument, named (a pattern parameter such as `_` gets a name of its own).
pub(crate) struct Arg {
    pub(crate) ident: syn::Ident,
    pub(crate) ty: syn::Type,
}

impl ActorImpl {
    /// `fn init`, if there is one.
    pub(crate) fn init(&self) -> Option<&Method> {
        self.methods.iter().find(|m| m.role == Role::Init)
    }

    /// The messages, in the order written.
    pub(crate) fn messages(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter().filter(|m| m.role == Role::Message)
    }

    /// The hook of this name, if the block has one.
    pub(crate) fn hook(&self, name: &str) -> Option<&Method> {
        self.methods
            .iter()
            .find(|m| m.role == Role::Hook && m.ident == name)
    }

    /// The generated enum of messages.
    pub(crate) fn msg_ty(&self) -> syn::Ident {
        format_ident!("{}Msg", self.name)
    }

    /// The generated enum of replies.
    pub(crate) fn reply_ty(&self) -> syn::Ident {
        format_ident!("{}Reply", self.name)
    }

    /// The generated trait of client methods.
    pub(crate) fn api(&self) -> syn::Ident {
        format_ident!("{}Api", self.name)
    }

    /// The docs of the three generated items.
    pub(crate) fn docs(&self) -> [String; 3] {
        let name = &self.name;
        [
            format!("The messages of actor [`{name}`] (one variant per `pub fn`)."),
            format!("The replies of actor [`{name}`]."),
            format!(
                "The methods of actor [`{name}`] on `ActorRef<{name}>` (ask) and its `send()`, \
                 `try_send()` and `timeout(d)` forms. Bring it into scope to call them."
            ),
        ]
    }
}

impl Method {
    /// The message's variant in the generated enums: `add_one` is `AddOne`.
    pub(crate) fn variant(&self) -> syn::Ident {
        let mut out = String::new();
        let mut upper = true;
        for c in self.ident.to_string().trim_start_matches("r#").chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        syn::Ident::new(&out, self.ident.span())
    }
}
