//! `#[procactor::main]`, step 1: the tokens as a [`MainFn`].

use proc_macro2::TokenStream;

use super::MainFn;
use crate::diag::first_span;

/// The function the attribute is on; an error on the item if it is not a function.
pub(super) fn parse(attr: TokenStream, item: TokenStream) -> syn::Result<MainFn> {
    match syn::parse2::<syn::ItemFn>(item.clone()) {
        Ok(func) => Ok(MainFn { attr, func }),
        Err(_) => Err(syn::Error::new(
            first_span(&item),
            "#[procactor::main] goes on `fn main()`",
        )),
    }
}
