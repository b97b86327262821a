//! The layering rule of `src/lib.rs`, kept by a test: a top-level module may use only modules of
//! lower layers, so there are no import cycles and the primitives stay at the bottom. A new
//! top-level module fails this test until it is given a layer here (and in lib.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom to top; modules within one layer may not use each other.
const LAYERS: &[&[&str]] = &[
    &["shared"],
    &["telemetry", "net", "orders"],
    &["processors"],
    &["pipeline"],
    &["store", "loadgen", "notifiers"],
    &["exporters"],
    &["query", "audit"],
    &["auth", "monitors"],
    &["receivers", "api", "demo"],
    &["config"],
    &["gateway", "offline"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `crate::<module>` references of each top-level module, outside its tests.
fn uses(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let owner = rel.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs").to_string();
            if owner == "lib" || owner == "main" {
                continue;
            }
            let mut text = std::fs::read_to_string(&path).unwrap();
            if let Some(at) = text.find("#[cfg(test)]\nmod ") {
                text.truncate(at);
            }
            let used = out.entry(owner.clone()).or_default();
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let module: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
                if !module.is_empty() && module != owner {
                    used.insert(module);
                }
            }
            // `use crate::{a::X, b::Y}` groups.
            for (at, _) in text.match_indices("use crate::{") {
                let group = &text[at + "use crate::{".len()..];
                let group = &group[..group.find("};").unwrap_or(group.len())];
                for part in group.split([',', '{', ' ', '\n']) {
                    if let Some((module, _)) = part.trim().split_once("::") {
                        if module != owner && !module.is_empty() {
                            used.insert(module.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = uses(&src);
    let mut problems = Vec::new();
    for (module, used) in &uses {
        let Some(own) = layer_of(module) else {
            problems.push(format!("{module}: no layer; add it to LAYERS in tests/layers.rs and to the module map in src/lib.rs"));
            continue;
        };
        for other in used {
            match layer_of(other) {
                Some(layer) if layer < own => {}
                Some(_) => problems.push(format!(
                    "{module} (layer {own}) uses {other} (layer {}): only lower layers may be used",
                    layer_of(other).unwrap()
                )),
                None => problems.push(format!("{module} uses {other}, which has no layer")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(uses.len() >= 15, "the scan found the modules: {:?}", uses.keys());
    assert!(uses["shared"].is_empty(), "shared imports nothing: {:?}", uses["shared"]);
}
