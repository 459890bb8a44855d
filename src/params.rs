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
    match serde_json::from_value::<P>(params.clone()) {
        Ok(p) => Ok(p),
        Err(_) => {
            let Value::Object(object) = params else {
                return Err(InvalidParams);
            };
            let coerced = object.into_iter().map(|(k, v)| (k, coerce(v))).collect();
            serde_json::from_value(Value::Object(coerced)).map_err(|_| InvalidParams)
        }
    }
}

fn coerce(value: Value) -> Value {
    match value {
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Value::Number(i.into())
            } else if let Some(n) = t.parse::<f64>().ok().and_then(Number::from_f64) {
                Value::Number(n)
            } else {
                match t.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "on" => Value::Bool(true),
                    "false" | "no" | "off" => Value::Bool(false),
                    _ => Value::String(s),
                }
            }
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => Value::Number((f as i64).into()),
            _ => Value::Number(n),
        },
        other => other,
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
    }
}
