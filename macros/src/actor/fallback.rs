//! `#[actor]` after an error: a stand-in for the expansion, so that the user sees the mistake
//! and nothing else. Without it, every use of the actor elsewhere would fail too (no `Actor` impl
//! for `spawn::<A>`, no method `add` on `ActorRef<A>`), burying the one message that matters.
//!
//! The stand-in has the block as written, empty `<Name>Msg` and `<Name>Reply` enums, an `Actor`
//! impl with the `Args` that `init` takes, and the `<Name>Api` trait with a method for every
//! message, even a faulty one, with the signature written (minus `async` and the context, with
//! `&self`). Its bodies are never run: the build fails on the error.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::{ActorImpl, Method};
use super::reserved::RESERVED;

pub(super) fn fallback(model: &ActorImpl) -> TokenStream {
    let pa = quote!(::procactor::__private);
    let serde_path = "::procactor::__private::serde";
    let (msg_ty, reply_ty, api) = (model.msg_ty(), model.reply_ty(), model.api());
    let [msg_doc, reply_doc, api_doc] = model.docs();
    let self_ty = &model.self_ty;

    // What `spawn::<A>(args)` elsewhere expects. A borrowed type cannot be `Args`: `()` then.
    let args_ty = match model.init().and_then(|i| i.args.first()) {
        Some(a) if !matches!(a.ty, syn::Type::Reference(_)) => {
            let t = &a.ty;
            quote!(#t)
        }
        _ => quote!(()),
    };
    let stubs = model.messages().filter_map(|m| stub(model, m));

    let mut imp = model.imp.clone();
    // `init`, the hooks and the helpers they call are not called by the stand-in.
    imp.attrs.push(syn::parse_quote!(
        #[allow(dead_code, clippy::needless_pass_by_value)]
    ));

    quote! {
        #imp

        #[doc = #msg_doc]
        #[derive(#pa::serde::Serialize, #pa::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        pub enum #msg_ty {}

        #[doc = #reply_doc]
        #[derive(#pa::serde::Serialize, #pa::serde::Deserialize)]
        #[serde(crate = #serde_path)]
        pub enum #reply_ty {}

        impl #pa::Message for #msg_ty {
            fn schema() -> #pa::Schema {
                #pa::Schema::of::<Self>("")
            }
        }

        impl #pa::Message for #reply_ty {
            fn schema() -> #pa::Schema {
                #pa::Schema::of::<Self>("")
            }
        }

        impl #pa::Actor for #self_ty {
            type Args = #args_ty;
            type Msg = #msg_ty;
            type Reply = #reply_ty;

            fn init(
                _: Self::Args,
                _: &mut #pa::Context<Self>,
            ) -> ::core::result::Result<Self, #pa::InitError> {
                ::core::unreachable!()
            }

            fn handle(&mut self, msg: #msg_ty, _: &mut #pa::Context<Self>) -> #reply_ty {
                match msg {}
            }
        }

        #[doc = #api_doc]
        #[allow(private_bounds, private_interfaces)]
        pub trait #api: #pa::Caller<#self_ty> {
            #(#stubs)*
        }

        #[allow(private_bounds)]
        impl<T: #pa::Caller<#self_ty> + ?Sized> #api for T {}
    }
}

/// The message's method in `<Name>Api`, never run. None for a name of `ActorRef`'s own (the call
/// goes there anyway) or an `impl Trait` reply (no such method could be declared).
fn stub(model: &ActorImpl, m: &Method) -> Option<TokenStream> {
    if RESERVED.contains(&m.ident.to_string().as_str())
        || matches!(m.output, syn::Type::ImplTrait(_))
    {
        return None;
    }
    let pa = quote!(::procactor::__private);
    let self_ty = &model.self_ty;
    let (ident, docs, out) = (&m.ident, &m.docs, &m.output);
    let generics = &m.generics;
    let where_clause = &m.generics.where_clause;
    let types = m.args.iter().map(|a| &a.ty);
    Some(quote! {
        #(#docs)*
        fn #ident #generics (&self, #(_: #types),*) -> <Self as #pa::Caller<#self_ty>>::Out<#out>
        #where_clause
        {
            ::core::unreachable!()
        }
    })
}
