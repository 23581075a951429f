//! The metric a producer hands to the agent (plugin output, `/post` body, built-in result).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One measurement as a producer reports it, before the agent normalises it into a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The measurement name before renaming (`conn.active`).
    pub name: String,
    /// Unix time; any unit is accepted here, the pipeline keeps only seconds.
    #[serde(
        default,
        deserialize_with = "de_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp: Option<i64>,
    /// Tags of the point; the agent adds `host`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The single field's value.
    pub value: Value,
}

impl Metric {
    /// A metric with a numeric value, no tags and no timestamp.
    pub fn new(name: impl Into<String>, value: impl Into<Value>) -> Self {
        Metric {
            name: name.into(),
            timestamp: None,
            tags: BTreeMap::new(),
            value: value.into(),
        }
    }

    /// Adds a tag, builder style.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the timestamp, builder style.
    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// A metric's value: a number, a string or a boolean.
///
/// JSON numbers always become `Float`, so that a producer sending `1` and later `1.5` does not
/// create a field type conflict in InfluxDB; `Int` comes from line protocol's `i` suffix.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A float field.
    Float(f64),
    /// An integer field (line protocol `42i`).
    Int(i64),
    /// A string field.
    Str(String),
    /// A boolean field.
    Bool(bool),
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Str(v) => write!(f, "{v:?}"),
            Value::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Float(v) => s.serialize_f64(*v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::Str(v) => s.serialize_str(v),
            Value::Bool(v) => s.serialize_bool(*v),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a string or a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Float(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Float(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Accepts an integer, a float (truncated) or null for a timestamp.
fn de_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a unix timestamp (integer) or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("timestamp out of range"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() && v.abs() < 9.2e18 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom("timestamp out of range"))
            }
        }
    }
    d.deserialize_option(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_are_floats_and_missing_fields_default() {
        let m: Metric = serde_json::from_str(r#"{"name":"a","value":3}"#).expect("parse");
        assert_eq!(m.value, Value::Float(3.0));
        assert_eq!(m.timestamp, None);
        assert!(m.tags.is_empty());
    }

    #[test]
    fn timestamp_accepts_float_and_null() {
        let m: Metric =
            serde_json::from_str(r#"{"name":"a","value":"x","timestamp":1764000000.7}"#)
                .expect("parse");
        assert_eq!(m.timestamp, Some(1_764_000_000));
        let m: Metric =
            serde_json::from_str(r#"{"name":"a","value":true,"timestamp":null}"#).expect("parse");
        assert_eq!(m.timestamp, None);
        assert_eq!(m.value, Value::Bool(true));
    }

    #[test]
    fn object_value_is_refused() {
        let err = serde_json::from_str::<Metric>(r#"{"name":"a","value":{}}"#)
            .expect_err("objects are not values");
        assert!(err.to_string().contains("a number, a string or a boolean"));
    }
}
