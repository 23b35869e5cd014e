//! Stream metadata: retention rules and custom properties, stored as JSON events in the
//! stream's metadata stream (`$$name`) using KurrentDB's property names.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::InvalidInput;

/// The `$tb` value that marks a soft-deleted stream (KurrentDB's `EventNumber.DeletedStream`).
pub const DELETED_TRUNCATE_BEFORE: u64 = i64::MAX as u64;

/// Rules and properties attached to a stream. Reads honour the rules at once; the
/// space they free is reclaimed later.
///
/// ```
/// use strata::StreamMetadata;
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
    /// Access control list (`$acl`), kept as given; enforced by the server.
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
                "$acl" => metadata.acl = Some(value.clone()),
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
}
