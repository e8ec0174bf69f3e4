//! `#[entry]`: registers a function, or an actor type implemented by hand (`impl Actor for T`),
//! by name, so that another binary of the same program (another host, in the end) can ask for it
//! by that name. Parse the optional `name = "..."`, validate the signature (no generics, no
//! receiver, not async), expand to the item and its entry.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::register::{actor_entry, name_or_path, parse_name};

const WHAT: &str = "#[procactor::entry]";

fn validate(f: &syn::ItemFn) -> syn::Result<()> {
    let sig = &f.sig;
    let mut errors: Vec<syn::Error> = Vec::new();
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "an entry point cannot be generic: register each instance as its own function",
        ));
    }
    if let Some(a) = &sig.asyncness {
        errors.push(syn::Error::new(
            a.span(),
            "an entry point cannot be `async`",
        ));
    }
    if let Some(syn::FnArg::Receiver(r)) = sig.inputs.first() {
        errors.push(syn::Error::new(
            r.span(),
            "an entry point is a free function, not a method",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.span(),
            "an entry point cannot be variadic",
        ));
    }
    let mut all = errors.into_iter();
    match all.next() {
        None => Ok(()),
        Some(mut first) => {
            for e in all {
                first.combine(e);
            }
            Err(first)
        }
    }
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Ok(imp) = syn::parse2::<syn::ItemImpl>(item.clone()) {
        return expand_actor(attr, imp);
    }
    let f: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[procactor::entry] goes on a free function or an `impl Actor for ...` block",
            )
            .to_compile_error();
            return quote!(#err #item);
        }
    };
    let checked = parse_name(attr, WHAT).and_then(|name| validate(&f).map(|()| name));
    let name = match checked {
        Ok(name) => name,
        Err(e) => {
            // The error and the function as written: one message, no cascade.
            let e = e.to_compile_error();
            return quote!(#e #f);
        }
    };
    let ident = &f.sig.ident;
    let unsafety = &f.sig.safety;
    let abi = &f.sig.abi;
    let inputs = f.sig.inputs.iter().map(|arg| match arg {
        syn::FnArg::Typed(t) => t.ty.as_ref().clone(),
        syn::FnArg::Receiver(_) => unreachable!("refused by validate"),
    });
    let output = &f.sig.output;
    let fn_type = quote!(#unsafety #abi fn(#(#inputs),*) #output);
    let name = name_or_path(name.as_ref(), ident);
    let pa = quote_spanned!(f.sig.ident.span()=> ::procactor::__private);
    quote! {
        #f

        const _: () = {
            struct Registered;
            impl #pa::code::Registered<#fn_type> for Registered {
                fn function() -> #fn_type {
                    #ident
                }
            }
            #[#pa::linkme::distributed_slice(#pa::code::ENTRIES)]
            #[linkme(crate = #pa::linkme)]
            static ENTRY: #pa::code::EntryPoint =
                #pa::code::EntryPoint::new::<#fn_type, Registered>(#name);
        };
    }
}

/// `#[entry]` on `impl Actor for T`: the block as written, and `T` registered as an actor type.
fn expand_actor(attr: TokenStream, imp: syn::ItemImpl) -> TokenStream {
    let is_actor = imp
        .trait_
        .as_ref()
        .and_then(|(path, _)| path.segments.last())
        .is_some_and(|s| s.ident == "Actor");
    let ident = match &*imp.self_ty {
        syn::Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    };
    let checked = parse_name(attr, WHAT).and_then(|name| {
        if !is_actor {
            return Err(syn::Error::new(
                imp.impl_token.span(),
                "#[procactor::entry] on an `impl` block registers an actor: it goes on \
                 `impl Actor for MyActor` (an inherent block takes #[procactor::actor])",
            ));
        }
        if !imp.generics.params.is_empty() {
            return Err(syn::Error::new(
                imp.generics.span(),
                "a generic actor cannot be registered: register each instance as its own type",
            ));
        }
        let ident = ident
            .clone()
            .ok_or_else(|| syn::Error::new(imp.self_ty.span(), "an actor needs a named type"))?;
        Ok((name, ident))
    });
    match checked {
        Ok((name, ident)) => {
            let entry = actor_entry(&imp.self_ty, name_or_path(name.as_ref(), &ident));
            quote!(#imp #entry)
        }
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #imp)
        }
    }
}
