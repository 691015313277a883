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
}
