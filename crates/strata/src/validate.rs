//! Checks on an append before a backend writes it: names, types, sizes and counts. Every
//! backend runs them, so the rules are the same everywhere.

use crate::error::InvalidInput;
use crate::limits::Limits;
use crate::metadata::StreamMetadata;
use crate::store::AppendRequest;
use crate::stream;

use crate::engine::index::METADATA_EVENT_TYPE;

/// Checks every part of an append against the limits and naming rules.
pub fn append(requests: &[AppendRequest], limits: &Limits) -> Result<(), InvalidInput> {
    if requests.len() > limits.append_streams_max {
        return Err(InvalidInput::TooManyStreams {
            count: requests.len(),
            max: limits.append_streams_max,
        });
    }
    let count: usize = requests.iter().map(|r| r.events.len()).sum();
    if count > limits.append_events_max {
        return Err(InvalidInput::TooManyEvents {
            count,
            max: limits.append_events_max,
        });
    }
    let mut total = 0usize;
    for request in requests {
        let metastream = stream::metastream_target(&request.stream);
        match metastream {
            Some(target) => {
                // `$$name` is writable: appending to it is how metadata is set.
                stream::validate_name(&request.stream, limits)?;
                stream::validate_name(target, limits)?;
                if stream::metastream_target(target).is_some() {
                    return Err(InvalidInput::ReservedStreamName {
                        name: request.stream.clone(),
                    });
                }
            }
            None => stream::validate_writable(&request.stream, limits)?,
        }
        for event in &request.events {
            let size = event.size_bytes();
            if size > limits.event_size_bytes_max {
                return Err(InvalidInput::EventTooLarge {
                    id: event.id,
                    size,
                    max: limits.event_size_bytes_max,
                });
            }
            total += size;
            if event.event_type.is_empty() {
                return Err(InvalidInput::EmptyEventType { id: event.id });
            }
            if event.event_type.len() > limits.event_type_bytes_max {
                return Err(InvalidInput::EventTypeTooLong {
                    id: event.id,
                    length: event.event_type.len(),
                    max: limits.event_type_bytes_max,
                });
            }
            if metastream.is_some() {
                if event.event_type != METADATA_EVENT_TYPE {
                    return Err(InvalidInput::InvalidMetadata {
                        reason: format!(
                            "events of a metadata stream must have type {METADATA_EVENT_TYPE}, got {:?}",
                            event.event_type
                        ),
                    });
                }
                StreamMetadata::from_slice(&event.data)?;
            } else if event.event_type.starts_with('$') {
                return Err(InvalidInput::ReservedEventType {
                    event_type: event.event_type.clone(),
                });
            }
        }
    }
    if total > limits.append_size_bytes_max {
        return Err(InvalidInput::AppendTooLarge {
            size: total,
            max: limits.append_size_bytes_max,
        });
    }
    Ok(())
}
