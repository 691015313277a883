//! Experiment files: every file names what it is in a top-level `kind` key, parsed into one enum,
//! [`ExperimentKind`]; each kind has its own plain serde struct (unknown keys rejected, errors
//! with their line) and one binary that runs it. A file given to the other binary is refused
//! with one line that says which binary takes it.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What an experiment file describes (its `kind` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExperimentKind {
    /// Train a DDPM ε-prediction model on a dataset (`train --config`).
    DiffusionTraining,
    /// Train the classifier of class-conditional guidance and classifier-FID (`train --config`).
    ClassifierTraining,
    /// Posterior samples for an inverse problem y = A(x) + noise from a trained prior, by every
    /// listed method (`sample --config`).
    Reconstruction,
    /// Every guidance method against the closed-form posterior of a Gaussian-mixture prior
    /// (`sample --config`).
    GmmBenchmark,
    /// Images of requested classes from an unconditional model and a classifier
    /// (`sample --config`).
    ClassConditional,
}

/// The two binaries that run experiment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Train,
    Sample,
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Binary::Train => "train",
            Binary::Sample => "sample",
        }
    }
}

impl ExperimentKind {
    /// The value of the `kind` key.
    pub fn name(self) -> &'static str {
        match self {
            Self::DiffusionTraining => "diffusion-training",
            Self::ClassifierTraining => "classifier-training",
            Self::Reconstruction => "reconstruction",
            Self::GmmBenchmark => "gmm-benchmark",
            Self::ClassConditional => "class-conditional",
        }
    }

    /// Which binary runs files of this kind.
    pub fn binary(self) -> Binary {
        match self {
            Self::DiffusionTraining | Self::ClassifierTraining => Binary::Train,
            Self::Reconstruction | Self::GmmBenchmark | Self::ClassConditional => Binary::Sample,
        }
    }

    pub const ALL: [ExperimentKind; 5] = [
        Self::DiffusionTraining,
        Self::ClassifierTraining,
        Self::Reconstruction,
        Self::GmmBenchmark,
        Self::ClassConditional,
    ];
}

/// The top of any experiment file: only its kind (the rest is left to the kind's own struct).
#[derive(Deserialize)]
struct Head {
    kind: Option<toml::Value>,
}

/// One command-line override of an experiment file: a dotted key (`train.steps`,
/// `operator.sigma`) and its TOML value. Every binary turns its flags (`--seed`, `--steps`,
/// `--checkpoint`, …) and `--set KEY=VALUE` into these and applies them with [`apply_sets`]
/// to the file's text before it is parsed, so an override meets every check a file's own
/// value meets, for every kind of file.
#[derive(Debug, Clone)]
pub struct Set {
    pub key: String,
    pub value: toml_edit::Value,
}

impl Set {
    pub fn new(key: &str, value: impl Into<toml_edit::Value>) -> Self {
        Self {
            key: key.to_string(),
            value: value.into(),
        }
    }

    /// An unsigned flag's value (`--seed`, `--steps`, …) under `key`: TOML integers are i64, so
    /// a value from 2^63 up is a one-line error naming `flag`.
    pub fn unsigned(key: &str, value: u64, flag: &str) -> Result<Self> {
        let v = i64::try_from(value)
            .map_err(|_| anyhow::anyhow!("{flag} must be below 2^63, got {value}"))?;
        Ok(Self::new(key, v))
    }

    /// `KEY=VALUE` as `--set` takes it: VALUE is TOML (`4`, `0.5`, `true`, `[1, 2]`,
    /// `"text"`), and a bare word that is not TOML is a string (`--set operator.kind=blur`).
    pub fn parse(arg: &str) -> Result<Self> {
        let Some((key, value)) = arg.split_once('=') else {
            bail!("--set {arg}: expected KEY=VALUE (e.g. --set train.steps=100)");
        };
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|p| p.trim().is_empty()) {
            bail!("--set {arg}: the key must be a dotted path like train.steps");
        }
        let value = value.trim();
        let value = value
            .parse::<toml_edit::Value>()
            .unwrap_or_else(|_| toml_edit::Value::from(value));
        Ok(Self {
            key: key.to_string(),
            value,
        })
    }
}

/// `text` with every override of `sets` written in (later ones win), tables created as needed,
/// layout and comments kept.
pub fn apply_sets(text: &str, sets: &[Set]) -> Result<String> {
    if sets.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: toml_edit::DocumentMut = text.parse().context("not TOML")?;
    for set in sets {
        let path: Vec<&str> = set.key.split('.').map(str::trim).collect();
        let (last, tables) = path.split_last().expect("a key has one part");
        let mut table = doc.as_table_mut();
        for (i, part) in tables.iter().enumerate() {
            if !table.contains_key(part) {
                table.insert(part, toml_edit::table());
            }
            table = match table.get_mut(part).and_then(|t| t.as_table_mut()) {
                Some(t) => t,
                None => bail!("--set {}: {} is not a table", set.key, path[..=i].join(".")),
            };
        }
        table.insert(last, toml_edit::value(set.value.clone()));
    }
    Ok(doc.to_string())
}

