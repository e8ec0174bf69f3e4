//! The runtime's modules point down only: each uses only the modules listed before it on the
//! `LAYERS:` line of `runtime/src/lib.rs`. (The floor below them is another crate, so the compiler
//! enforces that direction; this test enforces the order inside the runtime.)

use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`, at any depth.
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

/// The source of top-level module `m`: its file, or every file of its directory; comments and
/// `#[cfg(test)]` parts left out (tests may reach anywhere).
fn source_of(src: &Path, m: &str) -> String {
    let mut files = Vec::new();
    let file = src.join(format!("{m}.rs"));
    if file.exists() {
        files.push(file);
    }
    let dir = src.join(m);
    if dir.is_dir() {
        files.extend(rust_files(&dir));
    }
    assert!(!files.is_empty(), "no source for module {m}");
    files
        .iter()
        .map(|f| {
            let text = read(f);
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_string();
            code.lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The modules of `names` that `code` refers to as `crate::m` or inside `use crate::{..}`.
fn uses(code: &str, names: &[&str]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for m in names {
        let direct = format!("crate::{m}");
        let direct_hit = code.match_indices(&direct).any(|(i, _)| {
            let after = code[i + direct.len()..].chars().next();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        });
        let grouped = code.split("use crate::{").skip(1).any(|g| {
            g.split('}')
                .next()
                .unwrap_or("")
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .any(|w| w == *m)
        });
        if direct_hit || grouped {
            found.insert(m.to_string());
        }
    }
    found
}

#[test]
fn runtime_modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/src");
    let lib = read(&src.join("lib.rs"));
    let line = lib
        .lines()
        .find_map(|l| l.trim_start_matches("//!").trim().strip_prefix("LAYERS:"))
        .expect("runtime/src/lib.rs documents its LAYERS");
    let layers: Vec<&str> = line.split_whitespace().collect();
    // Every module of the crate is placed (a new one cannot slip in unordered).
    for decl in lib.lines().filter_map(|l| l.strip_prefix("mod ")) {
        let m = decl.trim_end_matches(';');
        if m != "fuzz" {
            assert!(layers.contains(&m), "module `{m}` is missing from LAYERS");
        }
    }
    let mut wrong = Vec::new();
    for (i, m) in layers.iter().enumerate() {
        let above = &layers[i + 1..];
        for used in uses(&source_of(&src, m), above) {
            wrong.push(format!("`{m}` uses `{used}`, which is above it"));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_use() {
    // The checker itself: an upward reference is found, directly or in a group.
    let names = ["actor", "pool"];
    assert_eq!(uses("let x = crate::actor::spawn;", &names).len(), 1);
    assert_eq!(uses("use crate::{error, pool::Pool};", &names).len(), 1);
    assert!(uses("crate::actors_like_name", &names).is_empty());
}

/// Plain static locks allowed in the runtime and the floor, each with why it is one: every other
/// piece of per-process state is a `per_process!` cell (reset in a forked child, listed by
/// `procactor_os::per_process::states`).
const STATIC_LOCKS: [(&str, &str); 1] = [(
    "os/src/wire/channel.rs",
    // Meant to reach a forked child (it closes the channels it was not given), and held across
    // the fork by the forking thread, so no other thread can hold it then.
    "static LIVE: std::sync::Mutex<",
)];

/// The lines of `code` that declare a static lock or a `PerProcess` cell by hand.
fn static_locks(code: &str) -> Vec<String> {
    code.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        // A `static` item, not a `'static` lifetime.
        .filter(|l| l.starts_with("static ") || l.contains(" static "))
        .filter(|l| {
            ["Mutex<", "RwLock<", "PerProcess<"]
                .iter()
                .any(|t| l.contains(t))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn per_process_state_is_declared_in_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for dir in ["runtime/src", "os/src"] {
        for p in rust_files(&root.join(dir)) {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let text = read(&p);
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for l in static_locks(code) {
                found.push((rel.clone(), l));
            }
        }
    }
    let stray: Vec<String> = found
        .iter()
        .filter(|(file, line)| {
            // The macro's own expansion in per_process.rs declares the cell.
            let by_macro = file == "os/src/per_process.rs" && line.contains("$vis static");
            !by_macro
                && !STATIC_LOCKS
                    .iter()
                    .any(|(f, l)| f == file && line.starts_with(l))
        })
        .map(|(f, l)| format!("{f}: {l}"))
        .collect();
    assert!(
        stray.is_empty(),
        "per-process state outside `per_process!` (a forked child would inherit it, maybe locked):\n{}",
        stray.join("\n")
    );
}

#[test]
fn the_static_lock_check_sees_one() {
    assert_eq!(
        static_locks("static A: Mutex<u8> = Mutex::new(0);").len(),
        1
    );
    assert_eq!(
        static_locks("pub(crate) static B: std::sync::RwLock<()> = x;").len(),
        1
    );
    assert!(static_locks("// static C: Mutex<u8>").is_empty());
    assert!(static_locks("static D: AtomicU8 = AtomicU8::new(0);").is_empty());
    assert!(static_locks("fn f(x: &'static Mutex<u8>) {}").is_empty());
}
