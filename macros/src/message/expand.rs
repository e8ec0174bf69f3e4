//! `#[derive(Message)]`, step 3: the `Message` impl.
//!
//! The schema is `Schema::derived::<Self>(shape, fields)`: `shape` is the text of the variant and
//! field names, with `_` where a field's type goes (`enum{Add{n:_}|Reset}`), and `fields` is each
//! field type's own `<T as Message>::schema`, in order. The type's path is hashed with them. So the
//! fingerprint follows what the field types are, not how they are spelled: `Vec<u8>` and
//! `std::vec::Vec<u8>` agree, and a change behind a type alias changes it.

use std::collections::HashSet;

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{Body, Fields, MessageType};

pub(super) fn expand(model: &MessageType) -> TokenStream {
    let pa = quote!(::procactor::__private);
    let name = &model.ident;
    let shape = shape(&model.body);
    let types = field_types(&model.body);
    // Spanned on the field type: a type that is not a `Message` is reported there.
    let schemas = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> <#ty as #pa::Message>::schema));

    let (impl_generics, ty_generics, where_clause) = model.generics.split_for_impl();
    let mut where_clause = where_clause
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(where));
    where_clause.predicates.push(syn::parse_quote!(
        Self: #pa::serde::Serialize
            + #pa::serde::de::DeserializeOwned
            + ::core::marker::Send
            + 'static
    ));
    // A field type that names a type or const parameter (`T`, `Vec<T>`, `[u8; N]`) is a `Message`
    // only for some `T` or `N`: say which. The others are checked as they are.
    let params: HashSet<String> = model
        .generics
        .type_params()
        .map(|p| p.ident.to_string())
        .chain(model.generics.const_params().map(|p| p.ident.to_string()))
        .collect();
    let mut seen = HashSet::new();
    for ty in &types {
        if mentions(quote!(#ty), &params) && seen.insert(quote!(#ty).to_string()) {
            where_clause
                .predicates
                .push(syn::parse_quote!(#ty: #pa::Message));
        }
    }

    quote! {
        impl #impl_generics #pa::Message for #name #ty_generics #where_clause {
            fn schema() -> #pa::Schema {
                #pa::Schema::derived::<Self>(#shape, &[#(#schemas),*])
            }
        }
    }
}

/// The names, with `_` for each field type: `struct{a:_,b:_}`, `struct(_,_)`, `enum{A{n:_}|B(_)|C}`.
fn shape(body: &Body) -> String {
    fn fields(f: &Fields) -> String {
        match f {
            Fields::Named(named) => {
                let names: Vec<String> = named.iter().map(|(i, _)| format!("{i}:_")).collect();
                format!("{{{}}}", names.join(","))
            }
            Fields::Unnamed(types) => format!("({})", vec!["_"; types.len()].join(",")),
            Fields::Unit => String::new(),
        }
    }
    match body {
        Body::Struct(f) => format!("struct{}", fields(f)),
        Body::Enum(variants) => {
            let parts: Vec<String> = variants
                .iter()
                .map(|v| format!("{}{}", v.ident, fields(&v.fields)))
                .collect();
            format!("enum{{{}}}", parts.join("|"))
        }
        Body::Union(_) => "union".into(),
    }
}

/// Every field type, in the order of [`shape`]'s `_`s.
fn field_types(body: &Body) -> Vec<&syn::Type> {
    match body {
        Body::Struct(f) => f.types(),
        Body::Enum(variants) => variants.iter().flat_map(|v| v.fields.types()).collect(),
        Body::Union(_) => Vec::new(),
    }
}

/// Whether `tokens` name one of `params`.
fn mentions(tokens: TokenStream, params: &HashSet<String>) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => params.contains(&i.to_string()),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(item: TokenStream) -> MessageType {
        match super::super::parse::parse(item) {
            Ok(m) => m,
            Err(e) => panic!("does not parse: {e}"),
        }
    }

    #[test]
    fn shapes_name_fields_not_types() {
        let s = model(quote!(
            struct S {
                a: Vec<u8>,
                b: std::string::String,
            }
        ));
        assert_eq!(shape(&s.body), "struct{a:_,b:_}");
        let t = model(quote!(
            struct T(u8, u16);
        ));
        assert_eq!(shape(&t.body), "struct(_,_)");
        let e = model(quote!(
            enum E {
                Add { n: u64 },
                Pair(u8, u8),
                Reset,
            }
        ));
        assert_eq!(shape(&e.body), "enum{Add{n:_}|Pair(_,_)|Reset}");
        assert_eq!(field_types(&e.body).len(), 3);
    }

    #[test]
    fn only_generic_field_types_get_a_bound() {
        let g = model(quote!(
            struct G<T> {
                a: Vec<T>,
                b: u8,
                c: Vec<T>,
            }
        ));
        let out = expand(&g).to_string();
        assert!(
            out.contains("Vec < T > : :: procactor :: __private :: Message"),
            "{out}"
        );
        assert!(!out.contains("u8 : :: procactor"), "{out}");
        assert_eq!(out.matches("Vec < T > :").count(), 1, "once: {out}");
    }
}
