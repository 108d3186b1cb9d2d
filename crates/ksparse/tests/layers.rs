//! No import runs up a layer: each library module uses only the modules below it (see
//! ARCHITECTURE.md), so a layer can be read, tested and reused without the ones above.

use std::collections::BTreeSet;
use std::path::Path;

/// The layers, bottom first; a module may use the modules of the rows below its own.
const LAYERS: &[&[&str]] = &[
    &["base"],
    &["io"],
    &["data"],
    &["embed"],
    &["encoder"],
    &["index", "search"],
    &["eval"],
    &["pipeline"],
];

/// The `crate::<module>` paths used anywhere in the files of `module`.
fn imports(src: &Path, module: &str) -> BTreeSet<String> {
    let mut files = vec![src.join(format!("{module}.rs"))];
    let dir = src.join(module);
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut used = BTreeSet::new();
    for f in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let row_of = |m: &str| LAYERS.iter().position(|row| row.contains(&m));
    let mut checked = 0;
    for (row, modules) in LAYERS.iter().enumerate() {
        for module in *modules {
            for used in imports(&src, module) {
                if used == *module {
                    continue;
                }
                let Some(used_row) = row_of(&used) else {
                    continue; // not a module: a function or type at the crate root
                };
                assert!(
                    used_row < row,
                    "`{module}` imports `crate::{used}`, which is not in a layer below it"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} imports seen: is the source where expected?"
    );
    // Every module of the library is placed in a layer.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    for line in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let name = line.trim_end_matches(';');
        assert!(row_of(name).is_some(), "module {name} has no layer");
    }
}
