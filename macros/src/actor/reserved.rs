//! The names a message cannot have: the methods an `ActorRef` already answers to.
//!
//! The runtime owns the list (`procactor::__private::RESERVED_METHOD_NAMES`); this crate cannot
//! depend on it, so it keeps a copy, and the tests below check that the copy is the runtime's and
//! that the runtime's covers every method `ActorRef` has, read from the runtime's source.

/// Methods of `ActorRef` and of the traits it implements or that the prelude brings: a message by
/// one of these names would be shadowed by them (or ambiguous with them), so it is refused.
pub(crate) const RESERVED: &[&str] = &[
    "ask",
    "ask_timeout",
    "tell",
    "try_tell",
    "tell_timeout",
    "cast",
    "try_cast",
    "timeout",
    "stop",
    "kill",
    "join",
    "join_timeout",
    "monitor",
    "id",
    "name",
    "pid",
    "is_alive",
    "call",
    "clone",
    "clone_from",
    "clone_into",
    "to_owned",
    "into",
    "try_into",
    "eq",
    "ne",
    "fmt",
    "serialize",
    "deserialize",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::RESERVED;

    /// Methods `ActorRef` has without the runtime's source spelling them out: the provided
    /// methods of the traits it implements (`PartialEq::ne`, `Clone::clone_from`) and those of the
    /// prelude's blanket impls (`ToOwned`, `Into`, `TryInto`) for every type.
    const NOT_IN_ITS_SOURCE: &[&str] = &[
        "ne",
        "clone_from",
        "clone_into",
        "to_owned",
        "into",
        "try_into",
    ];

    fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
        let set: BTreeSet<_> = names.iter().copied().collect();
        assert_eq!(set.len(), names.len(), "no name twice: {names:?}");
        set
    }

    #[test]
    fn the_copy_is_the_runtime_list() {
        assert_eq!(
            set(RESERVED),
            set(procactor::__private::RESERVED_METHOD_NAMES),
            "macros/src/actor/reserved.rs and runtime's __private::RESERVED_METHOD_NAMES differ"
        );
    }

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The name of `ty`'s last path segment: `ActorRef` for `ActorRef<A>`.
    fn type_name(ty: &syn::Type) -> Option<String> {
        match ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        }
    }

    /// The methods of `ActorRef` and of its call forms (`Tell`, `TryTell`, `Timed`, on which the
    /// generated methods are called as well) in `items` and their inline modules: the `pub fn`s
    /// of their inherent impls, every `fn` of their trait impls. Counts the inherent impls of
    /// `ActorRef` in `found`.
    fn methods(items: &[syn::Item], names: &mut BTreeSet<String>, found: &mut usize) {
        for item in items {
            match item {
                syn::Item::Impl(imp) => {
                    let ty = type_name(&imp.self_ty).unwrap_or_default();
                    if !["ActorRef", "Tell", "TryTell", "Timed"].contains(&ty.as_str()) {
                        continue;
                    }
                    let inherent = imp.trait_.is_none();
                    if inherent && ty == "ActorRef" {
                        *found += 1;
                    }
                    for f in imp.items.iter().filter_map(|it| match it {
                        syn::ImplItem::Fn(f) => Some(f),
                        _ => None,
                    }) {
                        if !inherent || matches!(f.vis, syn::Visibility::Public(_)) {
                            names.insert(f.sig.ident.to_string());
                        }
                    }
                }
                syn::Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        methods(inner, names, found);
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads the runtime's source, wherever `ActorRef` lives in it: a method added to `ActorRef`
    /// and not to the list fails here (a message of its name would be silently shadowed).
    #[test]
    fn every_method_of_actor_ref_is_reserved() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src");
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(
            files.len() > 10,
            "the runtime's source is at {}",
            root.display()
        );
        let mut names = BTreeSet::new();
        let mut inherent_impls = 0;
        for file in &files {
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let parsed = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
            methods(&parsed.items, &mut names, &mut inherent_impls);
        }
        assert!(
            inherent_impls > 0,
            "no `impl ActorRef<..>` found under {}: has ActorRef been renamed?",
            root.display()
        );
        for expected in ["ask", "stop", "join", "clone", "call"] {
            assert!(
                names.contains(expected),
                "the scan missed `{expected}`: {names:?}"
            );
        }
        let reserved = set(RESERVED);
        let missing: Vec<_> = names
            .iter()
            .filter(|n| !reserved.contains(n.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "methods of ActorRef that a message could be named (add them to both lists): \
             {missing:?}"
        );
        // And the other way: a name that is no longer a method need not be refused.
        let stale: Vec<_> = RESERVED
            .iter()
            .filter(|n| !names.contains(**n) && !NOT_IN_ITS_SOURCE.contains(n))
            .collect();
        assert!(
            stale.is_empty(),
            "reserved names ActorRef no longer has: {stale:?}"
        );
    }
}
