//! `#[procactor::main]`, step 2: everything wrong with the [`MainFn`], in one error.

use syn::spanned::Spanned;

use super::MainFn;
use crate::diag::Errors;

pub(super) fn validate(model: &MainFn) -> syn::Result<()> {
    let mut errors = Errors::default();
    let sig = &model.func.sig;
    if !model.attr.is_empty() {
        errors.add(model.attr.span(), "#[procactor::main] takes no arguments");
    }
    if let Some(asyncness) = &sig.asyncness {
        errors.add(
            asyncness.span(),
            "#[procactor::main] goes on a plain `fn main()`, not an async one: start your async \
             runtime inside it (spawned children take over in procactor::init(), before any \
             runtime exists)",
        );
    }
    if !sig.generics.params.is_empty() {
        errors.add(
            sig.generics.span(),
            "#[procactor::main] goes on a function without generic parameters",
        );
    }
    if !sig.inputs.is_empty() {
        errors.add(
            sig.inputs.span(),
            "#[procactor::main] goes on a function without parameters",
        );
    }
    errors.finish()
}
