//! `#[procactor::main]`, step 3: the function with `procactor::init()` first, or its stand-in.

use proc_macro2::TokenStream;
use quote::quote;

use super::MainFn;

/// The function, `init()` first: a spawned child takes over there.
pub(super) fn expand(model: &MainFn) -> TokenStream {
    let mut func = model.func.clone();
    func.block
        .stmts
        .insert(0, syn::parse_quote!(::procactor::__private::init();));
    quote!(#func)
}

/// What stands in for a misused `main`: the function as close to the user's as compiles, so that
/// the attribute's error is the only one (no "`main` not found", no "`main` has the wrong type").
/// Its parameters become locals that are never reached, so the body is still checked; an async or
/// generic function, whose body cannot be kept as it is, becomes `fn main() {}`.
pub(super) fn fallback(model: &MainFn) -> TokenStream {
    let mut func = model.func.clone();
    if func.sig.asyncness.is_some() || !func.sig.generics.params.is_empty() {
        // Its other attributes go too: an async runtime's own `main` attribute would complain.
        let vis = &func.vis;
        let ident = &func.sig.ident;
        return quote!(#vis fn #ident() {});
    }
    let params = std::mem::take(&mut func.sig.inputs);
    let locals: Vec<syn::Stmt> = params
        .iter()
        .filter_map(|p| match p {
            syn::FnArg::Typed(t) => {
                let (pat, ty) = (&t.pat, &t.ty);
                Some(syn::parse_quote!(let #pat: #ty = ::core::unreachable!();))
            }
            _ => None,
        })
        .collect();
    if !locals.is_empty() {
        // The body is never reached, and rustc says so of each local: not the user's problem.
        func.attrs
            .push(syn::parse_quote!(#[allow(unreachable_code, unused)]));
        func.block.stmts.splice(0..0, locals);
    }
    quote!(#func)
}
