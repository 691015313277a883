//! `docs/experiment-files.md` against the serde structs: every key a file of each kind accepts is
//! in the reference, and every key of the reference is accepted. The keys a struct accepts are
//! read from serde itself: an unknown key `__probe` in a table is refused with "expected one of
//! `a`, `b`, …" (every struct is `deny_unknown_fields`); a tagged table (`kind = …`) lists its
//! variants the same way for an unknown `kind`, and each variant is probed in turn.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use toml_edit::{DocumentMut, Item, Table, value};
use tweedie_sample::class_cond::ClassFile;
use tweedie_sample::gmm_bench::GmmFile;
use tweedie_sample::recon::ReconFile;
use tweedie_train::classify::ClassifierFile;
use tweedie_train::config::TrainFile;

const PROBE: &str = "__probe";

/// The serde error of parsing `text` as `T`, or None when it parses.
fn error_of<T: DeserializeOwned>(text: &str) -> Option<String> {
    tweedie_sample::toml_file::parse::<T>(text)
        .err()
        .map(|e| format!("{e:#}"))
}

/// The backticked names serde expected (none for "there are no fields").
fn expected(err: &str) -> Option<Vec<String>> {
    if err.contains("there are no fields") || err.contains("there are no variants") {
        return Some(Vec::new());
    }
    // serde says "expected one of `a`, `b`, …", "expected `a` or `b`" or "expected `a`".
    let rest = &err[err.find(", expected ")? + ", expected ".len()..];
    let rest = rest.split(" at line").next().unwrap_or(rest);
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// The table at `path` in `doc`, created (implicit parents) if missing.
fn table_at<'a>(doc: &'a mut DocumentMut, path: &[&str]) -> &'a mut Table {
    let mut t = doc.as_table_mut();
    for p in path {
        if !t.get(p).is_some_and(Item::is_table) {
            let mut new = Table::new();
            new.set_implicit(false);
            t.insert(p, Item::Table(new));
        }
        t = t[p].as_table_mut().expect("a table");
    }
    t
}

/// The keys the table at `path` accepts (None: `path` is not a table of named keys), with the
/// rest of `doc` as it is.
fn fields<T: DeserializeOwned>(doc: &DocumentMut, path: &[&str]) -> Option<Vec<String>> {
    let mut d = doc.clone();
    table_at(&mut d, path).insert(PROBE, value(1));
    let err = error_of::<T>(&d.to_string())?;
    if !err.contains(&format!("unknown field `{PROBE}`")) {
        return None;
    }
    expected(&err)
}

/// The variants of the table at `path` if it is tagged by `kind`.
fn variants<T: DeserializeOwned>(doc: &DocumentMut, path: &[&str]) -> Option<Vec<String>> {
    if path.is_empty() {
        return None;
    }
    let mut d = doc.clone();
    let t = table_at(&mut d, path);
    t.clear();
    t.insert("kind", value(PROBE));
    let err = error_of::<T>(&d.to_string())?;
    err.contains(&format!("unknown variant `{PROBE}`"))
        .then(|| expected(&err))?
}

/// Every key path (`a.b.c`) a file of kind `T` accepts, probing from the valid file `base`.
fn accepted<T: DeserializeOwned>(base: &str) -> BTreeSet<String> {
    let doc: DocumentMut = base.parse().expect("the base file is TOML");
    assert!(
        error_of::<T>(base).is_none(),
        "the base file does not parse"
    );
    let mut out = BTreeSet::new();
    walk::<T>(&doc, &mut Vec::new(), &mut out);
    out
}

/// Collects the keys under `path`: a key that is itself a table of named keys is walked into.
fn walk<T: DeserializeOwned>(
    doc: &DocumentMut,
    path: &mut Vec<String>,
    out: &mut BTreeSet<String>,
) {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let keys: BTreeSet<String> = match variants::<T>(doc, &p) {
        Some(vs) => {
            let mut keys = BTreeSet::from(["kind".to_string()]);
            for v in vs {
                let mut d = doc.clone();
                let t = table_at(&mut d, &p);
                t.clear();
                t.insert("kind", value(v.as_str()));
                keys.extend(fields::<T>(&d, &p).unwrap_or_default());
            }
            keys
        }
        None => fields::<T>(doc, &p)
            .unwrap_or_else(|| panic!("[{}] is not a table", p.join(".")))
            .into_iter()
            .collect(),
    };
    for k in keys {
        path.push(k);
        let sub: Vec<&str> = path.iter().map(String::as_str).collect();
        let is_table = variants::<T>(doc, &sub).is_some() || fields::<T>(doc, &sub).is_some();
        if is_table {
            walk::<T>(doc, path, out);
        } else {
            out.insert(path.join("."));
        }
        path.pop();
    }
}

/// The keys of each kind in the reference: the first cell of each table row, every backticked
/// path in it, under the heading `## \`kind = "…"\``.
fn documented() -> Vec<(String, BTreeSet<String>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/experiment-files.md"
    ))
    .expect("docs/experiment-files.md");
    let mut kinds: Vec<(String, BTreeSet<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## `kind = \"") {
            kinds.push((h.trim_end_matches("\"`").to_string(), BTreeSet::new()));
        } else if let (Some(cell), Some((_, keys))) = (
            line.strip_prefix("| ").and_then(|l| l.split(" | ").next()),
            kinds.last_mut(),
        ) {
            keys.extend(cell.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    kinds
}

/// The keys a file of `kind` accepts, probed from its shipped preset.
fn accepted_by(kind: &str) -> BTreeSet<String> {
    let preset = |name: &str| {
        std::fs::read_to_string(format!(
            "{}/../experiments/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    match kind {
        "diffusion-training" => accepted::<TrainFile>(&preset("mnist-tiny.toml")),
        "classifier-training" => accepted::<ClassifierFile>(&preset("mnist-classifier.toml")),
        "reconstruction" => accepted::<ReconFile>(&preset("mnist-sr4.toml")),
        "gmm-benchmark" => accepted::<GmmFile>(&preset("gmm-2mode.toml")),
        _ => accepted::<ClassFile>(&preset("mnist-class.toml")),
    }
}

/// `cargo test -p tweedie-train --test experiment_keys -- --ignored --nocapture`: every key of
/// every kind, to write the reference from.
#[test]
#[ignore]
fn print_every_key() {
    for kind in [
        "diffusion-training",
        "classifier-training",
        "reconstruction",
        "gmm-benchmark",
        "class-conditional",
    ] {
        println!("## {kind}");
        for k in accepted_by(kind) {
            println!("{k}");
        }
    }
}

#[test]
fn the_experiment_file_reference_lists_exactly_the_keys_the_parsers_accept() {
    let docs = documented();
    let kinds: Vec<&str> = docs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "diffusion-training",
            "classifier-training",
            "reconstruction",
            "gmm-benchmark",
            "class-conditional"
        ]
    );
    let mut problems = Vec::new();
    for (kind, doc) in &docs {
        let found = accepted_by(kind);
        for k in found.difference(doc) {
            problems.push(format!(
                "{kind}: `{k}` is accepted but not in the reference"
            ));
        }
        for k in doc.difference(&found) {
            problems.push(format!(
                "{kind}: `{k}` is in the reference but not accepted"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
