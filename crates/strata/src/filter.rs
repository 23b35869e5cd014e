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
    stream_regexes: Vec<Pattern>,
    categories: Vec<String>,
    event_types: Vec<String>,
    event_type_prefixes: Vec<String>,
    event_type_regexes: Vec<Pattern>,
    exclude_system: bool,
}

/// A regular expression in a [`Filter`], compared by its source text.
///
/// The syntax is .NET's as KurrentDB clients use it, lookahead and lookbehind included
/// (`^(?!\$)` excludes system streams); matching is a search anywhere in the name, as
/// .NET's `Regex.IsMatch` does (anchor with `^…$` to match whole names).
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: fancy_regex::Regex,
}

impl Pattern {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Pattern, FilterError> {
        let regex = fancy_regex::RegexBuilder::new(source)
            // Bounds the work a pathological pattern can make one name cost.
            .backtrack_limit(1_000_000)
            .build()
            .map_err(|error| FilterError::BadRegex {
                pattern: source.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    /// The pattern's source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `text`. A match that would exceed the
    /// backtracking limit counts as no match.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text).unwrap_or(false)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

/// A filter that cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A regular expression does not compile.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    BadRegex {
        /// The pattern as given.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },
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

    /// Also pass streams whose name matches the regular expression `pattern` (see
    /// [`Pattern`] for the syntax).
    ///
    /// ```
    /// use strata::Filter;
    /// let filter = Filter::new().stream_regex("^(?!\\$)").unwrap();
    /// assert!(filter.matches("order-1", "Placed"));
    /// assert!(!filter.matches("$$order-1", "$metadata"));
    /// ```
    pub fn stream_regex(mut self, pattern: &str) -> Result<Filter, FilterError> {
        self.stream_regexes.push(Pattern::new(pattern)?);
        Ok(self)
    }

    /// Also pass events whose type matches the regular expression `pattern` (see
    /// [`Pattern`]).
    pub fn event_type_regex(mut self, pattern: &str) -> Result<Filter, FilterError> {
        self.event_type_regexes.push(Pattern::new(pattern)?);
        Ok(self)
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
            && self.stream_regexes.is_empty()
            && self.categories.is_empty())
            || self.streams.iter().any(|s| s == stream_name)
            || self
                .stream_prefixes
                .iter()
                .any(|p| stream_name.starts_with(p.as_str()))
            || self.stream_regexes.iter().any(|r| r.is_match(stream_name))
            || self
                .categories
                .iter()
                .any(|c| stream::category(stream_name) == c);
        let type_ok = (self.event_types.is_empty()
            && self.event_type_prefixes.is_empty()
            && self.event_type_regexes.is_empty())
            || self.event_types.iter().any(|t| t == event_type)
            || self
                .event_type_prefixes
                .iter()
                .any(|p| event_type.starts_with(p.as_str()))
            || self
                .event_type_regexes
                .iter()
                .any(|r| r.is_match(event_type));
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

    #[test]
    fn regexes_search_with_lookaround_like_dotnet() {
        // The exclude filter KurrentDB clients build: ^(?!(a$|b$)).
        let f = Filter::new()
            .stream_regex("^(?!(\\$.*$|snapshot-.*$))")
            .expect("a valid pattern");
        assert!(f.matches("order-1", "X"));
        assert!(!f.matches("$$order-1", "X"));
        assert!(!f.matches("snapshot-7", "X"));
        let f = Filter::new()
            .event_type_regex("Placed")
            .expect("a valid pattern");
        assert!(f.matches("a", "OrderPlaced"), "a search, not a whole match");
        assert!(!f.matches("a", "OrderShipped"));
        let f = Filter::new()
            .event_type_regex("(?<=Order)Paid")
            .expect("a valid pattern");
        assert!(f.matches("a", "OrderPaid"));
        assert!(!f.matches("a", "InvoicePaid"));
        assert!(matches!(
            Filter::new().stream_regex("("),
            Err(FilterError::BadRegex { .. })
        ));
    }
}
