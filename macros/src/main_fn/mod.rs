//! `#[procactor::main]`: `procactor::init()` becomes the first statement of `main`.
//!
//! [`parse`] reads the function, [`validate`] finds everything wrong with it at once, [`expand`]
//! writes the function back with the call inserted, or, after an error, a stand-in that compiles
//! so that the attribute's error is the only one.

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

/// The attribute and the function it is on.
pub(crate) struct MainFn {
    /// The attribute's own arguments (there should be none).
    pub(crate) attr: TokenStream,
    pub(crate) func: syn::ItemFn,
}

/// The whole macro: the expansion, or the errors and a stand-in for the function.
pub(crate) fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let model = match parse::parse(attr, item.clone()) {
        Ok(model) => model,
        // Not a function: the error, and the item as it was.
        Err(e) => {
            let e = e.into_compile_error();
            return quote!(#e #item);
        }
    };
    match validate::validate(&model) {
        Ok(()) => expand::expand(&model),
        Err(e) => {
            let e = e.into_compile_error();
            let stand_in = expand::fallback(&model);
            quote!(#e #stand_in)
        }
    }
}
