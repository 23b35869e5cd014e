//! Filters for reads and subscriptions of the global log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::event::RecordedEvent;
use crate::stream;

/// Selects events of the global log by stream and event type.
///
/// An event passes when it passes every kind of condition that is set; within one kind,
/// any listed value is enough. The empty filter passes everything.
///
/// ```
/// use strata_core::Filter;
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
///
/// Patterns come from clients, so they are bounded: at most
/// [`Pattern::SOURCE_BYTES_MAX`] bytes of source, at most
/// [`Pattern::COMPILED_BYTES_MAX`] bytes compiled, and at most
/// [`Pattern::BACKTRACK_LIMIT`] backtracking steps per name (a name that would take more
/// counts as no match, so a catastrophically backtracking pattern costs a bounded time
/// per event, and is charged [`Pattern::OVERRUN_COST`] events of a scan's budget).
/// Compiled patterns are cached by source (the most recently used
/// [`Pattern::CACHE_ENTRIES`]), so a client repeating a request does not pay to compile
/// it again.
#[derive(Clone, Debug)]
pub struct Pattern {
    source: String,
    regex: Arc<fancy_regex::Regex>,
    /// Names on which this pattern (and its clones) ran past the backtracking limit.
    overruns: Arc<AtomicU64>,
}

impl Pattern {
    /// Longest pattern source, in bytes.
    pub const SOURCE_BYTES_MAX: usize = 1024;
    /// Largest compiled pattern, roughly, in bytes (the limit of each of the automata a
    /// pattern compiles to; a pattern with lookaround may compile to a few).
    pub const COMPILED_BYTES_MAX: usize = 1 << 20;
    /// Most backtracking steps a pattern with lookaround or backreferences takes on one
    /// name. Patterns without them run in linear time.
    pub const BACKTRACK_LIMIT: usize = 20_000;
    /// Compiled patterns kept in the cache.
    pub const CACHE_ENTRIES: usize = 256;
    /// What a name on which the pattern ran past its backtracking limit costs, in events
    /// of a read's [scan budget](crate::ReadAllOptions::scan_budget): such a name takes
    /// about as long as matching this many ordinary ones, so a pathological pattern
    /// spends a read's budget in a bounded time.
    pub const OVERRUN_COST: u64 = 1000;

    /// Compiles `source`, or takes it from the cache.
    pub fn new(source: &str) -> Result<Pattern, FilterError> {
        if source.len() > Pattern::SOURCE_BYTES_MAX {
            return Err(FilterError::RegexTooLong {
                length: source.len(),
                max: Pattern::SOURCE_BYTES_MAX,
            });
        }
        if let Some(regex) = cache::get(source) {
            return Ok(Pattern {
                source: source.to_owned(),
                regex,
                overruns: Arc::default(),
            });
        }
        let regex = fancy_regex::RegexBuilder::new(source)
            .backtrack_limit(Pattern::BACKTRACK_LIMIT)
            .delegate_size_limit(Pattern::COMPILED_BYTES_MAX)
            .delegate_dfa_size_limit(Pattern::COMPILED_BYTES_MAX)
            .build()
            .map_err(|error| compile_error(source, error))?;
        let regex = Arc::new(regex);
        cache::put(source, regex.clone());
        Ok(Pattern {
            source: source.to_owned(),
            regex,
            overruns: Arc::default(),
        })
    }

