//! Command context: who asked, why, and which request this belongs to. Every event a
//! command produces carries it in its metadata.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::codec::metadata_object;
use crate::event::{RecordedEvent, Timestamp};

/// Metadata field names written on every event a command produces.
pub mod fields {
    /// The id shared by everything one request caused.
    pub const CORRELATION_ID: &str = "correlation_id";
    /// The id of the command or event that directly caused this event.
    pub const CAUSATION_ID: &str = "causation_id";
    /// Who asked.
    pub const ACTOR: &str = "actor";
    /// The command's id, if the caller gave one.
    pub const COMMAND_ID: &str = "command_id";
}

/// The context of one command.
///
/// ```
/// use strata::model::CommandContext;
/// let context = CommandContext::new().with_actor("alice").with_field("tenant", "acme");
/// let metadata = context.metadata();
/// assert_eq!(metadata["actor"], "alice");
/// assert_eq!(metadata["tenant"], "acme");
/// assert!(metadata.contains_key("correlation_id"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CommandContext {
    /// Makes the command idempotent: a retry with the same id is a no-op that returns the
    /// first result.
    pub command_id: Option<Uuid>,
    /// Shared by everything one request caused.
    pub correlation_id: Uuid,
    /// What directly caused this command (an event, for process managers).
    pub causation_id: Option<Uuid>,
    /// Who asked.
    pub actor: Option<String>,
    /// Any other fields, copied into every event's metadata.
    pub fields: Map<String, Value>,
    /// The business time the resulting events refer to.
    pub valid_at: Option<Timestamp>,
}

impl Default for CommandContext {
    fn default() -> Self {
        CommandContext::new()
    }
}

impl CommandContext {
    /// A context with a fresh correlation id.
    pub fn new() -> CommandContext {
        CommandContext {
            command_id: None,
            correlation_id: Uuid::new_v4(),
            causation_id: None,
            actor: None,
            fields: Map::new(),
            valid_at: None,
        }
    }

    /// The context of a command caused by handling `event`: same correlation id as the
    /// event (or the event's id if it has none), and the event as causation.
    pub fn caused_by(event: &RecordedEvent) -> CommandContext {
        let metadata = metadata_object(event);
        let correlation_id = metadata
            .get(fields::CORRELATION_ID)
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .unwrap_or(event.id);
        CommandContext {
            correlation_id,
            causation_id: Some(event.id),
            ..CommandContext::new()
        }
    }

    /// Sets the command id (idempotent commands).
    pub fn with_command_id(mut self, id: Uuid) -> CommandContext {
        self.command_id = Some(id);
        self
    }

    /// Sets who asked.
    pub fn with_actor(mut self, actor: impl Into<String>) -> CommandContext {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a field to every event's metadata.
    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> CommandContext {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// Sets the business time of the resulting events.
    pub fn with_valid_at(mut self, valid_at: Timestamp) -> CommandContext {
        self.valid_at = Some(valid_at);
        self
    }

    /// The metadata object every event of the command gets.
    pub fn metadata(&self) -> Map<String, Value> {
        let mut metadata = self.fields.clone();
        metadata.insert(
            fields::CORRELATION_ID.into(),
            self.correlation_id.to_string().into(),
        );
        let causation = self.causation_id.or(self.command_id);
        if let Some(causation) = causation {
            metadata.insert(fields::CAUSATION_ID.into(), causation.to_string().into());
        }
        if let Some(actor) = &self.actor {
            metadata.insert(fields::ACTOR.into(), actor.clone().into());
        }
        if let Some(command_id) = self.command_id {
            metadata.insert(fields::COMMAND_ID.into(), command_id.to_string().into());
        }
        metadata
    }
}
