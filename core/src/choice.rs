//! Choices given as text — a flag's value, a name stored in a file — for any serde enum of unit
//! variants. The enum's own serde names are the one list of valid values: an unknown name's
//! error lists them (`unknown variant `x`, expected one of `a`, `b``).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::de::value::{Error, StrDeserializer};

/// The variant of `T` named `s`.
pub fn parse<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    T::deserialize(StrDeserializer::<Error>::new(s)).map_err(|e| e.to_string())
}

/// The name of a unit variant (what [`parse`] reads back).
pub fn name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Colour {
        DarkRed,
        Blue,
    }

    #[test]
    fn names_round_trip_and_errors_list_the_choices() {
        assert_eq!(super::parse::<Colour>("dark-red"), Ok(Colour::DarkRed));
        assert_eq!(super::name(&Colour::DarkRed), "dark-red");
        let e = super::parse::<Colour>("green").unwrap_err();
        assert!(
            e.contains("`green`") && e.contains("`dark-red` or `blue`"),
            "{e}"
        );
    }
}
