//! `#[actor]`, step 1: the tokens as an [`ActorImpl`]. Only what leaves nothing to build a model
//! of is an error here (not an inherent `impl` of one concrete, named type); every other mistake
//! is [`validate`](super::validate)'s.

use proc_macro2::{Span, TokenStream};
use quote::format_ident;
use syn::spanned::Spanned;

use super::model::{ActorImpl, Arg, Method, Receiver, Role, HOOKS};

pub(super) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<ActorImpl> {
    let imp: syn::ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[procactor::actor] goes on an inherent `impl` block: `impl MyActor { ... }`",
        )
    })?;
    if let Some((path, _)) = &imp.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[procactor::actor] goes on an inherent `impl` block, not a trait impl",
        ));
    }
    if !imp.generics.params.is_empty() {
        return Err(syn::Error::new(
            imp.generics.span(),
            "generic actors are not supported: each actor is a concrete type",
        ));
    }
    let self_ty = (*imp.self_ty).clone();
    let name = match &self_ty {
        syn::Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    }
    .ok_or_else(|| syn::Error::new(self_ty.span(), "#[procactor::actor] needs a named type"))?;
    let methods = imp
        .items
        .iter()
        .filter_map(|item| match item {
            syn::ImplItem::Fn(f) => method(f),
            _ => None,
        })
        .collect();
    Ok(ActorImpl {
        registered_as: crate::register::parse_name(attr, "#[procactor::actor]"),
        imp,
        self_ty,
        name,
        methods,
    })
}

/// The method, if it means something to the actor (private helpers and `pub` associated
/// functions do not).
fn method(f: &syn::ImplItemFn) -> Option<Method> {
    let sig = &f.sig;
    let public = matches!(f.vis, syn::Visibility::Public(_));
    let receiver = match sig.receiver() {
        None => Receiver::None,
        Some(r) => match &r.kind {
            syn::ReceiverKind::Reference(..) => Receiver::Ref(r.self_token.span),
            _ => Receiver::Other(r.span()),
        },
    };
    let role = if sig.ident == "init" {
        Role::Init
    } else if HOOKS.iter().any(|h| sig.ident == h) {
        Role::Hook
    } else if public && !matches!(receiver, Receiver::None) {
        Role::Message
    } else {
        return None;
    };
    let (args, takes_ctx, misplaced_ctx) = params(sig);
    Some(Method {
        role,
        ident: sig.ident.clone(),
        public,
        receiver,
        asyncness: sig.asyncness.map(|a| a.span),
        generics: sig.generics.clone(),
        args,
        takes_ctx,
        misplaced_ctx,
        inputs: sig.inputs.span(),
        output: match &sig.output {
            syn::ReturnType::Default => syn::parse_quote!(()),
            syn::ReturnType::Type(_, t) => (**t).clone(),
        },
        returns_result: returns_result(&sig.output),
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
    })
}

/// The typed parameters but the context; whether the context comes last; where it does not.
fn params(sig: &syn::Signature) -> (Vec<Arg>, bool, Vec<Span>) {
    let typed: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            syn::FnArg::Typed(t) => Some(t),
            _ => None,
        })
        .collect();
    let mut args = Vec::new();
    let mut takes_ctx = false;
    let mut misplaced = Vec::new();
    for (i, t) in typed.iter().enumerate() {
        if is_context(&t.ty) {
            if i + 1 == typed.len() {
                takes_ctx = true;
            } else {
                misplaced.push(t.ty.span());
            }
            continue;
        }
        // A pattern (`_`, a tuple) gets a name of its own: the handler is called positionally.
        let ident = match &*t.pat {
            syn::Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                let mut ident = p.ident.clone();
                ident.set_span(t.pat.span());
                ident
            }
            other => format_ident!("arg{}", i, span = other.span()),
        };
        args.push(Arg {
            ident,
            ty: (*t.ty).clone(),
        });
    }
    (args, takes_ctx, misplaced)
}

/// `&mut Context<...>` (by its last path segment's name).
fn is_context(ty: &syn::Type) -> bool {
    if let syn::Type::Reference(r) = ty {
        if let syn::Type::Path(p) = &*r.elem {
            return p.path.segments.last().is_some_and(|s| s.ident == "Context");
        }
    }
    false
}

/// Whether the return type is `Result<..>` (rather than `Self`).
fn returns_result(output: &syn::ReturnType) -> bool {
    match output {
        syn::ReturnType::Type(_, t) => match &**t {
            syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        syn::ReturnType::Default => false,
    }
}