/// Reads `path` and returns its kind and text. Errors name the file: unreadable, not TOML (with
/// the line), no `kind`, or a kind that does not exist (listing those that do).
pub fn read(path: &Path) -> Result<(ExperimentKind, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let kind = kind_of(&text).with_context(|| path.display().to_string())?;
    Ok((kind, text))
}

/// The kind an experiment file's text declares.
pub fn kind_of(text: &str) -> Result<ExperimentKind> {
    let head: Head = crate::toml_file::parse(text)?;
    let names: Vec<&str> = ExperimentKind::ALL.iter().map(|k| k.name()).collect();
    let Some(value) = head.kind else {
        bail!(
            "no `kind` key: say what the file describes in a top-level line such as \
             kind = \"reconstruction\" (one of {})",
            names.join(", ")
        );
    };
    value
        .clone()
        .try_into()
        .map_err(|_| anyhow::anyhow!("kind = {value}: expected one of {}", names.join(", ")))
}

/// Reads an experiment file that `binary` runs: a file of the other binary's kind is refused
/// with one line naming the binary that takes it.
pub fn read_for(path: &Path, binary: Binary) -> Result<(ExperimentKind, String)> {
    let (kind, text) = read(path)?;
    if kind.binary() != binary {
        bail!(
            "{} is a {} file: run it with `{} --config {}`",
            path.display(),
            kind.name(),
            kind.binary().name(),
            path.display()
        );
    }
    Ok((kind, text))
}

/// A struct that holds one kind of experiment file.
pub trait ExperimentFile: DeserializeOwned {
    const KIND: ExperimentKind;

    /// The `kind` key the file carried.
    fn kind(&self) -> ExperimentKind;

    /// Parses TOML text as a file of this kind; errors are one line, `line N: …` for syntax,
    /// unknown keys and invalid values.
    fn parse(text: &str) -> Result<Self> {
        let file: Self = crate::toml_file::parse(text)?;
        if file.kind() != Self::KIND {
            bail!(
                "kind = \"{}\": expected a {} file",
                file.kind().name(),
                Self::KIND.name()
            );
        }
        Ok(file)
    }

    /// Reads and parses `path`; errors name the file.
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}: invalid experiment file", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_key_is_required_and_checked() {
        assert_eq!(
            kind_of("kind = \"gmm-benchmark\"\n[gmm]\nx = 1\n").unwrap(),
            ExperimentKind::GmmBenchmark
        );
        let e = kind_of("[gmm]\nx = 1\n").unwrap_err().to_string();
        assert!(
            e.contains("no `kind` key") && e.contains("gmm-benchmark"),
            "{e}"
        );
        let e = kind_of("kind = \"training\"\n").unwrap_err().to_string();
        assert!(
            e.contains("\"training\"") && e.contains("diffusion-training"),
            "{e}"
        );
        // A syntax error anywhere is reported as such, with its line, whatever the kind.
        let e = kind_of("kind = \"gmm-benchmark\"\n[gmm\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        for k in ExperimentKind::ALL {
            assert_eq!(kind_of(&format!("kind = \"{}\"", k.name())).unwrap(), k);
        }
    }

    #[test]
    fn a_file_for_the_other_binary_names_it() {
        let dir = std::env::temp_dir().join(format!("tweedie-kind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.toml");
        std::fs::write(&p, "kind = \"classifier-training\"\n").unwrap();
        let e = read_for(&p, Binary::Sample).unwrap_err().to_string();
        assert!(
            e.contains("is a classifier-training file: run it with `train --config"),
            "{e}"
        );
        assert!(read_for(&p, Binary::Train).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn overrides_are_written_into_the_text_keeping_its_layout() {
        let text = "# a comment\nkind = \"reconstruction\"\nseed = 1\n[dps]\nzeta = 1.0 # tuned\n";
        let sets = [
            Set::parse("seed=7").unwrap(),
            Set::parse("dps.zeta = 0.25").unwrap(),
            Set::parse("operator.kind=blur").unwrap(),
            Set::parse("run.methods=[\"dps\", \"tds\"]").unwrap(),
            Set::new("checkpoint", "checkpoints/x y"),
        ];
        let out = apply_sets(text, &sets).unwrap();
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(doc["seed"].as_integer(), Some(7));
        assert_eq!(doc["dps"]["zeta"].as_float(), Some(0.25));
        assert_eq!(doc["operator"]["kind"].as_str(), Some("blur"));
        assert_eq!(doc["run"]["methods"].as_array().map(|a| a.len()), Some(2));
        assert_eq!(doc["checkpoint"].as_str(), Some("checkpoints/x y"));
        assert!(out.starts_with("# a comment\nkind"), "{out}");
        for bad in ["seed", "=3", "a..b=1"] {
            assert!(Set::parse(bad).is_err(), "{bad}");
        }
        let e = apply_sets(text, &[Set::parse("seed.x=1").unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("seed is not a table"), "{e}");
    }
}
