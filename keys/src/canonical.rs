//! OLPC canonical JSON, the byte form that TUF signatures cover.

use serde::Serialize;

use crate::Error;

/// Serializes `value` as OLPC canonical JSON: sorted keys, no insignificant
/// white space, and no floating-point numbers.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut bytes, olpc_cjson::CanonicalFormatter::new());
    value
        .serialize(&mut serializer)
        .map_err(|source| Error::Canonical { source })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let value = serde_json::json!({"b": 1, "a": {"d": "x", "c": true}});
        let bytes = to_canonical_json(&value).expect("serializable");
        assert_eq!(bytes, br#"{"a":{"c":true,"d":"x"},"b":1}"#);
    }

    #[test]
    fn canonical_json_rejects_floats() {
        let value = serde_json::json!({"a": 1.5});
        assert!(to_canonical_json(&value).is_err());
    }
}
