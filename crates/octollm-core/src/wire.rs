//! Reading numbers as JSON Schema means them: an `integer` is any number without a fractional
//! part, so `279.0` is the integer 279 (a client in another language may well send it so).
//! Query strings bring numbers as text, which is read the same way.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// For `#[serde(deserialize_with = "wire::whole")]` on an integer field of a JSON body.
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    d.deserialize_any(Whole(PhantomData, false))
}

/// [`whole`] for an optional field (`null` or absent is `None`).
pub fn whole_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    d.deserialize_option(OptionalWhole(PhantomData))
}

/// An optional integer of a query string, where every value is text.
pub fn whole_in_text<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    d.deserialize_any(Whole(PhantomData, true)).map(Some)
}

/// Whether text is read as a number (query strings) or refused (JSON, where `"7"` is text).
struct Whole<T>(PhantomData<T>, bool);

impl<T: TryFrom<i128>> Whole<T> {
    fn fit<E: de::Error>(v: i128) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }
}

impl<'de, T: TryFrom<i128>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::fit(i128::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::fit(i128::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // Beyond 2^63 a float no longer names one integer; nothing here needs such values.
        if v.fract() != 0.0 || !v.is_finite() || v.abs() > 9.2e18 {
            return Err(E::custom(format!("{v} is not a whole number")));
        }
        Self::fit(v as i128)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
        self.visit_str(&v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        if !self.1 {
            return Err(E::invalid_type(de::Unexpected::Str(v), &self));
        }
        if let Ok(n) = v.parse::<i128>() {
            return Self::fit(n);
        }
        match v.parse::<f64>() {
            Ok(f) => self.visit_f64(f),
            Err(_) => Err(E::custom(format!("{v:?} is not a whole number"))),
        }
    }
}

struct OptionalWhole<T>(PhantomData<T>);

impl<'de, T: TryFrom<i128>> Visitor<'de> for OptionalWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        whole(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct T {
        #[serde(deserialize_with = "super::whole")]
        n: u32,
        #[serde(default, deserialize_with = "super::whole_opt")]
        m: Option<i64>,
    }

    #[test]
    fn integral_numbers_in_any_spelling_are_integers() {
        let t: T = serde_json::from_str(r#"{"n": 279.0, "m": -5}"#).unwrap();
        assert_eq!(
            t,
            T {
                n: 279,
                m: Some(-5)
            }
        );
        let t: T = serde_json::from_str(r#"{"n": 7, "m": null}"#).unwrap();
        assert_eq!(t, T { n: 7, m: None });
        let t: T = serde_json::from_str(r#"{"n": 1e2}"#).unwrap();
        assert_eq!(t.n, 100);
        for bad in [
            r#"{"n": 1.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 5000000000}"#,
            r#"{"n": "7"}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }
}
