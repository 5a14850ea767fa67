//! Deserialisation that rejects unknown keys, for configurations whose types cannot carry
//! `#[serde(deny_unknown_fields)]` (burn's `#[derive(Config)]` types).
//!
//! The value is deserialised, serialised back, and every key of the input must reappear: a key
//! the type does not know is dropped by serde and is reported here with its full path.

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Error of [`from_value_strict`].
#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    /// The value does not have the type's shape.
    #[error("{0}")]
    Invalid(#[from] serde_json::Error),
    /// A key that the type does not have.
    #[error("unknown key `{path}`{hint}")]
    UnknownKey {
        /// Dot-separated path of the key.
        path: String,
        /// A suggestion of known keys at that level.
        hint: String,
    },
}

/// Deserialises `value` as `T`, failing on any key `T` does not know.
pub fn from_value_strict<T: DeserializeOwned + Serialize>(value: Value) -> Result<T, StrictError> {
    let parsed: T = serde_json::from_value(value.clone())?;
    let round_trip = serde_json::to_value(&parsed)?;
    find_unknown(&value, &round_trip, "")?;
    Ok(parsed)
}

fn find_unknown(input: &Value, known: &Value, prefix: &str) -> Result<(), StrictError> {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            for (key, value) in input {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                match known.get(key) {
                    Some(k) => find_unknown(value, k, &path)?,
                    None => {
                        let keys: Vec<&str> = known.keys().map(String::as_str).collect();
                        return Err(StrictError::UnknownKey {
                            path,
                            hint: format!(" (known keys here: {})", keys.join(", ")),
                        });
                    }
                }
            }
            Ok(())
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (a, b)) in input.iter().zip(known).enumerate() {
                find_unknown(a, b, &format!("{prefix}.{i}"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouterConfig;

    fn router_json() -> serde_json::Value {
        // burn's `Config` fills defaults in `new()` only; a serialised config has every field.
        serde_json::to_value(RouterConfig::new(4, 8, 3).with_settings(crate::router::RouterSettings::new().with_temperature(0.5))).unwrap()
    }

    #[test]
    fn accepts_known_keys() {
        let cfg: RouterConfig = from_value_strict(router_json()).unwrap();
        assert_eq!((cfg.num_experts, cfg.settings.temperature), (4, 0.5));
    }

    #[test]
    fn names_the_unknown_key() {
        let mut value = router_json();
        value["settings"]["temprature"] = serde_json::json!(1.0);
        let msg = from_value_strict::<RouterConfig>(value).unwrap_err().to_string();
        assert!(msg.starts_with("unknown key `settings.temprature`"), "{msg}");
        assert!(msg.contains("temperature"), "the hint lists the real key: {msg}");
    }

    #[test]
    fn names_nested_unknown_keys_with_their_path() {
        let mut value = serde_json::to_value(crate::prompts::MopePromptsConfig::new(2, 8, 4)).unwrap();
        value["router"]["top_kk"] = serde_json::json!(2);
        let msg = from_value_strict::<crate::prompts::MopePromptsConfig>(value).unwrap_err().to_string();
        assert!(msg.starts_with("unknown key `router.top_kk`"), "{msg}");
    }
}