    /// The pattern's source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches somewhere in `text`. A match that would exceed the
    /// backtracking limit counts as no match (and is counted, see
    /// [`Filter::backtrack_overruns`]).
    pub fn is_match(&self, text: &str) -> bool {
        match self.regex.is_match(text) {
            Ok(matched) => matched,
            Err(_) => {
                self.overruns.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

fn compile_error(source: &str, error: fancy_regex::Error) -> FilterError {
    if let fancy_regex::Error::CompileError(fancy_regex::CompileError::InnerError(inner)) = &error {
        if inner.size_limit().is_some() {
            return FilterError::RegexTooBig {
                pattern: source.to_owned(),
                max: Pattern::COMPILED_BYTES_MAX,
            };
        }
    }
    FilterError::BadRegex {
        pattern: source.to_owned(),
        reason: error.to_string(),
    }
}

/// The cache of compiled patterns: a map from source to the compiled pattern and the
/// tick of its last use; when full, the least recently used entry goes.
mod cache {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};

    use super::Pattern;

    #[derive(Default)]
    struct Cache {
        entries: HashMap<String, (Arc<fancy_regex::Regex>, u64)>,
        tick: u64,
    }

    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

    fn lock() -> std::sync::MutexGuard<'static, Cache> {
        // The cache holds no invariant a panic could break half-way.
        CACHE.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn get(source: &str) -> Option<Arc<fancy_regex::Regex>> {
        let mut cache = lock();
        cache.tick += 1;
        let tick = cache.tick;
        let (regex, used) = cache.entries.get_mut(source)?;
        *used = tick;
        Some(regex.clone())
    }

    pub(super) fn put(source: &str, regex: Arc<fancy_regex::Regex>) {
        let mut cache = lock();
        if cache.entries.len() >= Pattern::CACHE_ENTRIES && !cache.entries.contains_key(source) {
            // A linear search, over at most CACHE_ENTRIES entries, only on a miss (which
            // compiled a pattern, far costlier).
            let oldest = cache
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(source, _)| source.clone());
            if let Some(oldest) = oldest {
                cache.entries.remove(&oldest);
            }
        }
        cache.tick += 1;
        let tick = cache.tick;
        cache.entries.insert(source.to_owned(), (regex, tick));
    }

    /// Whether `source` is cached, and the number of entries (for tests).
    #[cfg(test)]
    pub(super) fn state(source: &str) -> (bool, usize) {
        let cache = lock();
        (cache.entries.contains_key(source), cache.entries.len())
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
#[non_exhaustive]
pub enum FilterError {
    /// A regular expression does not compile.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    BadRegex {
        /// The pattern as given.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },
    /// A regular expression is longer than [`Pattern::SOURCE_BYTES_MAX`].
    #[error("regular expression is {length} bytes long, the limit is {max}")]
    RegexTooLong {
        /// Its length, in bytes.
        length: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A regular expression compiles to more than [`Pattern::COMPILED_BYTES_MAX`] (large
    /// counted repetitions, of Unicode classes especially).
    #[error("regular expression {pattern:?} compiles to more than the limit of {max} bytes")]
    RegexTooBig {
        /// The pattern as given.
        pattern: String,
        /// The limit, in bytes.
        max: usize,
    },
}

impl FilterError {
    /// The pattern at fault, if the error names it in full.
    pub fn pattern(&self) -> Option<&str> {
        match self {
            FilterError::BadRegex { pattern, .. } | FilterError::RegexTooBig { pattern, .. } => {
                Some(pattern)
            }
            FilterError::RegexTooLong { .. } => None,
        }
    }
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
    /// use strata_core::Filter;
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

    /// Whether the filter has regular expressions (whose cost per name varies).
    pub fn has_regexes(&self) -> bool {
        !self.stream_regexes.is_empty() || !self.event_type_regexes.is_empty()
    }

    /// Names on which a regular expression of this filter (or of a clone of it) ran past
    /// its backtracking limit, so far. Scans charge each to their budget at
    /// [`Pattern::OVERRUN_COST`] events.
    pub fn backtrack_overruns(&self) -> u64 {
        self.stream_regexes
            .iter()
            .chain(&self.event_type_regexes)
            .map(|pattern| pattern.overruns.load(Ordering::Relaxed))
            .sum()
    }

    /// What a scan with this filter has spent of its budget after examining `examined`
    /// events, given [`backtrack_overruns`](Filter::backtrack_overruns) was
    /// `overruns_at_start` when it began: one per event, plus
    /// [`Pattern::OVERRUN_COST`] per overrun.
    pub fn scan_cost(&self, examined: u64, overruns_at_start: u64) -> u64 {
        if !self.has_regexes() {
            return examined;
        }
        let overruns = self.backtrack_overruns().saturating_sub(overruns_at_start);
        examined.saturating_add(overruns.saturating_mul(Pattern::OVERRUN_COST))
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

    #[test]
    fn patterns_are_bounded_in_length_and_compiled_size() {
        let long = "a".repeat(Pattern::SOURCE_BYTES_MAX + 1);
        assert_eq!(
            Filter::new().stream_regex(&long),
            Err(FilterError::RegexTooLong {
                length: Pattern::SOURCE_BYTES_MAX + 1,
                max: Pattern::SOURCE_BYTES_MAX
            })
        );
        assert!(Filter::new()
            .stream_regex(&"a".repeat(Pattern::SOURCE_BYTES_MAX))
            .is_ok());
        // Ten bytes that compile to megabytes of automaton (Unicode word characters).
        for big in ["\\w{100}", "\\w{50}(?=x)"] {
            assert_eq!(
                Filter::new().event_type_regex(big),
                Err(FilterError::RegexTooBig {
                    pattern: big.to_owned(),
                    max: Pattern::COMPILED_BYTES_MAX
                }),
                "{big}"
            );
        }
    }

    #[test]
    fn a_catastrophically_backtracking_pattern_counts_as_no_match() {
        // Backreferences force the backtracking engine: 2^40 ways to split the a's.
        let f = Filter::new()
            .stream_regex("^(a+)+\\1b")
            .expect("a valid pattern");
        assert!(!f.matches(&"a".repeat(40), "X"));
        assert!(f.matches("aab", "X"), "an easy name still matches");
    }

    #[test]
    fn compiled_patterns_are_cached_and_the_cache_is_bounded() {
        let source = "^cached-pattern-(?!x)";
        Pattern::new(source).expect("a valid pattern");
        assert!(cache::state(source).0, "compiled once, kept");
        let again = Pattern::new(source).expect("a valid pattern");
        assert!(again.is_match("cached-pattern-1"));
        for i in 0..Pattern::CACHE_ENTRIES + 10 {
            Pattern::new(&format!("^filler-{i}$")).expect("a valid pattern");
        }
        let (kept, entries) = cache::state(source);
        assert!(!kept, "the least recently used pattern was evicted");
        assert!(entries <= Pattern::CACHE_ENTRIES);
    }
}
