//! Typed events to stored events and back: the variant name is the event type, its
//! content the JSON data, and the schema version sits in the metadata.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ModelError;
use super::upcast::{Upcasters, Versioned};
use crate::event::{ContentType, EventData, RecordedEvent};

/// The metadata field holding an event's schema version.
pub const SCHEMA_VERSION_FIELD: &str = "schema_version";

/// Splits a typed event into its type name and JSON data.
pub fn encode<E: Serialize>(event: &E) -> Result<(String, Value), ModelError> {
    match serde_json::to_value(event) {
        Ok(Value::String(variant)) => Ok((variant, Value::Null)),
        Ok(Value::Object(object)) if object.len() == 1 => {
            let (variant, data) = object.into_iter().next().ok_or_else(|| ModelError::Encode {
                reason: "empty object".into(),
            })?;
            Ok((variant, data))
        }
        Ok(other) => Err(ModelError::Encode {
            reason: format!(
                "events must serialise as an externally tagged enum variant (serde's default), got {other}"
            ),
        }),
        Err(error) => Err(ModelError::Encode {
            reason: error.to_string(),
        }),
    }
}

/// A stored event for a typed event, with `metadata` as its metadata (the schema
/// version is added).
pub fn to_event_data<E: Serialize>(
    event: &E,
    upcasters: &Upcasters,
    mut metadata: Map<String, Value>,
) -> Result<EventData, ModelError> {
    let (event_type, data) = encode(event)?;
    let version = upcasters.current_version(&event_type);
    metadata.insert(SCHEMA_VERSION_FIELD.into(), version.into());
    let data = serde_json::to_vec(&data).map_err(|e| ModelError::Encode {
        reason: e.to_string(),
    })?;
    let metadata = serde_json::to_vec(&metadata).map_err(|e| ModelError::Encode {
        reason: e.to_string(),
    })?;
    Ok(EventData::new(event_type, data, ContentType::Json).with_metadata(metadata))
}

/// The metadata of a recorded event as a JSON object (empty if it is not one).
pub fn metadata_object(event: &RecordedEvent) -> Map<String, Value> {
    match serde_json::from_slice(&event.metadata) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

/// The schema version of a recorded event.
pub fn schema_version(event: &RecordedEvent) -> u32 {
    metadata_object(event)
        .get(SCHEMA_VERSION_FIELD)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(1)
}

/// Decodes a recorded event into typed events (several if an upcaster split it).
pub fn decode<E: DeserializeOwned>(
    event: &RecordedEvent,
    upcasters: &Upcasters,
) -> Result<Vec<E>, ModelError> {
    let failure = |reason: String| ModelError::Decode {
        stream: event.stream.clone(),
        revision: event.revision,
        event_type: event.event_type.clone(),
        reason,
    };
    if event.content_type != ContentType::Json {
        return Err(failure(
            "binary data cannot be decoded as a typed event".into(),
        ));
    }
    let data: Value = serde_json::from_slice(&event.data).map_err(|e| failure(e.to_string()))?;
    let versioned = Versioned::new(event.event_type.clone(), schema_version(event), data);
    let mut decoded = Vec::new();
    for current in upcasters.upcast(versioned)? {
        let mut tagged = Map::new();
        tagged.insert(current.event_type.clone(), current.data);
        match serde_json::from_value(Value::Object(tagged)) {
            Ok(typed) => decoded.push(typed),
            Err(error) if error.to_string().starts_with("unknown variant") => {
                return Err(ModelError::UnknownEvent {
                    stream: event.stream.clone(),
                    revision: event.revision,
                    event_type: current.event_type,
                    version: current.version,
                })
            }
            Err(error) => return Err(failure(error.to_string())),
        }
    }
    Ok(decoded)
}
