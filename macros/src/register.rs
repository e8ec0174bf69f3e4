//! Registration by name, shared by `#[entry]` and `#[actor]`: the `name = "..."` argument, and
//! the link-time entry of an actor type.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

/// `name = "..."`, the one argument both attributes take (`what` names the attribute in errors).
pub(crate) fn parse_name(attr: TokenStream, what: &str) -> syn::Result<Option<syn::LitStr>> {
    let mut name = None;
    if attr.is_empty() {
        return Ok(name);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            if lit.value().is_empty() {
                return Err(syn::Error::new(lit.span(), "the name cannot be empty"));
            }
            name = Some(lit);
            Ok(())
        } else {
            Err(meta.error(format!("{what} takes only `name = \"...\"`")))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(name)
}

/// `name`, or `module::ident` where the item is.
pub(crate) fn name_or_path(name: Option<&syn::LitStr>, ident: &syn::Ident) -> TokenStream {
    match name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#ident)
        )),
    }
}

/// Registers actor type `self_ty` as `name` (see `procactor::actor::named`).
pub(crate) fn actor_entry(self_ty: &syn::Type, name: TokenStream) -> TokenStream {
    let pa = quote_spanned!(self_ty.span()=> ::procactor::__private);
    quote! {
        const _: () = {
            #[#pa::linkme::distributed_slice(#pa::ACTORS)]
            #[linkme(crate = #pa::linkme)]
            static ACTOR: #pa::ActorEntry = #pa::ActorEntry::new::<#self_ty>(#name);
        };
    }
}
