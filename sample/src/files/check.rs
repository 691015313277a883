//! Every number a user gives, checked in one place.
//!
//! - [`non_finite_key`] walks a parsed experiment file and finds any NaN or ±∞ (TOML has `nan`
//!   and `inf` literals), under any key: [`crate::toml_file::parse`] refuses such a file naming
//!   the key, before any experiment-specific code sees it.
//! - [`float`] checks one value against its documented [`Range`], naming the key (`dps.zeta`) or
//!   flag (`--eta`) in a one-line error.
//! - [`finite_flag`] is the clap value parser of every floating-point flag.

use std::fmt;

/// The valid values of a float setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// Any finite value.
    Finite,
    /// x > 0.
    Positive,
    /// x ≥ 0.
    NonNegative,
    /// 0 < x < 1.
    OpenUnit,
    /// 0 < x ≤ 1.
    UnitExclusiveZero,
    /// 0 ≤ x < 1.
    UnitExclusiveOne,
    /// 0 ≤ x ≤ 1.
    Unit,
    /// lo ≤ x ≤ hi.
    Closed(f64, f64),
    /// x ≥ lo.
    AtLeast(f64),
}

impl Range {
    pub fn contains(self, x: f64) -> bool {
        x.is_finite()
            && match self {
                Range::Finite => true,
                Range::Positive => x > 0.0,
                Range::NonNegative => x >= 0.0,
                Range::OpenUnit => x > 0.0 && x < 1.0,
                Range::UnitExclusiveZero => x > 0.0 && x <= 1.0,
                Range::UnitExclusiveOne => (0.0..1.0).contains(&x),
                Range::Unit => (0.0..=1.0).contains(&x),
                Range::Closed(lo, hi) => (lo..=hi).contains(&x),
                Range::AtLeast(lo) => x >= lo,
            }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Range::Finite => write!(f, "a finite number"),
            Range::Positive => write!(f, "> 0"),
            Range::NonNegative => write!(f, "≥ 0"),
            Range::OpenUnit => write!(f, "in (0, 1)"),
            Range::UnitExclusiveZero => write!(f, "in (0, 1]"),
            Range::UnitExclusiveOne => write!(f, "in [0, 1)"),
            Range::Unit => write!(f, "in [0, 1]"),
            Range::Closed(lo, hi) => write!(f, "in [{lo}, {hi}]"),
            Range::AtLeast(lo) => write!(f, "≥ {lo}"),
        }
    }
}

/// A value outside its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key} must be {range}, got {value}")]
pub struct RangeError {
    pub key: String,
    pub range: Range,
    pub value: f64,
}

/// `value` if it lies in `range`, else an error naming `key`.
pub fn float(key: &str, value: f64, range: Range) -> Result<f64, RangeError> {
    if range.contains(value) {
        Ok(value)
    } else {
        Err(RangeError {
            key: key.into(),
            range,
            value,
        })
    }
}

/// Every element of `values` in `range` (`key[i]` names the first one outside).
pub fn floats(key: &str, values: &[f64], range: Range) -> Result<(), RangeError> {
    for (i, v) in values.iter().enumerate() {
        float(&format!("{key}[{i}]"), *v, range)?;
    }
    Ok(())
}

/// The clap value parser of floating-point flags: a finite number (ranges are checked with
/// [`float`] once the flag's meaning is known).
pub fn finite_flag(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not finite"))
    }
}

/// The dotted key of the first NaN or infinite float in `value` (e.g. `dps.zeta` or
/// `gmm.means[1][0]`), with the value.
pub fn non_finite_key(value: &toml::Value) -> Option<(String, f64)> {
    fn walk(v: &toml::Value, key: &mut String) -> Option<f64> {
        match v {
            toml::Value::Float(x) if !x.is_finite() => Some(*x),
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let len = key.len();
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(k);
                    if let Some(x) = walk(v, key) {
                        return Some(x);
                    }
                    key.truncate(len);
                }
                None
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    let len = key.len();
                    key.push_str(&format!("[{i}]"));
                    if let Some(x) = walk(v, key) {
                        return Some(x);
                    }
                    key.truncate(len);
                }
                None
            }
            _ => None,
        }
    }
    let mut key = String::new();
    walk(value, &mut key).map(|x| (key, x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_reject_nan_infinity_and_out_of_range_values_naming_the_key() {
        for r in [
            Range::Finite,
            Range::Positive,
            Range::NonNegative,
            Range::OpenUnit,
            Range::Unit,
            Range::Closed(-1.0, 1.0),
        ] {
            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                assert!(float("k", bad, r).is_err(), "{r} accepted {bad}");
            }
        }
        assert_eq!(float("lr", 1e-3, Range::Positive), Ok(1e-3));
        let e = float("dps.zeta", -1.0, Range::Positive).unwrap_err();
        assert_eq!(e.to_string(), "dps.zeta must be > 0, got -1");
        assert!(float("keep", 1.0, Range::OpenUnit).is_err());
        assert!(float("ess", 1.0, Range::UnitExclusiveZero).is_ok());
        assert!(float("ess", 0.0, Range::UnitExclusiveZero).is_err());
        let e = floats("gmm.stds", &[1.0, 0.0], Range::Positive).unwrap_err();
        assert!(e.to_string().starts_with("gmm.stds[1] must be > 0"), "{e}");
    }

    #[test]
    fn flags_must_be_finite_numbers() {
        assert_eq!(finite_flag("0.5"), Ok(0.5));
        for bad in ["nan", "NaN", "inf", "-inf", "infinity", "x", ""] {
            assert!(finite_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_walker_names_the_first_non_finite_key() {
        let v: toml::Value =
            toml::from_str("a = 1.0\n[dps]\nzeta = nan\n[gmm]\nmeans = [[0.0, 1.0], [inf, 2.0]]\n")
                .unwrap();
        let (k, x) = non_finite_key(&v).unwrap();
        assert!(k == "dps.zeta" && x.is_nan(), "{k}");
        let v: toml::Value = toml::from_str("[gmm]\nmeans = [[0.0, 1.0], [-inf, 2.0]]\n").unwrap();
        assert_eq!(
            non_finite_key(&v),
            Some(("gmm.means[1][0]".into(), f64::NEG_INFINITY))
        );
        let v: toml::Value = toml::from_str("a = 1.0\nb = [1, 2]\n").unwrap();
        assert_eq!(non_finite_key(&v), None);
    }
}
