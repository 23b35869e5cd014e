//! Limits on what a writer may send. Each has a typed error when exceeded.

/// Bounds on appends and names; exceeded bounds fail with
/// [`InvalidInput`](crate::error::InvalidInput) and write nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest event (type + data + metadata), in bytes.
    pub event_size_bytes_max: usize,
    /// Most events in one append (all streams of a multi-stream append together).
    pub append_events_max: usize,
    /// Largest append (all its events together), in bytes.
    pub append_size_bytes_max: usize,
    /// Longest stream name, in bytes.
    pub stream_name_bytes_max: usize,
    /// Longest event type name, in bytes.
    pub event_type_bytes_max: usize,
    /// Most streams in one multi-stream append.
    pub append_streams_max: usize,
}

impl Limits {
    /// Default largest event: 16 MiB.
    pub const EVENT_SIZE_BYTES_MAX: usize = 16 << 20;
    /// Default largest append: 64 MiB.
    pub const APPEND_SIZE_BYTES_MAX: usize = 64 << 20;
    /// Default most events per append.
    pub const APPEND_EVENTS_MAX: usize = 20_000;
    /// Default longest stream name.
    pub const STREAM_NAME_BYTES_MAX: usize = 1024;
    /// Default longest event type.
    pub const EVENT_TYPE_BYTES_MAX: usize = 1024;
    /// Default most streams per multi-stream append.
    pub const APPEND_STREAMS_MAX: usize = 1000;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            event_size_bytes_max: Limits::EVENT_SIZE_BYTES_MAX,
            append_events_max: Limits::APPEND_EVENTS_MAX,
            append_size_bytes_max: Limits::APPEND_SIZE_BYTES_MAX,
            stream_name_bytes_max: Limits::STREAM_NAME_BYTES_MAX,
            event_type_bytes_max: Limits::EVENT_TYPE_BYTES_MAX,
            append_streams_max: Limits::APPEND_STREAMS_MAX,
        }
    }
}
