//! Fuzz targets for the HTTP API's decoders of client bytes: event bodies (JSON), metadata
//! bodies, and query strings (with the filters they build). Every input gets a value or
//! a typed error; events survive the trip out and back in. The budget comes from the
//! environment (`strata::fuzz`; `scripts/fuzz.sh` runs long passes).

#![allow(clippy::unwrap_used)]

use axum::extract::Query;
use axum::http::Uri;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};
use strata::fuzz::{ensure, mutated, mutated_text, run};
use strata::{ContentType, EventData, Position, RecordedEvent, StreamMetadata, Timestamp};
use strata_server::http::json::{parse, parse_events, EventOutput};
use strata_server::http::params::{parse_expected, Params};

/// Default cases per target in the normal test suite.
const QUICK: u64 = 512;

fn seed_bodies() -> Vec<Vec<u8>> {
    [
        json!({"type": "Placed", "data": {"total": 10}}),
        json!([
            {
                "id": "0b0e5a6c-8d8f-4a43-9b7a-0e7b6d5c4b3a",
                "type": "A",
                "data": null,
                "metadata": {"x": [1, 2.5, "z"]},
                "valid_at": "2026-01-02T03:04:05Z"
            },
            {
                "event_type": "B",
                "data_base64": "AAEC/w==",
                "content_type": "application/octet-stream",
                "metadata_base64": "AQ=="
            }
        ]),
        json!({"type": "C", "data": "text", "content_type": "json", "metadata": null}),
        json!({"type": "D", "data_base64": "e30=", "content_type": "application/json"}),
    ]
    .iter()
    .map(|body| body.to_string().into_bytes())
    .collect()
}

/// The event as it would be recorded, for the output side.
fn recorded(event: &EventData) -> RecordedEvent {
    RecordedEvent {
        stream: "s-1".into(),
        revision: 7,
        position: Position(42),
        id: event.id,
        event_type: event.event_type.clone(),
        data: event.data.clone(),
        metadata: event.metadata.clone(),
        content_type: event.content_type,
        recorded_at: Timestamp::from_micros(1_700_000_000_000_000),
        valid_at: event.valid_at,
    }
}

/// The writer's form of a reader's event: the output without what the store assigns.
fn as_input(output: &Value) -> Value {
    let mut object = output.as_object().unwrap().clone();
    for key in ["stream", "revision", "position", "recorded_at"] {
        object.remove(key);
    }
    Value::Object(object)
}

/// Bytes as they read back: JSON compared as values (whitespace is not kept), others
/// exactly; literal `null` metadata reads back as no metadata (the two share `null`).
fn same_payload(a: &[u8], b: &[u8], metadata: bool) -> bool {
    let empty_or_null = |bytes: &[u8]| {
        bytes.is_empty() || serde_json::from_slice::<Value>(bytes).ok() == Some(Value::Null)
    };
    if metadata && empty_or_null(a) && empty_or_null(b) {
        return true;
    }
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Writes `events` out as a reader gets them, reads that back as a writer's body, and
/// checks nothing changed.
fn out_and_back(events: &[EventData]) -> Result<(), TestCaseError> {
    let records: Vec<RecordedEvent> = events.iter().map(recorded).collect();
    let outputs: Vec<Value> = records
        .iter()
        .map(|r| serde_json::to_value(EventOutput::new(r)).unwrap())
        .collect();
    let body = Value::Array(outputs.iter().map(as_input).collect()).to_string();
    let back = parse_events(body.as_bytes(), usize::MAX)
        .map_err(|e| TestCaseError::fail(format!("{e:?} for {body}")))?;
    prop_assert_eq!(back.len(), events.len());
    for (before, after) in events.iter().zip(&back) {
        prop_assert_eq!(after.id, before.id);
        prop_assert_eq!(&after.event_type, &before.event_type);
        prop_assert_eq!(after.valid_at, before.valid_at);
        let json_data = before.content_type == ContentType::Json
            && serde_json::from_slice::<Value>(&before.data).is_ok();
        if json_data {
            prop_assert_eq!(after.content_type, ContentType::Json);
        }
        ensure(same_payload(&before.data, &after.data, false), || {
            format!("data {:?} came back as {:?}", before.data, after.data)
        })?;
        ensure(
            same_payload(&before.metadata, &after.metadata, true),
            || {
                format!(
                    "metadata {:?} came back as {:?}",
                    before.metadata, after.metadata
                )
            },
        )?;
    }
    Ok(())
}

/// The event limit the body target parses under.
const EVENTS_MAX: usize = 4;

#[test]
fn fuzz_http_event_bodies() {
    run(
        "http_event_bodies",
        QUICK,
        mutated(seed_bodies(), 8, 256),
        |body| {
            // A small event limit, so that bodies over it are fuzzed too.
            if let Ok(events) = parse_events(&body, EVENTS_MAX) {
                prop_assert!(events.len() <= EVENTS_MAX);
                out_and_back(&events)?;
            }
            Ok(())
        },
    );
}

/// Events of every shape a writer can send.
fn event_data() -> impl Strategy<Value = EventData> {
    let json_value = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(|s| json!(s)),
        proptest::collection::vec(".{0,4}", 0..4).prop_map(|v| json!({ "list": v })),
    ];
    let data = prop_oneof![
        json_value
            .clone()
            .prop_map(|v| (v.to_string().into_bytes(), ContentType::Json)),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|b| (b, ContentType::Binary)),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|b| (b, ContentType::Json)),
    ];
    let metadata = prop_oneof![
        Just(Vec::new()),
        json_value.prop_map(|v| v.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..16),
    ];
    (
        any::<u128>(),
        "[A-Za-z$][A-Za-z0-9 é-]{0,10}",
        data,
        metadata,
        proptest::option::of(0u64..253_402_300_799_000_000),
    )
        .prop_map(
            |(id, event_type, (data, content_type), metadata, valid_at)| {
                let mut event = EventData::new(event_type, data, content_type)
                    .with_id(uuid::Uuid::from_u128(id))
                    .with_metadata(metadata);
                event.valid_at = valid_at.map(Timestamp::from_micros);
                event
            },
        )
}

