//! Reading typed parameters from a client's JSON, as leniently as SocketAPI (pydantic's lax mode):
//! `"123"` is accepted for an integer, `3.0` for an integer, `"true"` for a boolean.

use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

/// The parameters did not validate against the channel's or action's type.
#[derive(Debug)]
pub(crate) struct InvalidParams;

/// Deserializes `P` from `params`; if that fails, once more with the top-level fields coerced the
/// way pydantic's lax mode does.
pub(crate) fn from_params<P: DeserializeOwned>(params: Value) -> Result<P, InvalidParams> {
    // Deserializing from a borrowed `Value` keeps `params` for the lax retries without cloning it
    // on the common path.
    if let Ok(p) = P::deserialize(&params) {
        return Ok(p);
    }
    let Value::Object(object) = params else {
        return Err(InvalidParams);
    };
    // Second try: strings that hold numbers or booleans, and whole floats, as pydantic reads them.
    let lax: serde_json::Map<String, Value> = object.into_iter().map(|(k, v)| (k, coerce(v))).collect();
    if let Ok(p) = serde_json::from_value::<P>(Value::Object(lax.clone())) {
        return Ok(p);
    }
    // Last try: booleans as integers (pydantic accepts `true` for an int). Separate, so that a
    // real boolean field is never turned into a number when the second try would do.
    let bools_as_ints = lax
        .into_iter()
        .map(|(k, v)| match v {
            Value::Bool(b) => (k, Value::from(i64::from(b))),
            other => (k, other),
        })
        .collect();
    serde_json::from_value(Value::Object(bools_as_ints)).map_err(|_| InvalidParams)
}

fn coerce(value: Value) -> Value {
    match value {
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Value::Number(i.into())
            } else if let Ok(f) = t.parse::<f64>() {
                whole_or_float(f).unwrap_or(Value::String(s))
            } else {
                match t.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Value::Bool(true),
                    "false" | "no" | "off" => Value::Bool(false),
                    _ => Value::String(s),
                }
            }
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => whole_or_float(f).unwrap_or(Value::Number(n)),
            _ => Value::Number(n),
        },
        other => other,
    }
}

/// `3.0` as the integer 3; other finite floats as they are.
fn whole_or_float(f: f64) -> Option<Value> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Some(Value::from(f as i64))
    } else {
        Number::from_f64(f).map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Add {
        a: i64,
        b: i64,
    }

    #[test]
    fn lax_like_pydantic() {
        assert_eq!(
            from_params::<Add>(json!({"a": "2", "b": 3.0})).ok(),
            Some(Add { a: 2, b: 3 })
        );
        assert!(from_params::<Add>(json!({"a": "two", "b": 3})).is_err());
        assert!(from_params::<Add>(json!({"a": 2.5, "b": 3})).is_err());
        assert!(from_params::<Add>(json!({"a": 1})).is_err());
        // As pydantic: "1.0" and true are integers (SocketAPI answers 2 to both).
        assert_eq!(
            from_params::<Add>(json!({"a": "1.0", "b": 1})).ok(),
            Some(Add { a: 1, b: 1 })
        );
        assert_eq!(
            from_params::<Add>(json!({"a": true, "b": 1})).ok(),
            Some(Add { a: 1, b: 1 })
        );
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Flags {
        n: i64,
        on: bool,
    }

    #[test]
    fn booleans_stay_booleans_when_they_can() {
        assert_eq!(
            from_params::<Flags>(json!({"n": "3", "on": true})).ok(),
            Some(Flags { n: 3, on: true })
        );
    }
}
