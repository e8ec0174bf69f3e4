//! Procedural macros for [procactor](https://docs.rs/procactor). Use them through the facade:
//! `#[procactor::main]`.

use proc_macro::TokenStream;
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
/// It goes on a function without parameters (`fn main()`, possibly returning a `Result`):
///
/// ```compile_fail
/// #[procactor::main]
/// fn main(x: u32) {}
/// ```
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    if !attr.is_empty() {
        return syn::Error::new(attr.span(), "#[procactor::main] takes no arguments")
            .to_compile_error()
            .into();
    }
    let mut f = match syn::parse::<syn::ItemFn>(item) {
        Ok(f) => f,
        Err(e) => {
            return syn::Error::new(e.span(), "#[procactor::main] goes on `fn main()`")
                .to_compile_error()
                .into()
        }
    };
    if let Some(asyncness) = &f.sig.asyncness {
        return syn::Error::new(
            asyncness.span(),
            "#[procactor::main] cannot be async; put it under your runtime's attribute: \
             #[procactor::main] must be the outer attribute of a plain fn",
        )
        .to_compile_error()
        .into();
    }
    if !f.sig.inputs.is_empty() {
        return syn::Error::new(
            f.sig.inputs.span(),
            "#[procactor::main] goes on a function without parameters",
        )
        .to_compile_error()
        .into();
    }
    let init: syn::Stmt = syn::parse_quote!(::procactor::init(););
    f.block.stmts.insert(0, init);
    quote!(#f).into()
}
