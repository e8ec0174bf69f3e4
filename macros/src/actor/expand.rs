//! `#[actor]`, step 3: a valid [`ActorImpl`] as code. Next to the block (kept as written):
//!
//! - `<Name>Msg` and `<Name>Reply`, one variant per message, with serde's derives and a `Message`
//!   impl whose schema is made of the message names, the argument names and the argument and
//!   reply types' own schemas (see [`schema`]);
//! - `impl Actor for <Name>`, which calls `init`, dispatches each variant to its method and
//!   forwards the hooks the block has;
//! - the `<Name>Api` trait, one method per message, implemented for every `Caller<Name>`
//!   (`ActorRef` and its `send()`, `try_send()`, `timeout(d)` forms);
//! - a check, on each argument and reply type, that it can travel (serde's traits);
//! - the type's entry in the registry of actors by name (`module::Type`, or the name given).
//!
//! Everything is named through `::procactor::__private`, which does not move with the public API.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::model::{ActorImpl, Method};

pub(super) fn expand(model: &ActorImpl) -> TokenStream {
    let pa = quote!(::procactor::__private);
    let serde_path = "::procactor::__private::serde";
    let (msg_ty, reply_ty, api) = (model.msg_ty(), model.reply_ty(), model.api());
    let [msg_doc, reply_doc, api_doc] = model.docs();
    let self_ty = &model.self_ty;
    let messages: Vec<&Method> = model.messages().collect();

    let variants = messages.iter().map(|m| {
        let v = m.variant();
        let fields = m.args.iter().map(|a| {
            let (i, t) = (&a.ident, &a.ty);
            quote!(#i: #t)
        });
        quote!(#v { #(#fields),* })
    });
    let reply_variants = messages.iter().map(|m| {
        let (v, t) = (m.variant(), &m.output);
        quote!(#v(#t))
    });
    let schema = schema(&messages);
    let actor_impl = actor_impl(model, &messages);
    let methods = messages.iter().map(|m| api_method(model, m));
    let checks = checks(model, &messages);
    let name = model.registered_as.as_ref().ok().and_then(Option::as_ref);
    let entry =
        crate::register::actor_entry(self_ty, crate::register::name_or_path(name, &model.name));

    let mut imp = model.imp.clone();
    imp.attrs
        .push(syn::parse_quote!(#[allow(clippy::needless_pass_by_value)]));

    quote! {
        #imp

        #[doc = #msg_doc]
        #[derive(#pa::serde::Serialize, #pa::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #[allow(private_interfaces, dead_code)]
        pub enum #msg_ty {
            #(#[allow(missing_docs)] #variants,)*
        }

        #[doc = #reply_doc]
        #[derive(#pa::serde::Serialize, #pa::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        #[allow(private_interfaces, dead_code)]
        pub enum #reply_ty {
            #(#[allow(missing_docs)] #reply_variants,)*
        }

        impl #pa::Message for #msg_ty {
            fn schema() -> #pa::Schema {
                #schema
            }
        }

        impl #pa::Message for #reply_ty {
            fn schema() -> #pa::Schema {
                #schema
            }
        }

        #actor_impl

        #[doc = #api_doc]
        #[allow(private_bounds, private_interfaces)]
        pub trait #api: #pa::Caller<#self_ty> {
            #(#methods)*
        }

        #[allow(private_bounds)]
        impl<T: #pa::Caller<#self_ty> + ?Sized> #api for T {}

        #(#checks)*

        #entry
    }
}

