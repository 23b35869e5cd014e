//! Requests of the KurrentDB protocol built from strata's types, for Rust programs that
//! talk to a strata (or KurrentDB) server with the generated client — the benchmark and
//! the tests do.
//!
//! ```
//! use strata::{EventData, ExpectedRevision, SubscribeFrom};
//! use strata_server::grpc::requests;
//! let event = EventData::json("Placed", &serde_json::json!({ "total": 10 })).unwrap();
//! let append = requests::append("order-1", ExpectedRevision::NoStream, &[event]);
//! assert_eq!(append.len(), 2); // the options, then one proposed message
//! let subscribe = requests::subscribe_all(SubscribeFrom::Start);
//! assert!(subscribe.options.is_some());
//! ```

use std::collections::HashMap;

use strata::{EventData, ExpectedRevision, Position, SubscribeFrom};

use crate::grpc::convert;
use crate::proto::event_store::client::streams::append_req::options::ExpectedStreamRevision;
use crate::proto::event_store::client::streams::read_req::options::{
    all_options::AllOption, stream_options::RevisionOption, AllOptions, CountOption, FilterOption,
    ReadDirection, StreamOption, StreamOptions, SubscriptionOptions,
};
use crate::proto::event_store::client::streams::read_req::{self, Options};
use crate::proto::event_store::client::streams::{append_req, AppendReq, ReadReq};
use crate::proto::event_store::client::Empty;

/// The messages of one `Streams.Append` call: the options, then each event.
pub fn append(stream: &str, expected: ExpectedRevision, events: &[EventData]) -> Vec<AppendReq> {
    let expected = match expected {
        ExpectedRevision::Any => ExpectedStreamRevision::Any(Empty {}),
        ExpectedRevision::NoStream => ExpectedStreamRevision::NoStream(Empty {}),
        ExpectedRevision::StreamExists => ExpectedStreamRevision::StreamExists(Empty {}),
        ExpectedRevision::Exact(revision) => ExpectedStreamRevision::Revision(revision),
    };
    let mut messages = Vec::with_capacity(events.len() + 1);
    messages.push(AppendReq {
        content: Some(append_req::Content::Options(append_req::Options {
            stream_identifier: Some(convert::stream_identifier(stream)),
            expected_stream_revision: Some(expected),
        })),
    });
    for event in events {
        messages.push(AppendReq {
            content: Some(append_req::Content::ProposedMessage(
                append_req::ProposedMessage {
                    id: Some(convert::uuid_string(event.id)),
                    metadata: HashMap::from([
                        ("type".to_owned(), event.event_type.clone()),
                        (
                            "content-type".to_owned(),
                            event.content_type.mime().to_owned(),
                        ),
                    ]),
                    custom_metadata: event.metadata.to_vec(),
                    data: event.data.to_vec(),
                },
            )),
        });
    }
    messages
}

/// A `Streams.Read` that subscribes to `$all` (unfiltered), from the start, after a
/// strata position, or from the end.
pub fn subscribe_all(from: SubscribeFrom<Position>) -> ReadReq {
    let all_option = match from {
        SubscribeFrom::Start => AllOption::Start(Empty {}),
        SubscribeFrom::End => AllOption::End(Empty {}),
        SubscribeFrom::After(position) => {
            let commit = convert::commit_position(position);
            AllOption::Position(read_req::options::Position {
                commit_position: commit,
                prepare_position: commit,
            })
        }
    };
    ReadReq {
        options: Some(Options {
            stream_option: Some(StreamOption::All(AllOptions {
                all_option: Some(all_option),
            })),
            read_direction: ReadDirection::Forwards as i32,
            resolve_links: false,
            count_option: Some(CountOption::Subscription(SubscriptionOptions {})),
            filter_option: Some(FilterOption::NoFilter(Empty {})),
            uuid_option: None,
            control_option: None,
        }),
    }
}

/// A `Streams.Read` that subscribes to one stream, from its start, after a revision, or
/// from the end.
pub fn subscribe_stream(stream: &str, from: SubscribeFrom<u64>) -> ReadReq {
    let revision_option = match from {
        SubscribeFrom::Start => RevisionOption::Start(Empty {}),
        SubscribeFrom::End => RevisionOption::End(Empty {}),
        SubscribeFrom::After(revision) => RevisionOption::Revision(revision),
    };
    ReadReq {
        options: Some(Options {
            stream_option: Some(StreamOption::Stream(StreamOptions {
                stream_identifier: Some(convert::stream_identifier(stream)),
                revision_option: Some(revision_option),
            })),
            read_direction: ReadDirection::Forwards as i32,
            resolve_links: false,
            count_option: Some(CountOption::Subscription(SubscriptionOptions {})),
            filter_option: Some(FilterOption::NoFilter(Empty {})),
            uuid_option: None,
            control_option: None,
        }),
    }
}
