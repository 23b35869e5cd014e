//! Stream names: validation, categories and the system streams derived from a name.

use crate::error::InvalidInput;
use crate::limits::Limits;

/// The prefix of names reserved for the system (`$all`, `$$orders-1`, …).
pub const SYSTEM_PREFIX: char = '$';

/// The prefix of a metadata stream: the metadata of `orders-1` lives in `$$orders-1`.
pub const METASTREAM_PREFIX: &str = "$$";

/// The event type of a metadata event (in a `$$stream`).
pub const METADATA_EVENT_TYPE: &str = "$metadata";
/// The event type of a tombstone (in the stream it deletes).
pub const TOMBSTONE_EVENT_TYPE: &str = "$streamDeleted";

/// The system stream whose last event holds the server-wide settings: the default
/// ACLs `$userStreamAcl` and `$systemStreamAcl` (KurrentDB's `$settings`). It is the
/// one `$`-stream clients may append to (the server lets only `$admins` do so).
pub const SETTINGS_STREAM: &str = "$settings";
/// The event type of a settings event (KurrentDB's).
pub const SETTINGS_EVENT_TYPE: &str = "$settings";

/// The name that stands for the global log in reads and subscriptions.
pub const ALL_STREAM: &str = "$all";

/// The category of a stream: the part of its name before the first `-`
/// (the whole name if there is none).
///
/// ```
/// assert_eq!(strata_core::stream::category("order-42"), "order");
/// assert_eq!(strata_core::stream::category("order-42-x"), "order");
/// assert_eq!(strata_core::stream::category("inbox"), "inbox");
/// ```
pub fn category(stream: &str) -> &str {
    stream
        .split_once('-')
        .map_or(stream, |(category, _)| category)
}

/// The metadata stream of `stream`.
pub fn metastream(stream: &str) -> String {
    format!("{METASTREAM_PREFIX}{stream}")
}

/// The stream a metadata stream describes, if `name` is one.
pub fn metastream_target(name: &str) -> Option<&str> {
    name.strip_prefix(METASTREAM_PREFIX)
}

/// Whether `name` is reserved for the system.
pub fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

/// Checks a stream name a user may read: non-empty, bounded, no NUL byte.
pub fn validate_name(name: &str, limits: &Limits) -> Result<(), InvalidInput> {
    if name.is_empty() {
        return Err(InvalidInput::EmptyStreamName);
    }
    if name.len() > limits.stream_name_bytes_max {
        return Err(InvalidInput::StreamNameTooLong {
            length: name.len(),
            max: limits.stream_name_bytes_max,
        });
    }
    if name.contains('\0') {
        return Err(InvalidInput::InvalidStreamName {
            name: name.to_owned(),
            reason: "contains a NUL character",
        });
    }
    Ok(())
}

/// Checks a stream name a user may write to: a valid name that is not reserved
/// (`$settings` excepted).
pub fn validate_writable(name: &str, limits: &Limits) -> Result<(), InvalidInput> {
    validate_name(name, limits)?;
    if is_system(name) && name != SETTINGS_STREAM {
        return Err(InvalidInput::ReservedStreamName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let limits = Limits::default();
        assert_eq!(
            validate_writable("", &limits),
            Err(InvalidInput::EmptyStreamName)
        );
        assert!(matches!(
            validate_writable("$x", &limits),
            Err(InvalidInput::ReservedStreamName { .. })
        ));
        assert!(validate_name("$$x", &limits).is_ok());
        let long = "x".repeat(limits.stream_name_bytes_max + 1);
        assert!(matches!(
            validate_writable(&long, &limits),
            Err(InvalidInput::StreamNameTooLong { .. })
        ));
        assert!(matches!(
            validate_writable("a\0b", &limits),
            Err(InvalidInput::InvalidStreamName { .. })
        ));
        assert_eq!(metastream_target(&metastream("a-1")), Some("a-1"));
    }
}
