//! `#[actor]`: turns an `impl` block into an actor. Every `pub fn` taking `&self` or `&mut self`
//! becomes a message variant; `fn init` builds the state; `started`, `stopping`, `stopped`,
//! `on_down` and `on_exit` are the lifecycle hooks.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

/// Methods of `ActorRef` (and of the traits it implements): a message by one of these names would
/// be shadowed by them, so it is refused.
const RESERVED: &[&str] = &[
    "ask",
    "ask_timeout",
    "tell",
    "try_tell",
    "tell_timeout",
    "send",
    "try_send",
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
    "eq",
    "ne",
    "fmt",
    "serialize",
    "deserialize",
];

const HOOKS: &[&str] = &["started", "stopping", "stopped", "on_down", "on_exit"];

/// One message: a `pub fn` of the impl.
struct Handler {
    ident: syn::Ident,
    variant: syn::Ident,
    args: Vec<(syn::Ident, syn::Type)>,
    takes_ctx: bool,
    output: syn::Type,
    docs: Vec<syn::Attribute>,
}

fn camel(ident: &syn::Ident) -> syn::Ident {
    let mut out = String::new();
    let mut upper = true;
    for c in ident.to_string().trim_start_matches("r#").chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    syn::Ident::new(&out, ident.span())
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

fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

/// Splits a signature's typed parameters into message arguments and a trailing context.
fn params(sig: &syn::Signature) -> syn::Result<(Vec<(syn::Ident, syn::Type)>, bool)> {
    let mut args = Vec::new();
    let mut takes_ctx = false;
    let typed: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            syn::FnArg::Typed(t) => Some(t),
            _ => None,
        })
        .collect();
    for (i, t) in typed.iter().enumerate() {
        if is_context(&t.ty) {
            if i + 1 != typed.len() {
                return Err(err(
                    t.ty.span(),
                    "the `&mut Context<Self>` parameter comes last",
                ));
            }
            takes_ctx = true;
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
        args.push((ident, (*t.ty).clone()));
    }
    Ok((args, takes_ctx))
}

fn output(sig: &syn::Signature) -> syn::Type {
    match &sig.output {
        syn::ReturnType::Default => syn::parse_quote!(()),
        syn::ReturnType::Type(_, t) => (**t).clone(),
    }
}

