//! Stream metadata: retention rules and custom properties, stored as JSON events in the
//! stream's metadata stream (`$$name`) using KurrentDB's property names.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::InvalidInput;

/// The `$tb` value that marks a soft-deleted stream (KurrentDB's `EventNumber.DeletedStream`).
pub const DELETED_TRUNCATE_BEFORE: u64 = i64::MAX as u64;

/// The keys an `$acl` object may have, as KurrentDB reads them: who may read, write,
/// delete, read the metadata, write the metadata. Each value is one role (a string) or
/// a list of roles (an array of strings, possibly empty).
pub const ACL_KEYS: [&str; 5] = ["$r", "$w", "$d", "$mr", "$mw"];

/// Rules and properties attached to a stream. Reads honour the rules at once; the
/// space they free is reclaimed later.
///
/// ```
/// use strata_core::StreamMetadata;
/// let meta = StreamMetadata { max_count: Some(10), ..StreamMetadata::default() };
/// let json = meta.to_json();
/// assert_eq!(json["$maxCount"], 10);
/// assert_eq!(StreamMetadata::from_json(&json).unwrap(), meta);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamMetadata {
    /// Events older than this are hidden (`$maxAge`, whole seconds).
    pub max_age: Option<Duration>,
    /// Only the newest this-many events are visible (`$maxCount`).
    pub max_count: Option<u64>,
    /// Events with a lower revision are hidden (`$tb`).
    pub truncate_before: Option<u64>,
    /// How long clients may cache reads of the head (`$cacheControl`, seconds).
    pub cache_control: Option<Duration>,
    /// Access control list (`$acl`), kept as given once its shape is checked (see
    /// [`ACL_KEYS`]). The server enforces it when authentication is on; the embedded
    /// library does not (a program that opens the store may do anything).
    pub acl: Option<Value>,
    /// Any other properties, kept as given.
    pub custom: Map<String, Value>,
}

impl StreamMetadata {
    /// Whether this metadata marks the stream as soft-deleted.
    pub fn is_deleted(&self) -> bool {
        self.truncate_before == Some(DELETED_TRUNCATE_BEFORE)
    }

    /// The lowest revision reads show of a stream whose next revision is `len`, by
    /// truncate-before and max count (max age is checked against each event's time).
    pub fn first_visible(&self, len: u64) -> u64 {
        let by_count = self.max_count.map_or(0, |count| len.saturating_sub(count));
        self.truncate_before.unwrap_or(0).max(by_count)
    }

    /// The JSON object stored in the metadata stream.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        if let Some(max_age) = self.max_age {
            object.insert("$maxAge".into(), max_age.as_secs().into());
        }
        if let Some(max_count) = self.max_count {
            object.insert("$maxCount".into(), max_count.into());
        }
        if let Some(truncate_before) = self.truncate_before {
            object.insert("$tb".into(), truncate_before.into());
        }
        if let Some(cache_control) = self.cache_control {
            object.insert("$cacheControl".into(), cache_control.as_secs().into());
        }
        if let Some(acl) = &self.acl {
            object.insert("$acl".into(), acl.clone());
        }
        for (key, value) in &self.custom {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }

    /// Parses the JSON object stored in a metadata stream.
    pub fn from_json(value: &Value) -> Result<StreamMetadata, InvalidInput> {
        let Value::Object(object) = value else {
            return Err(invalid("metadata must be a JSON object".into()));
        };
        let mut metadata = StreamMetadata::default();
        for (key, value) in object {
            match key.as_str() {
                "$maxAge" => metadata.max_age = Some(Duration::from_secs(positive(key, value)?)),
                "$maxCount" => metadata.max_count = Some(positive(key, value)?),
                "$tb" => metadata.truncate_before = Some(non_negative(key, value)?),
                "$cacheControl" => {
                    metadata.cache_control = Some(Duration::from_secs(positive(key, value)?))
                }
                "$acl" => {
                    check_acl(value)?;
                    metadata.acl = Some(value.clone());
                }
                _ => {
                    metadata.custom.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(metadata)
    }

    /// Parses metadata from the bytes of a metadata event.
    pub fn from_slice(bytes: &[u8]) -> Result<StreamMetadata, InvalidInput> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|error| invalid(format!("not valid JSON: {error}")))?;
        StreamMetadata::from_json(&value)
    }
}

fn invalid(reason: String) -> InvalidInput {
    InvalidInput::InvalidMetadata { reason }
}

