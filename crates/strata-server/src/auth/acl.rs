//! Stream access control lists, as KurrentDB reads them: `$acl` in a stream's metadata,
//! then `$userStreamAcl` or `$systemStreamAcl` from the last event of `$settings`, then
//! the built-in defaults (every authenticated user for user streams, `$admins` for
//! `$`-streams). Each key falls back on its own: an `$acl` with only `$w` takes its
//! readers from the settings.

use serde_json::Value;

use super::principal::{ADMINS, EVERYONE};

/// What a request does to a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamAction {
    /// Read or subscribe (`$r`).
    Read,
    /// Append (`$w`).
    Write,
    /// Delete or tombstone (`$d`).
    Delete,
    /// Read the metadata (`$mr`).
    MetadataRead,
    /// Write the metadata (`$mw`).
    MetadataWrite,
}

impl StreamAction {
    /// The ACL key of the action.
    pub fn key(self) -> &'static str {
        match self {
            StreamAction::Read => "$r",
            StreamAction::Write => "$w",
            StreamAction::Delete => "$d",
            StreamAction::MetadataRead => "$mr",
            StreamAction::MetadataWrite => "$mw",
        }
    }

    /// A short name for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            StreamAction::Read => "read",
            StreamAction::Write => "write",
            StreamAction::Delete => "delete",
            StreamAction::MetadataRead => "metadata read",
            StreamAction::MetadataWrite => "metadata write",
        }
    }
}

/// An ACL: for each action, the roles allowed (`None`: not set here, ask the next level).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamAcl {
    read: Option<Vec<String>>,
    write: Option<Vec<String>>,
    delete: Option<Vec<String>>,
    metadata_read: Option<Vec<String>>,
    metadata_write: Option<Vec<String>>,
}

impl StreamAcl {
    /// The same roles for every action.
    pub fn uniform(role: &str) -> StreamAcl {
        let roles = || Some(vec![role.to_owned()]);
        StreamAcl {
            read: roles(),
            write: roles(),
            delete: roles(),
            metadata_read: roles(),
            metadata_write: roles(),
        }
    }

    /// The ACL of a JSON object with KurrentDB's keys, each a role or a list of roles.
    /// Values of another shape leave the key unset, as KurrentDB's reader skips them.
    pub fn from_json(value: &Value) -> StreamAcl {
        let roles = |key: &str| -> Option<Vec<String>> {
            match value.get(key)? {
                Value::String(role) => Some(vec![role.clone()]),
                Value::Array(roles) => Some(
                    roles
                        .iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect(),
                ),
                _ => None,
            }
        };
        StreamAcl {
            read: roles("$r"),
            write: roles("$w"),
            delete: roles("$d"),
            metadata_read: roles("$mr"),
            metadata_write: roles("$mw"),
        }
    }

    /// The roles this ACL sets for `action`, if it sets them.
    pub fn roles(&self, action: StreamAction) -> Option<&[String]> {
        match action {
            StreamAction::Read => self.read.as_deref(),
            StreamAction::Write => self.write.as_deref(),
            StreamAction::Delete => self.delete.as_deref(),
            StreamAction::MetadataRead => self.metadata_read.as_deref(),
            StreamAction::MetadataWrite => self.metadata_write.as_deref(),
        }
    }
}

/// The server-wide defaults, from the `$settings` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemSettings {
    /// The ACL of streams whose name does not start with `$`.
    pub user_streams: StreamAcl,
    /// The ACL of `$`-streams (and of `$all`).
    pub system_streams: StreamAcl,
}

impl Default for SystemSettings {
    /// KurrentDB's defaults: user streams open to every authenticated user, system
    /// streams to `$admins` only.
    fn default() -> Self {
        SystemSettings {
            user_streams: StreamAcl::uniform(EVERYONE),
            system_streams: StreamAcl::uniform(ADMINS),
        }
    }
}

impl SystemSettings {
    /// The settings of a `$settings` event's JSON (`$userStreamAcl`,
    /// `$systemStreamAcl`); a key that is missing leaves that level unset, so the
    /// built-in default applies to it.
    pub fn from_json(value: &Value) -> (Option<StreamAcl>, Option<StreamAcl>) {
        (
            value.get("$userStreamAcl").map(StreamAcl::from_json),
            value.get("$systemStreamAcl").map(StreamAcl::from_json),
        )
    }
}

/// The roles that may do `action` on a stream: the stream's own ACL, else the
/// settings', else the default's.
pub fn effective_roles<'a>(
    action: StreamAction,
    stream: Option<&'a StreamAcl>,
    settings: Option<&'a StreamAcl>,
    default: &'a StreamAcl,
) -> &'a [String] {
    stream
        .and_then(|acl| acl.roles(action))
        .or_else(|| settings.and_then(|acl| acl.roles(action)))
        .or_else(|| default.roles(action))
        .unwrap_or(&[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_kurrentdb_acl_shapes() {
        let acl = StreamAcl::from_json(&json!({
            "$r": "alice", "$w": ["bob", "$ops"], "$d": [], "$mr": 7
        }));
        assert_eq!(
            acl.roles(StreamAction::Read),
            Some(&["alice".to_owned()][..])
        );
        assert_eq!(acl.roles(StreamAction::Write).unwrap(), ["bob", "$ops"]);
        assert_eq!(acl.roles(StreamAction::Delete).unwrap().len(), 0);
        assert_eq!(acl.roles(StreamAction::MetadataRead), None);
        assert_eq!(acl.roles(StreamAction::MetadataWrite), None);
    }

    #[test]
    fn each_key_falls_back_on_its_own() {
        let stream = StreamAcl::from_json(&json!({ "$w": "alice" }));
        let settings = StreamAcl::from_json(&json!({ "$r": "readers" }));
        let default = StreamAcl::uniform(EVERYONE);
        let roles = |action| effective_roles(action, Some(&stream), Some(&settings), &default);
        assert_eq!(roles(StreamAction::Write), ["alice"]);
        assert_eq!(roles(StreamAction::Read), ["readers"]);
        assert_eq!(roles(StreamAction::Delete), ["$all"]);
        // An empty list is set: nobody but admins.
        let closed = StreamAcl::from_json(&json!({ "$r": [] }));
        assert!(effective_roles(StreamAction::Read, Some(&closed), None, &default).is_empty());
    }
}
