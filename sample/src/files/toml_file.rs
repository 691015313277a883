//! Experiment files: TOML parsed into plain serde structs with a one-line error.

use serde::de::DeserializeOwned;

/// Parses TOML `text` into `T`; the error is one line: `line N: <what is wrong>` (unknown keys are
/// named when `T` denies them).
pub fn parse<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    // NaN and ±∞ are valid TOML but no setting accepts them: refuse them under any key.
    if let Ok(value) = toml::from_str::<toml::Value>(text)
        && let Some((key, x)) = crate::check::non_finite_key(&value)
    {
        anyhow::bail!("{key} = {x}: every number in an experiment file must be finite");
    }
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let msg = e.message().trim().replace('\n', " ");
        match line {
            Some(l) => anyhow::anyhow!("line {l}: {msg}"),
            None => anyhow::anyhow!("{msg}"),
        }
    })
}

/// `particles = 4` or `particles = [1, 4, 16]`: one count or a list (serde's `deserialize_with`).
pub fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match <OneOrMany as serde::Deserialize>::deserialize(d)? {
        OneOrMany::One(k) => vec![k],
        OneOrMany::Many(v) => v,
    })
}
