//! Procedural macros for [procactor](https://docs.rs/procactor). Use them through the facade:
//! `#[procactor::main]`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::quote;
use syn::spanned::Spanned;

/// Makes `procactor::init()` the first statement of `main`, where spawned children take over.
///
/// ```
/// #[procactor::main]
/// fn main() {
///     let p = procactor::Process::new(|x: u32| x + 1, 1).start().unwrap();
///     assert_eq!(p.join().unwrap(), 2);
/// }
/// ```
///
/// It goes on a plain function without parameters (`fn main()`, possibly returning a `Result`):
///
/// ```compile_fail
/// #[procactor::main]
/// fn main(x: u32) {}
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_main(attr.into(), item.clone().into()).unwrap_or_else(|(err, keep)| {
        // The error, plus a stand-in for the item: the user sees our message, not a cascade.
        let err = err.to_compile_error();
        quote!(#err #keep).into()
    })
}

fn expand_main(
    attr: TokenStream2,
    item: TokenStream2,
) -> Result<TokenStream, (syn::Error, TokenStream2)> {
    let mut f = match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            return Err((
                syn::Error::new(first_span(&item), "#[procactor::main] goes on `fn main()`"),
                item,
            ));
        }
    };
    let ident = &f.sig.ident;
    let stub = quote!(fn #ident() {});
    if !attr.is_empty() {
        return Err((
            syn::Error::new(attr.span(), "#[procactor::main] takes no arguments"),
            stub,
        ));
    }
    if let Some(asyncness) = &f.sig.asyncness {
        let msg =
            "#[procactor::main] goes on a plain `fn main()`, not an async one: start your async \
                   runtime inside it (spawned children take over in procactor::init(), before any \
                   runtime exists)";
        return Err((syn::Error::new(asyncness.span(), msg), stub));
    }
    if !f.sig.inputs.is_empty() {
        let msg = "#[procactor::main] goes on a function without parameters";
        return Err((syn::Error::new(f.sig.inputs.span(), msg), stub));
    }
    f.block
        .stmts
        .insert(0, syn::parse_quote!(::procactor::init();));
    Ok(quote!(#f).into())
}

fn first_span(tokens: &TokenStream2) -> Span {
    tokens
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}
