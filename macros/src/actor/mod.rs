//! `#[procactor::actor]`: an `impl` block becomes an actor. Every `pub fn` taking `&self` or
//! `&mut self` is a message; `fn init` builds the state; `started`, `stopping`, `stopped`,
//! `on_down` and `on_exit` are the lifecycle hooks.
//!
//! [`parse`] reads the block into an [`ActorImpl`](model::ActorImpl), [`validate`] finds every
//! mistake in it, [`expand`] writes the actor; after a mistake, [`fallback`] writes a stand-in
//! instead, so that the mistake is the only error. [`reserved`] holds the names a message cannot
//! have.

mod expand;
mod fallback;
mod model;
mod parse;
mod reserved;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

/// The whole macro: the expansion, or the errors and a stand-in.
pub(crate) fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let model = match parse::parse(attr, item.clone()) {
        Ok(model) => model,
        // Nothing to model (not an inherent impl of a named type): the error, and the item as it
        // was.
        Err(e) => {
            let e = e.into_compile_error();
            return quote!(#e #item);
        }
    };
    match validate::validate(&model) {
        Ok(()) => expand::expand(&model),
        Err(e) => {
            let e = e.into_compile_error();
            let stand_in = fallback::fallback(&model);
            quote!(#e #stand_in)
        }
    }
}