#[test]
fn fuzz_http_events_round_trip() {
    run(
        "http_events_round_trip",
        QUICK,
        proptest::collection::vec(event_data(), 1..4),
        |events| out_and_back(&events),
    );
}

#[test]
fn fuzz_http_metadata_bodies() {
    let seeds = vec![
        r#"{"$maxCount": 2, "owner": "ops"}"#.to_owned(),
        r#"{"$acl": {"$r": ["a", "b"], "$w": "c"}, "$tb": 3, "$maxAge": 60}"#.to_owned(),
        r#"{"$cacheControl": 5, "nested": {"a": [null, true, 1.5]}}"#.to_owned(),
    ];
    run(
        "http_metadata_bodies",
        QUICK,
        mutated_text(seeds, 8, 128),
        |body| {
            if let Ok(value) = parse::<Value>(body.as_bytes()) {
                if let Ok(metadata) = StreamMetadata::from_json(&value) {
                    prop_assert_eq!(StreamMetadata::from_json(&metadata.to_json()), Ok(metadata));
                }
            }
            Ok(())
        },
    );
}

fn seed_queries() -> Vec<String> {
    [
        "direction=backwards&from=3&limit=10&min_position=0",
        "stream_prefix=order-&category=cart&event_type=Placed&event_type_prefix=Ord&exclude_system=true",
        "stream_regex=%5E(%3F!%5C%24)&event_type_regex=(%3F%3C%3DOrder)Paid&stream=a-1&stream=a-2",
        "expected_revision=no_stream&tombstone=1",
        "expected_revision=18446744073709551615&prefix=a&after=b&include_system",
        "format=ndjson&from=end",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

#[test]
fn fuzz_http_query_strings() {
    run(
        "http_query_strings",
        QUICK,
        mutated_text(seed_queries(), 8, 128),
        |query| {
            let Ok(uri) = format!("/streams/s?{query}").parse::<Uri>() else {
                return Ok(());
            };
            let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(&uri) else {
                return Ok(());
            };
            // A read of $all.
            let mut params = Params::from_pairs(pairs.clone());
            let _ = (|| {
                params.take_direction()?;
                params.take_u64("from")?;
                params.take_u64("limit")?;
                params.take_u64("min_position")?;
                params.take_filter()?;
                params.finish()
            })();
            // An append, a delete.
            let mut params = Params::from_pairs(pairs.clone());
            let _ = (|| {
                params.take_expected()?;
                params.take_bool("tombstone")?;
                params.finish()
            })();
            // A stream listing.
            let mut params = Params::from_pairs(pairs.clone());
            let _ = (|| {
                params.take("prefix")?;
                params.take("after")?;
                params.take_u64("limit")?;
                params.take_bool("include_system")?;
                params.finish()
            })();
            for (_, value) in &pairs {
                let _ = parse_expected(value);
            }
            Ok(())
        },
    );
}

/// Binary payloads and base64 that decodes to bytes that look like JSON stay bytes.
#[test]
fn base64_payloads_read_back_unchanged() {
    let event = EventData::binary("B", BASE64.decode("e30=").unwrap());
    out_and_back(&[event]).unwrap();
}
