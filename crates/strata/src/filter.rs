//! Filters for reads and subscriptions of the global log.

use crate::event::RecordedEvent;
use crate::stream;

/// Selects events of the global log by stream and event type.
///
/// An event passes when it passes every kind of condition that is set; within one kind,
/// any listed value is enough. The empty filter passes everything.
///
/// ```
/// use strata::Filter;
/// let filter = Filter::new().category("order").event_type("OrderPlaced");
/// assert!(filter.matches("order-1", "OrderPlaced"));
/// assert!(!filter.matches("order-1", "OrderShipped"));
/// assert!(!filter.matches("invoice-1", "OrderPlaced"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    streams: Vec<String>,
    stream_prefixes: Vec<String>,
    categories: Vec<String>,
    event_types: Vec<String>,
    event_type_prefixes: Vec<String>,
    exclude_system: bool,
}

impl Filter {
    /// The filter that passes every event.
    pub fn new() -> Filter {
        Filter::default()
    }

    /// Also pass the stream named exactly `name`.
    pub fn stream(mut self, name: impl Into<String>) -> Filter {
        self.streams.push(name.into());
        self
    }

    /// Also pass streams whose name starts with `prefix`.
    pub fn stream_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.stream_prefixes.push(prefix.into());
        self
    }

    /// Also pass streams of this category (`order` for `order-42`).
    pub fn category(mut self, category: impl Into<String>) -> Filter {
        self.categories.push(category.into());
        self
    }

    /// Also pass events of exactly this type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Filter {
        self.event_types.push(event_type.into());
        self
    }

    /// Also pass events whose type starts with `prefix`.
    pub fn event_type_prefix(mut self, prefix: impl Into<String>) -> Filter {
        self.event_type_prefixes.push(prefix.into());
        self
    }

    /// Leave out events of system streams and system event types (names starting with `$`).
    pub fn exclude_system_events(mut self) -> Filter {
        self.exclude_system = true;
        self
    }

    /// Whether the filter passes everything.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether an event of `event_type` in `stream` passes.
    pub fn matches(&self, stream_name: &str, event_type: &str) -> bool {
        if self.exclude_system && (stream::is_system(stream_name) || event_type.starts_with('$')) {
            return false;
        }
        let stream_ok = (self.streams.is_empty()
            && self.stream_prefixes.is_empty()
            && self.categories.is_empty())
            || self.streams.iter().any(|s| s == stream_name)
            || self
                .stream_prefixes
                .iter()
                .any(|p| stream_name.starts_with(p.as_str()))
            || self
                .categories
                .iter()
                .any(|c| stream::category(stream_name) == c);
        let type_ok = (self.event_types.is_empty() && self.event_type_prefixes.is_empty())
            || self.event_types.iter().any(|t| t == event_type)
            || self
                .event_type_prefixes
                .iter()
                .any(|p| event_type.starts_with(p.as_str()));
        stream_ok && type_ok
    }

    /// Whether `event` passes.
    pub fn matches_event(&self, event: &RecordedEvent) -> bool {
        self.matches(&event.stream, &event.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_combine_with_and_values_with_or() {
        let f = Filter::new().stream_prefix("ord").category("cart");
        assert!(f.matches("order-1", "X"));
        assert!(f.matches("cart-9", "X"));
        assert!(!f.matches("invoice-1", "X"));
        let f = Filter::new().stream("a-1");
        assert!(f.matches("a-1", "X"));
        assert!(!f.matches("a-10", "X"));
        let f = Filter::new().event_type_prefix("Order").event_type("Paid");
        assert!(f.matches("a", "OrderPlaced"));
        assert!(f.matches("a", "Paid"));
        assert!(!f.matches("a", "Shipped"));
        let f = Filter::new().exclude_system_events();
        assert!(!f.matches("$$a", "$metadata"));
        assert!(!f.matches("a", "$streamDeleted"));
        assert!(f.matches("a", "b"));
        assert!(Filter::new().is_empty());
    }
}
