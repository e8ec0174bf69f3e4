//! `#[derive(Message)]`: the schema fingerprint of a message type.

use proc_macro2::TokenStream;
use quote::quote;

/// The shape of a type as text: variants, field names and field types. Two builds of the same
/// source give the same text; a renamed, added or retyped field changes it.
pub(crate) fn shape(data: &syn::Data) -> String {
    fn fields(f: &syn::Fields) -> String {
        match f {
            syn::Fields::Named(n) => {
                let parts: Vec<String> = n
                    .named
                    .iter()
                    .map(|f| {
                        let name = f.ident.as_ref().map(|i| i.to_string()).unwrap_or_default();
                        let ty = &f.ty;
                        format!("{name}:{}", quote!(#ty))
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
            syn::Fields::Unnamed(u) => {
                let parts: Vec<String> = u
                    .unnamed
                    .iter()
                    .map(|f| {
                        let ty = &f.ty;
                        quote!(#ty).to_string()
                    })
                    .collect();
                format!("({})", parts.join(","))
            }
            _ => String::new(),
        }
    }
    match data {
        syn::Data::Struct(s) => format!("struct{}", fields(&s.fields)),
        syn::Data::Enum(e) => {
            let parts: Vec<String> = e
                .variants
                .iter()
                .map(|v| format!("{}{}", v.ident, fields(&v.fields)))
                .collect();
            format!("enum{{{}}}", parts.join("|"))
        }
        syn::Data::Union(_) => "union".into(),
    }
}

pub(crate) fn derive(input: syn::DeriveInput) -> syn::Result<TokenStream> {
    if let syn::Data::Union(u) = &input.data {
        return Err(syn::Error::new(
            u.union_token.span,
            "#[derive(Message)] is for structs and enums (serde does not serialize unions)",
        ));
    }
    let name = &input.ident;
    let shape = shape(&input.data);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause
        .cloned()
        .unwrap_or_else(|| syn::parse_quote!(where));
    where_clause.predicates.push(syn::parse_quote!(
        Self: ::procactor::__private::serde::Serialize
            + ::procactor::__private::serde::de::DeserializeOwned
            + ::core::marker::Send
            + 'static
    ));
    Ok(quote! {
        impl #impl_generics ::procactor::__private::Message for #name #ty_generics #where_clause {
            fn schema() -> ::procactor::__private::Schema {
                ::procactor::__private::Schema::of::<Self>(#shape)
            }
        }
    })
}