/// Checks a `$settings` event's data: a JSON object whose `$userStreamAcl` and
/// `$systemStreamAcl`, when present, are ACLs of the shape `$acl` has. Other keys are
/// kept as given. Settings no server can read would lock every non-admin out.
pub fn check_settings(data: &[u8]) -> Result<(), InvalidInput> {
    let value: Value = serde_json::from_slice(data)
        .map_err(|error| invalid(format!("$settings must be a JSON object: {error}")))?;
    let Value::Object(settings) = &value else {
        return Err(invalid(format!(
            "$settings must be a JSON object, got {value}"
        )));
    };
    for key in ["$userStreamAcl", "$systemStreamAcl"] {
        if let Some(acl) = settings.get(key) {
            check_acl(acl).map_err(|error| match error {
                InvalidInput::InvalidMetadata { reason } => invalid(format!("{key}: {reason}")),
                other => other,
            })?;
        }
    }
    Ok(())
}

/// Checks that `value` has the shape KurrentDB's `StreamMetadata.ReadAcl` accepts: an
/// object whose keys are among [`ACL_KEYS`], each a string or an array of strings.
/// KurrentDB fails on anything else (`null` included, and unknown keys), so strata
/// refuses it rather than keep something no KurrentDB reader can use.
fn check_acl(value: &Value) -> Result<(), InvalidInput> {
    let Value::Object(acl) = value else {
        return Err(invalid(format!(
            "$acl must be an object with keys among {}, got {value}",
            ACL_KEYS.join(", ")
        )));
    };
    for (key, roles) in acl {
        if !ACL_KEYS.contains(&key.as_str()) {
            return Err(invalid(format!(
                "$acl has unknown key {key:?}: use {}",
                ACL_KEYS.join(", ")
            )));
        }
        let valid = match roles {
            Value::String(_) => true,
            Value::Array(list) => list.iter().all(Value::is_string),
            _ => false,
        };
        if !valid {
            return Err(invalid(format!(
                "$acl.{key} must be a role (string) or a list of roles (array of strings), got {roles}"
            )));
        }
    }
    Ok(())
}

fn non_negative(key: &str, value: &Value) -> Result<u64, InvalidInput> {
    value
        .as_u64()
        .ok_or_else(|| invalid(format!("{key} must be a non-negative integer, got {value}")))
}

fn positive(key: &str, value: &Value) -> Result<u64, InvalidInput> {
    match non_negative(key, value)? {
        0 => Err(invalid(format!("{key} must be at least 1"))),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_shapes() {
        let meta = StreamMetadata {
            max_age: Some(Duration::from_secs(60)),
            max_count: Some(3),
            truncate_before: Some(2),
            cache_control: None,
            acl: Some(serde_json::json!({"$r": "$all"})),
            custom: serde_json::json!({"owner": "ops"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        assert_eq!(StreamMetadata::from_json(&meta.to_json()), Ok(meta));
        assert!(StreamMetadata::from_slice(b"[1]").is_err());
        assert!(StreamMetadata::from_slice(b"{\"$maxCount\": -1}").is_err());
        assert!(StreamMetadata::from_slice(b"{\"$maxAge\": 0}").is_err());
        assert!(StreamMetadata::from_slice(b"not json").is_err());
    }

    #[test]
    fn acl_has_kurrentdb_shape() {
        for good in [
            r#"{"$acl": {}}"#,
            r#"{"$acl": {"$r": "$all"}}"#,
            r#"{"$acl": {"$r": [], "$w": ["a", "b"], "$d": "c", "$mr": ["d"], "$mw": "e"}}"#,
        ] {
            let metadata = StreamMetadata::from_slice(good.as_bytes());
            assert!(metadata.is_ok(), "{good}: {metadata:?}");
        }
        for bad in [
            r#"{"$acl": [null, null]}"#,
            r#"{"$acl": null}"#,
            r#"{"$acl": "$all"}"#,
            r#"{"$acl": 1}"#,
            r#"{"$acl": {"$r": null}}"#,
            r#"{"$acl": {"$r": 1}}"#,
            r#"{"$acl": {"$r": [null]}}"#,
            r#"{"$acl": {"$r": [["a"]]}}"#,
            r#"{"$acl": {"$w": {"a": "b"}}}"#,
            r#"{"$acl": {"$x": "a"}}"#,
        ] {
            match StreamMetadata::from_slice(bad.as_bytes()) {
                Err(InvalidInput::InvalidMetadata { reason }) => {
                    assert!(reason.contains("$acl"), "{bad}: {reason}")
                }
                other => panic!("{bad} is refused, got {other:?}"),
            }
        }
    }
}
