//! `#[derive(Message)]`, step 1: the tokens as a [`MessageType`].

use proc_macro2::TokenStream;

use super::{Body, Fields, MessageType, Variant};

pub(super) fn parse(item: TokenStream) -> syn::Result<MessageType> {
    let input: syn::DeriveInput = syn::parse2(item)?;
    let body = match input.data {
        syn::Data::Struct(s) => Body::Struct(fields(s.fields)),
        syn::Data::Enum(e) => Body::Enum(
            e.variants
                .into_iter()
                .map(|v| Variant {
                    ident: v.ident,
                    fields: fields(v.fields),
                })
                .collect(),
        ),
        syn::Data::Union(u) => Body::Union(u.union_token.span),
    };
    Ok(MessageType {
        ident: input.ident,
        generics: input.generics,
        body,
    })
}

fn fields(fields: syn::Fields) -> Fields {
    match fields {
        syn::Fields::Named(named) => Fields::Named(
            named
                .named
                .into_iter()
                .filter_map(|f| Some((f.ident?, f.ty)))
                .collect(),
        ),
        syn::Fields::Unnamed(unnamed) => {
            Fields::Unnamed(unnamed.unnamed.into_iter().map(|f| f.ty).collect())
        }
        syn::Fields::Unit => Fields::Unit,
    }
}
