//! Checks on an append before a backend writes it: names, types, sizes and counts. Every
//! backend runs them, so the rules are the same everywhere.

use crate::error::InvalidInput;
use crate::event::EventData;
use crate::limits::Limits;
use crate::metadata::StreamMetadata;
use crate::store::AppendRequest;
use crate::stream;

use crate::stream::METADATA_EVENT_TYPE;

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
            } else if request.stream == stream::SETTINGS_STREAM {
                crate::metadata::check_settings(&event.data)?;
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

/// Counts an append's events and bytes as they arrive, so that a server can refuse an
/// append at its first event over a limit instead of holding all of it first. It checks
/// the limits [`append`] checks on sizes and counts, with the same errors; [`append`]
/// still checks the whole append (names, types) before it is written.
#[derive(Debug)]
pub struct AppendBudget<'a> {
    limits: &'a Limits,
    events: usize,
    bytes: usize,
}

impl<'a> AppendBudget<'a> {
    /// An empty append under `limits`.
    pub fn new(limits: &'a Limits) -> AppendBudget<'a> {
        AppendBudget {
            limits,
            events: 0,
            bytes: 0,
        }
    }

    /// Counts one more event. Fails as soon as the append holds more events than
    /// allowed, this event is too large, or all its events so far are: the error names
    /// what has arrived so far (`count` and `size` are at least that).
    pub fn add(&mut self, event: &EventData) -> Result<(), InvalidInput> {
        self.events += 1;
        if self.events > self.limits.append_events_max {
            return Err(InvalidInput::TooManyEvents {
                count: self.events,
                max: self.limits.append_events_max,
            });
        }
        let size = event.size_bytes();
        if size > self.limits.event_size_bytes_max {
            return Err(InvalidInput::EventTooLarge {
                id: event.id,
                size,
                max: self.limits.event_size_bytes_max,
            });
        }
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.append_size_bytes_max {
            return Err(InvalidInput::AppendTooLarge {
                size: self.bytes,
                max: self.limits.append_size_bytes_max,
            });
        }
        Ok(())
    }

    /// Events counted so far.
    pub fn events(&self) -> usize {
        self.events
    }

    /// Bytes (type, data and metadata) counted so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn settings_is_the_one_writable_system_stream_and_must_hold_valid_acls() {
        let limits = Limits::default();
        let settings = |event_type: &str, data: &str| {
            vec![AppendRequest::new(
                stream::SETTINGS_STREAM,
                crate::ExpectedRevision::Any,
                vec![EventData::binary(event_type, data.as_bytes().to_vec())],
            )]
        };
        append(
            &settings("$settings", r#"{"$userStreamAcl": {"$r": ["a", "b"]}}"#),
            &limits,
        )
        .unwrap();
        append(&settings("update", r#"{"other": 1}"#), &limits).unwrap();
        for bad in [r#"{"$systemStreamAcl": {"$r": 1}}"#, "[]", "not json"] {
            assert!(
                matches!(
                    append(&settings("$settings", bad), &limits),
                    Err(InvalidInput::InvalidMetadata { .. })
                ),
                "{bad}"
            );
        }
        let other = vec![AppendRequest::new(
            "$users",
            crate::ExpectedRevision::Any,
            vec![EventData::binary("x", b"{}".to_vec())],
        )];
        assert!(matches!(
            append(&other, &limits),
            Err(InvalidInput::ReservedStreamName { .. })
        ));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_budget_fails_at_the_first_event_over_a_limit() {
        let limits = Limits {
            event_size_bytes_max: 10,
            append_events_max: 3,
            append_size_bytes_max: 20,
            ..Limits::default()
        };
        let event = |data: &str| EventData::binary("T", data.as_bytes().to_vec());
        let mut budget = AppendBudget::new(&limits);
        budget.add(&event("123456789")).unwrap();
        assert!(matches!(
            budget.add(&event("1234567890")),
            Err(InvalidInput::EventTooLarge {
                size: 11,
                max: 10,
                ..
            })
        ));
        let mut budget = AppendBudget::new(&limits);
        budget.add(&event("12345678")).unwrap();
        budget.add(&event("12345678")).unwrap();
        assert_eq!(
            budget.add(&event("12345678")),
            Err(InvalidInput::AppendTooLarge { size: 27, max: 20 })
        );
        let mut budget = AppendBudget::new(&limits);
        for _ in 0..3 {
            budget.add(&event("")).unwrap();
        }
        assert_eq!(
            budget.add(&event("")),
            Err(InvalidInput::TooManyEvents { count: 4, max: 3 })
        );
        assert_eq!((budget.events(), budget.bytes()), (4, 3));
    }
}