/// Whether `init` returns `Result<..>` (rather than `Self`).
fn returns_result(sig: &syn::Signature) -> bool {
    match &sig.output {
        syn::ReturnType::Type(_, t) => match &**t {
            syn::Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        _ => false,
    }
}

/// A borrowed type cannot be sent to another process: say so on the type.
fn refuse_borrowed(ty: &syn::Type) -> syn::Result<()> {
    if let syn::Type::Reference(r) = ty {
        let owned = match &*r.elem {
            syn::Type::Path(p) if p.path.is_ident("str") => "`String` instead of `&str`",
            syn::Type::Slice(_) => "a `Vec<T>` instead of a slice",
            _ => "the value itself instead of a reference",
        };
        return Err(err(
            ty.span(),
            format!(
                "message arguments and replies travel to another process: take an owned type \
                 ({owned})"
            ),
        ));
    }
    Ok(())
}

/// A compile-time check that `ty` can travel in a message, reported on `ty` itself.
fn assert_message_type(ty: &syn::Type) -> TokenStream {
    quote_spanned! {ty.span()=>
        const _: fn() = || {
            fn assert_message_type<T: ?Sized + ::procactor::__private::MessageType>() {}
            assert_message_type::<#ty>();
        };
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(err(attr.span(), "#[procactor::actor] takes no arguments"));
    }
    let mut imp: syn::ItemImpl = syn::parse2(item).map_err(|e| {
        err(
            e.span(),
            "#[procactor::actor] goes on an inherent `impl` block: `impl MyActor { ... }`",
        )
    })?;
    if let Some((path, _)) = &imp.trait_ {
        return Err(err(
            path.span(),
            "#[procactor::actor] goes on an inherent `impl` block, not a trait impl",
        ));
    }
    if !imp.generics.params.is_empty() {
        return Err(err(
            imp.generics.span(),
            "generic actors are not supported: each actor is a concrete type",
        ));
    }
    let self_ty = (*imp.self_ty).clone();
    let self_ident = match &self_ty {
        syn::Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .map(|s| s.ident.clone())
            .ok_or_else(|| err(self_ty.span(), "expected a type name"))?,
        other => return Err(err(other.span(), "#[procactor::actor] needs a named type")),
    };

    let mut handlers = Vec::new();
    let mut init: Option<syn::Signature> = None;
    let mut hooks: Vec<(String, bool)> = Vec::new();
    let mut checks = Vec::new();
    for item in &imp.items {
        let syn::ImplItem::Fn(f) = item else { continue };
        let sig = &f.sig;
        let name = sig.ident.to_string();
        let public = matches!(f.vis, syn::Visibility::Public(_));
        if name == "init" {
            if let Some(r) = sig.receiver() {
                return Err(err(r.span(), "`init` builds the actor: it takes no `self`"));
            }
            let (args, _) = params(sig)?;
            if args.len() > 1 {
                return Err(err(
                    sig.inputs.span(),
                    "`init` takes one argument (use a tuple or a struct for more), and optionally \
                     `ctx: &mut Context<Self>` after it",
                ));
            }
            if let Some((_, ty)) = args.first() {
                checks.push(assert_message_type(ty));
            }
            init = Some(sig.clone());
            continue;
        }
        if HOOKS.contains(&name.as_str()) {
            if public {
                return Err(err(
                    sig.ident.span(),
                    format!(
                        "`{name}` is a lifecycle hook: make it private (a hook), or rename it \
                         (a message)"
                    ),
                ));
            }
            let takes_ctx = sig.inputs.iter().any(|a| match a {
                syn::FnArg::Typed(t) => is_context(&t.ty),
                _ => false,
            });
            hooks.push((name, takes_ctx));
            continue;
        }
        if !public {
            continue; // a private helper
        }
        let Some(receiver) = sig.receiver() else {
            continue; // an associated function (a constructor helper): not a message
        };
        match &receiver.kind {
            syn::ReceiverKind::Reference(..) => {}
            _ => {
                return Err(err(
                    receiver.span(),
                    "a message handler takes `&self` or `&mut self`: the actor's state stays in \
                     its process",
                ))
            }
        }
        if let Some(a) = &sig.asyncness {
            return Err(err(
                a.span,
                "message handlers are not async: an actor handles one message at a time",
            ));
        }
        if !sig.generics.params.is_empty() {
            return Err(err(
                sig.generics.span(),
                "message handlers cannot be generic: each message is one concrete type",
            ));
        }
        if RESERVED.contains(&name.as_str()) {
            return Err(err(
                sig.ident.span(),
                format!(
                    "`{name}` is already a method of `ActorRef`: rename this message \
                     (for example `{name}_it` or `do_{name}`)"
                ),
            ));
        }
        let (args, takes_ctx) = params(sig)?;
        for (_, ty) in &args {
            refuse_borrowed(ty)?;
            checks.push(assert_message_type(ty));
        }
        let out = output(sig);
        refuse_borrowed(&out)?;
        checks.push(assert_message_type(&out));
        handlers.push(Handler {
            variant: camel(&sig.ident),
            ident: sig.ident.clone(),
            args,
            takes_ctx,
            output: out,
            docs: f
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
        });
    }
    let Some(init) = init else {
        return Err(err(
            self_ty.span(),
            "an #[procactor::actor] impl needs a constructor: `fn init(args: T) -> Self` (or \
             `-> Result<Self, E>`), run in the actor's own process",
        ));
    };
    if handlers.is_empty() {
        return Err(err(
            self_ty.span(),
            "this actor has no messages: make at least one method `pub fn name(&self, ...)`",
        ));
    }

    let msg_ty = format_ident!("{}Msg", self_ident);
    let reply_ty = format_ident!("{}Reply", self_ident);
    let api = format_ident!("{}Api", self_ident);
    let pa = quote!(::procactor::__private);
    let serde = quote!(::procactor::__private::serde);
    let serde_path = "::procactor::__private::serde";

    let variants = handlers.iter().map(|h| {
        let v = &h.variant;
        let fields = h.args.iter().map(|(i, t)| quote!(#i: #t));
        quote!(#v { #(#fields),* })
    });
    let reply_variants = handlers.iter().map(|h| {
        let v = &h.variant;
        let t = &h.output;
        quote!(#v(#t))
    });
    let shape = {
        let parts: Vec<String> = handlers
            .iter()
            .map(|h| {
                let args: Vec<String> = h
                    .args
                    .iter()
                    .map(|(i, t)| format!("{i}:{}", quote!(#t)))
                    .collect();
                let out = &h.output;
                format!("{}({})->{}", h.ident, args.join(","), quote!(#out))
            })
            .collect();
        parts.join("|")
    };
    let arms = handlers.iter().map(|h| {
        let v = &h.variant;
        let m = &h.ident;
        let names: Vec<_> = h.args.iter().map(|(i, _)| i).collect();
        let ctx = h.takes_ctx.then(|| quote!(ctx));
        let call_args = names.iter().map(|n| quote!(#n)).chain(ctx);
        quote!(#msg_ty::#v { #(#names),* } => #reply_ty::#v(self.#m(#(#call_args),*)))
    });
    let methods = handlers.iter().map(|h| {
        let v = &h.variant;
        let m = &h.ident;
        let docs = &h.docs;
        let out = &h.output;
        let params = h.args.iter().map(|(i, t)| quote!(#i: #t));
        let names: Vec<_> = h.args.iter().map(|(i, _)| i).collect();
        quote! {
            #(#docs)*
            fn #m(&self, #(#params),*) -> <Self as #pa::Caller<#self_ty>>::Out<#out> {
                self.call(#msg_ty::#v { #(#names),* }, |reply| match reply {
                    #reply_ty::#v(value) => ::core::option::Option::Some(value),
                    #[allow(unreachable_patterns)]
                    _ => ::core::option::Option::None,
                })
            }
        }
    });

    let args_ty = match params(&init)?.0.first() {
        Some((_, t)) => quote!(#t),
        None => quote!(()),
    };
    let init_takes_ctx = params(&init)?.1;
    let init_args = match params(&init)?.0.first() {
        Some(_) => quote!(args),
        None => quote!(),
    };
    let init_ctx = init_takes_ctx.then(|| {
        if params(&init).map(|p| p.0.is_empty()).unwrap_or(true) {
            quote!(ctx)
        } else {
            quote!(, ctx)
        }
    });
    let init_call = quote!(<#self_ty>::init(#init_args #init_ctx));
    let init_body = if returns_result(&init) {
        quote!(#init_call.map_err(::core::convert::Into::into))
    } else {
        quote!(::core::result::Result::Ok(#init_call))
    };
    let no_args_binding = if params(&init)?.0.is_empty() {
        quote!(let () = args;)
    } else {
        quote!()
    };

    // Forwards a hook of the trait to the user's method of that name, if there is one: `arg` is
    // the hook's own parameter, `ctx` whether the trait passes a context.
    let forward = |name: &str, arg: Option<TokenStream>, ctx: bool| -> TokenStream {
        let Some((_, user_takes_ctx)) = hooks.iter().find(|(n, _)| n == name) else {
            return quote!();
        };
        let ident = format_ident!("{name}");
        let (param, pass) = match arg {
            Some(param) => {
                let pass = quote!(hook_arg,);
                (quote!(hook_arg: #param,), pass)
            }
            None => (quote!(), quote!()),
        };
        let ctx_param = ctx.then(|| quote!(ctx: &mut #pa::Context<Self>));
        let silence = ctx.then(|| quote!(let _ = &ctx;));
        let ctx_pass = (ctx && *user_takes_ctx).then(|| quote!(ctx));
        quote! {
            fn #ident(&mut self, #param #ctx_param) {
                #silence
                <#self_ty>::#ident(self, #pass #ctx_pass)
            }
        }
    };
    let started = forward("started", None, true);
    let stopping = forward("stopping", None, true);
    let stopped = forward("stopped", Some(quote!(&#pa::ExitReason)), false);
    let on_down = forward("on_down", Some(quote!(#pa::Down)), true);
    let on_exit = forward("on_exit", Some(quote!(#pa::Down)), true);

    let msg_doc = format!("The messages of actor [`{self_ident}`] (one variant per `pub fn`).");
    let reply_doc = format!("The replies of actor [`{self_ident}`].");
    let api_doc = format!(
        "The methods of actor [`{self_ident}`] on `ActorRef<{self_ident}>` (ask) and its \
         `send()`, `try_send()` and `timeout(d)` forms. Bring it into scope to call them."
    );
    imp.attrs
        .push(syn::parse_quote!(#[allow(clippy::needless_pass_by_value)]));

    Ok(quote! {
        #imp

        #[doc = #msg_doc]
        #[derive(#serde::Serialize, #serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #[allow(private_interfaces, dead_code)]
        pub enum #msg_ty {
            #(#[allow(missing_docs)] #variants,)*
        }

        #[doc = #reply_doc]
        #[derive(#serde::Serialize, #serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #[allow(private_interfaces, dead_code)]
        pub enum #reply_ty {
            #(#[allow(missing_docs)] #reply_variants,)*
        }

        impl #pa::Message for #msg_ty {
            fn schema() -> #pa::Schema {
                #pa::Schema::of::<Self>(#shape)
            }
        }

        impl #pa::Message for #reply_ty {
            fn schema() -> #pa::Schema {
                #pa::Schema::of::<Self>(#shape)
            }
        }

        impl #pa::Actor for #self_ty {
            type Args = #args_ty;
            type Msg = #msg_ty;
            type Reply = #reply_ty;

            fn init(
                args: Self::Args,
                ctx: &mut #pa::Context<Self>,
            ) -> ::core::result::Result<Self, #pa::InitError> {
                let _ = &ctx;
                #no_args_binding
                #init_body
            }

            fn handle(&mut self, msg: #msg_ty, ctx: &mut #pa::Context<Self>) -> #reply_ty {
                let _ = &ctx;
                match msg {
                    #(#arms,)*
                }
            }

            #started
            #stopping
            #stopped
            #on_down
            #on_exit
        }

        #[doc = #api_doc]
        #[allow(private_bounds, private_interfaces)]
        pub trait #api: #pa::Caller<#self_ty> {
            #(#methods)*
        }

        #[allow(private_bounds)]
        impl<T: #pa::Caller<#self_ty> + ?Sized> #api for T {}

        #(#checks)*
    })
}
