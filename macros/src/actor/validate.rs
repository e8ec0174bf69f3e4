//! `#[actor]`, step 2: everything wrong with the [`ActorImpl`], in one error (one message per
//! mistake, in the order written).

use std::collections::HashMap;

use syn::spanned::Spanned;

use super::model::{ActorImpl, Method, Receiver, Role};
use super::reserved::RESERVED;
use crate::diag::Errors;

pub(super) fn validate(model: &ActorImpl) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Err(e) = &model.registered_as {
        errors.push(e.clone());
    }
    // The first method of each variant name: two methods must not make the same variant.
    let mut variants: HashMap<String, &Method> = HashMap::new();
    for m in &model.methods {
        match m.role {
            Role::Init => init(m, &mut errors),
            Role::Hook => hook(m, &mut errors),
            Role::Message => {
                message(m, &mut errors);
                let first = variants.entry(m.variant().to_string()).or_insert(m);
                // Two methods of one name are rustc's to report.
                if first.ident != m.ident {
                    errors.add(
                        m.ident.span(),
                        format!(
                            "`{}` and `{}` would both be the message `{}`: rename one",
                            first.ident,
                            m.ident,
                            m.variant()
                        ),
                    );
                }
            }
        }
    }
    if model.init().is_none() {
        errors.add(
            model.self_ty.span(),
            "an #[procactor::actor] impl needs a constructor: `fn init(args: T) -> Self` (or \
             `-> Result<Self, E>`), run in the actor's own process",
        );
    }
    if model.messages().next().is_none() {
        errors.add(
            model.self_ty.span(),
            "this actor has no messages: make at least one method `pub fn name(&self, ...)`",
        );
    }
    errors.finish()
}

fn init(m: &Method, errors: &mut Errors) {
    if let Receiver::Ref(span) | Receiver::Other(span) = m.receiver {
        errors.add(span, "`init` builds the actor: it takes no `self`");
    }
    if m.args.len() > 1 {
        errors.add(
            m.inputs,
            "`init` takes one argument (use a tuple or a struct for more), and optionally \
             `ctx: &mut Context<Self>` after it",
        );
    }
    context_last(m, errors);
    if let Some(arg) = m.args.first() {
        travels(&arg.ty, errors);
    }
}

fn hook(m: &Method, errors: &mut Errors) {
    if m.public {
        errors.add(
            m.ident.span(),
            format!(
                "`{}` is a lifecycle hook: make it private (a hook), or rename it (a message)",
                m.ident
            ),
        );
    }
    context_last(m, errors);
}

fn message(m: &Method, errors: &mut Errors) {
    if let Receiver::Other(span) = m.receiver {
        errors.add(
            span,
            "a message handler takes `&self` or `&mut self`: the actor's state stays in its \
             process",
        );
    }
    if let Some(span) = m.asyncness {
        errors.add(
            span,
            "message handlers are not async: an actor handles one message at a time",
        );
    }
    if !m.generics.params.is_empty() {
        errors.add(
            m.generics.span(),
            "message handlers cannot be generic: each message is one concrete type",
        );
    }
    let name = m.ident.to_string();
    if RESERVED.contains(&name.as_str()) {
        errors.add(
            m.ident.span(),
            format!(
                "`{name}` is already a method of `ActorRef`: rename this message (for example \
                 `{name}_it` or `do_{name}`)"
            ),
        );
    }
    context_last(m, errors);
    for arg in &m.args {
        travels(&arg.ty, errors);
    }
    travels(&m.output, errors);
}

fn context_last(m: &Method, errors: &mut Errors) {
    for span in &m.misplaced_ctx {
        errors.add(*span, "the `&mut Context<Self>` parameter comes last");
    }
}

/// An argument or a reply goes to another process: a borrowed type cannot, nor an `impl Trait`.
/// (Whether it has serde's traits is for the compiler: see the expansion's checks.)
fn travels(ty: &syn::Type, errors: &mut Errors) {
    match ty {
        syn::Type::Reference(r) => {
            let owned = match &*r.elem {
                syn::Type::Path(p) if p.path.is_ident("str") => "`String` instead of `&str`",
                syn::Type::Slice(_) => "a `Vec<T>` instead of a slice",
                _ => "the value itself instead of a reference",
            };
            errors.add(
                ty.span(),
                format!(
                    "message arguments and replies travel to another process: take an owned \
                     type ({owned})"
                ),
            );
        }
        syn::Type::ImplTrait(_) => errors.add(
            ty.span(),
            "message arguments and replies travel to another process: name a concrete type, \
             not an `impl Trait`",
        ),
        _ => {}
    }
}
