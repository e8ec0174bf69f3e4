//! `#[derive(Message)]`, step 2: what cannot be a message.

use super::{Body, MessageType};
use crate::diag::Errors;

pub(super) fn validate(model: &MessageType) -> syn::Result<()> {
    let mut errors = Errors::default();
    if let Body::Union(span) = &model.body {
        errors.add(
            *span,
            "#[derive(Message)] is for structs and enums (serde does not serialize unions)",
        );
    }
    errors.finish()
}
