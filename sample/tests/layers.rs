//! `sample/src` in layers: files < problems < methods < workflows. Every `crate::<module>` a
//! source file names must be in its own layer or a lower one, and the modules' imports have no
//! circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: [&str; 4] = ["files", "problems", "methods", "workflows"];

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module names after each `crate::` in `text`'s code (comments and doc links aside).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    code.split("crate::")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

#[test]
fn each_layer_imports_only_the_layers_below_it_and_no_module_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // module → (layer index, the modules it names)
    let mut modules: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for (li, layer) in LAYERS.iter().enumerate() {
        for e in std::fs::read_dir(src.join(layer)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            if name == "mod" {
                continue;
            }
            let mut files = Vec::new();
            if p.is_dir() {
                sources(&p, &mut files);
            } else {
                files.push(p.clone());
            }
            let mut refs = BTreeSet::new();
            for f in files {
                refs.extend(crate_refs(&std::fs::read_to_string(f).unwrap()));
            }
            refs.remove(&name);
            modules.insert(name, (li, refs));
        }
    }
    assert!(modules.len() > 20, "{:?}", modules.keys());
    let mut problems = Vec::new();
    for (m, (li, refs)) in &modules {
        for r in refs {
            let layer_of_r = if let Some(pos) = LAYERS.iter().position(|l| l == r) {
                pos
            } else if let Some((lr, _)) = modules.get(r) {
                *lr
            } else {
                problems.push(format!("{m} names crate::{r}, which is in no layer"));
                continue;
            };
            if layer_of_r > *li {
                problems.push(format!(
                    "{m} ({}) imports {r} ({})",
                    LAYERS[*li], LAYERS[layer_of_r]
                ));
            }
        }
    }
    // No circle: repeatedly remove modules that name no remaining module.
    let mut left: BTreeMap<&str, BTreeSet<&str>> = modules
        .iter()
        .map(|(m, (_, r))| {
            let deps = r
                .iter()
                .map(String::as_str)
                .filter(|d| modules.contains_key(*d))
                .collect();
            (m.as_str(), deps)
        })
        .collect();
    while let Some(free) = left
        .iter()
        .find(|(_, deps)| deps.is_empty())
        .map(|(m, _)| *m)
    {
        left.remove(free);
        for deps in left.values_mut() {
            deps.remove(free);
        }
    }
    if !left.is_empty() {
        problems.push(format!("import circle among {:?}", left.keys()));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