/// The body of both enums' `schema()`: `Schema::derived::<Self>(shape, fields)`, with the shape
/// `add(n:_)->_|get()->_` (message and argument names, `_` where a type goes) and, for each `_`,
/// the type's own `Message::schema()`, or its name if it is not a `Message` (an argument type
/// with only serde's derives): the `SchemaProbe` picks at compile time.
fn schema(messages: &[&Method]) -> TokenStream {
    let pa = quote!(::procactor::__private);
    let shape = messages
        .iter()
        .map(|m| {
            let args: Vec<String> = m.args.iter().map(|a| format!("{}:_", a.ident)).collect();
            format!("{}({})->_", m.ident, args.join(","))
        })
        .collect::<Vec<_>>()
        .join("|");
    let types = messages
        .iter()
        .flat_map(|m| m.args.iter().map(|a| &a.ty).chain([&m.output]));
    let fields = types.map(|ty| quote!(|| (&&#pa::SchemaProbe::<#ty>::new()).probe_schema()));
    quote! {
        use #pa::{ProbeMessage as _, ProbeTypeName as _};
        #pa::Schema::derived::<Self>(#shape, &[#(#fields),*])
    }
}

/// `impl Actor`: `init`, the dispatch of each message, the hooks the block has.
fn actor_impl(model: &ActorImpl, messages: &[&Method]) -> TokenStream {
    let pa = quote!(::procactor::__private);
    let self_ty = &model.self_ty;
    let (msg_ty, reply_ty) = (model.msg_ty(), model.reply_ty());

    // Validation made sure there is an `init`; an `init` without arguments gets `()`.
    let init_arg = model.init().and_then(|i| i.args.first());
    let args_ty = match init_arg {
        Some(a) => {
            let t = &a.ty;
            quote!(#t)
        }
        None => quote!(()),
    };
    let mut init_args = Vec::new();
    if init_arg.is_some() {
        init_args.push(quote!(args));
    }
    if model.init().is_some_and(|i| i.takes_ctx) {
        init_args.push(quote!(ctx));
    }
    let init_call = quote!(<#self_ty>::init(#(#init_args),*));
    let init_body = if model.init().is_some_and(|i| i.returns_result) {
        quote!(#init_call.map_err(::core::convert::Into::into))
    } else {
        quote!(::core::result::Result::Ok(#init_call))
    };
    let no_args_binding = init_arg.is_none().then(|| quote!(let () = args;));

    let arms = messages.iter().map(|m| {
        let (v, ident) = (m.variant(), &m.ident);
        let names: Vec<_> = m.args.iter().map(|a| &a.ident).collect();
        let ctx = m.takes_ctx.then(|| quote!(ctx));
        let call_args = names.iter().map(|n| quote!(#n)).chain(ctx);
        quote!(#msg_ty::#v { #(#names),* } => #reply_ty::#v(self.#ident(#(#call_args),*)))
    });

    let started = hook(model, "started", None, true);
    let stopping = hook(model, "stopping", None, true);
    let stopped = hook(model, "stopped", Some(quote!(&#pa::ExitReason)), false);
    let on_down = hook(model, "on_down", Some(quote!(#pa::Down)), true);
    let on_exit = hook(model, "on_exit", Some(quote!(#pa::Down)), true);

    quote! {
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
    }
}

/// The trait's hook `name`, forwarded to the block's method of that name if there is one: `arg`
/// is the hook's own parameter type, `ctx` whether the trait passes a context.
fn hook(model: &ActorImpl, name: &str, arg: Option<TokenStream>, ctx: bool) -> TokenStream {
    let Some(user) = model.hook(name) else {
        return quote!();
    };
    let pa = quote!(::procactor::__private);
    let self_ty = &model.self_ty;
    let ident = format_ident!("{name}");
    let (param, pass) = match arg {
        Some(ty) => (quote!(hook_arg: #ty,), quote!(hook_arg,)),
        None => (quote!(), quote!()),
    };
    let ctx_param = ctx.then(|| quote!(ctx: &mut #pa::Context<Self>));
    let silence = ctx.then(|| quote!(let _ = &ctx;));
    let ctx_pass = (ctx && user.takes_ctx).then(|| quote!(ctx));
    quote! {
        fn #ident(&mut self, #param #ctx_param) {
            #silence
            <#self_ty>::#ident(self, #pass #ctx_pass)
        }
    }
}

/// The message's method in `<Name>Api`: sends the variant, picks the reply's.
fn api_method(model: &ActorImpl, m: &Method) -> TokenStream {
    let pa = quote!(::procactor::__private);
    let self_ty = &model.self_ty;
    let (msg_ty, reply_ty) = (model.msg_ty(), model.reply_ty());
    let (v, ident, docs, out) = (m.variant(), &m.ident, &m.docs, &m.output);
    let params = m.args.iter().map(|a| {
        let (i, t) = (&a.ident, &a.ty);
        quote!(#i: #t)
    });
    let names: Vec<_> = m.args.iter().map(|a| &a.ident).collect();
    quote! {
        #(#docs)*
        fn #ident(&self, #(#params),*) -> <Self as #pa::Caller<#self_ty>>::Out<#out> {
            self.call(#msg_ty::#v { #(#names),* }, |reply| match reply {
                #reply_ty::#v(value) => ::core::option::Option::Some(value),
                #[allow(unreachable_patterns)]
                _ => ::core::option::Option::None,
            })
        }
    }
}

/// A compile-time check on each argument and reply type (and `init`'s argument) that it can travel
/// in a message, reported on the type itself.
fn checks(model: &ActorImpl, messages: &[&Method]) -> Vec<TokenStream> {
    let init_arg = model.init().and_then(|i| i.args.first()).map(|a| &a.ty);
    let types = init_arg.into_iter().chain(
        messages
            .iter()
            .flat_map(|m| m.args.iter().map(|a| &a.ty).chain([&m.output])),
    );
    types
        .map(|ty| {
            quote_spanned! {ty.span()=>
                const _: fn() = || {
                    fn assert_message_type<
                        T: ?Sized + ::procactor::__private::MessageType,
                    >() {}
                    assert_message_type::<#ty>();
                };
            }
        })
        .collect()
}
