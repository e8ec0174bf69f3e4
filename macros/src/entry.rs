//! `#[entry]`: registers a function by name, so that another binary of the same program (another
//! host, in the end) can ask for it by that name. Parse the optional `name = "..."`, validate the
//! signature (no generics, no receiver, not async), expand to the function and its entry point.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

/// What `#[entry(...)]` was given.
struct Args {
    name: Option<syn::LitStr>,
}

fn parse_args(attr: TokenStream) -> syn::Result<Args> {
    let mut args = Args { name: None };
    if attr.is_empty() {
        return Ok(args);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            args.name = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("#[procactor::entry] takes only `name = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(args)
}

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
    let f: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let err = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[procactor::entry] goes on a free function",
            )
            .to_compile_error();
            return quote!(#err #item);
        }
    };
    let checked = parse_args(attr).and_then(|args| validate(&f).map(|()| args));
    let args = match checked {
        Ok(args) => args,
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
    let name = match &args.name {
        Some(n) => quote!(#n),
        None => quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#ident)
        )),
    };
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
