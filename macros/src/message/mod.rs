//! `#[derive(Message)]`: the schema of a message type, made of its variant and field names and of
//! each field type's own `Message::schema()`.
//!
//! [`parse`] reads the type into a [`MessageType`], [`validate`] refuses what cannot be a message,
//! [`expand`] writes the `Message` impl. There is no stand-in after an error: an `impl Message`
//! needs serde's traits, which a refused type (a union) does not have, so a stand-in would add an
//! error rather than prevent one.

mod expand;
mod parse;
mod validate;

use proc_macro2::{Span, TokenStream};

/// A type deriving `Message`, as much of it as its schema needs.
pub(crate) struct MessageType {
    pub(crate) ident: syn::Ident,
    pub(crate) generics: syn::Generics,
    pub(crate) body: Body,
}

pub(crate) enum Body {
    Struct(Fields),
    Enum(Vec<Variant>),
    /// Where the `union` keyword is.
    Union(Span),
}

pub(crate) struct Variant {
    pub(crate) ident: syn::Ident,
    pub(crate) fields: Fields,
}

pub(crate) enum Fields {
    /// `{ a: A, b: B }`
    Named(Vec<(syn::Ident, syn::Type)>),
    /// `(A, B)`
    Unnamed(Vec<syn::Type>),
    Unit,
}

impl Fields {
    /// The field types, in order.
    pub(crate) fn types(&self) -> Vec<&syn::Type> {
        match self {
            Fields::Named(named) => named.iter().map(|(_, ty)| ty).collect(),
            Fields::Unnamed(types) => types.iter().collect(),
            Fields::Unit => Vec::new(),
        }
    }
}

/// The whole derive: the impl, or the errors.
pub(crate) fn derive(item: TokenStream) -> TokenStream {
    let model = match parse::parse(item) {
        Ok(model) => model,
        Err(e) => return e.into_compile_error(),
    };
    match validate::validate(&model) {
        Ok(()) => expand::expand(&model),
        Err(e) => e.into_compile_error(),
    }
}
