//! Prometheus metrics: what `GET /metrics` reports.
//!
//! Handlers of both APIs record into one [`Metrics`]; the `api` label tells them apart.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Which API a request came through.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Api {
    /// The KurrentDB-compatible gRPC API.
    Grpc,
    /// The HTTP/JSON API.
    Http,
}

/// How an append ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// Recorded (or an exact retry of a recorded append).
    Ok,
    /// Wrong expected revision.
    Conflict,
    /// Rejected input (too large, bad names, deleted stream, …).
    Rejected,
    /// The store failed.
    Error,
}

/// Labels of append counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppendLabels {
    /// Which API.
    pub api: Api,
    /// How it ended.
    pub outcome: Outcome,
}

/// Labels of per-API metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// Which API.
    pub api: Api,
}

/// Labels of failed authentications.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// Which API.
    pub api: Api,
    /// Why (`wrong_password`, `unknown_user`, `expired_token`, …).
    pub reason: &'static str,
}

/// Labels of refused requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccessDeniedLabels {
    /// Which API.
    pub api: Api,
    /// What was refused (`read`, `write`, `manage users`, …).
    pub operation: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~26 s in ×2 steps: group commit latencies sit in the low milliseconds.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Append requests, by API and outcome.
    pub appends: Family<AppendLabels, Counter>,
    /// Events recorded by appends, by API.
    pub events_appended: Family<ApiLabels, Counter>,
    /// Append latency in seconds, by API.
    pub append_latency: Family<ApiLabels, Histogram, fn() -> Histogram>,
    /// Events sent to readers and subscribers, by API.
    pub events_read: Family<ApiLabels, Counter>,
    /// Subscriptions (catch-up, live, persistent) currently open, by API.
    pub subscriptions_open: Family<ApiLabels, Gauge>,
    /// Largest distance, in positions, between the log's head and what an open
    /// subscription has delivered (sampled as subscriptions deliver).
    pub subscription_lag: Gauge<i64, AtomicI64>,
    /// Bytes the store uses on disk (sampled when `/metrics` is scraped).
    pub disk_bytes: Gauge<i64, AtomicI64>,
    /// Position of the log's last event, -1 when empty (sampled at scrape).
    pub head_position: Gauge<i64, AtomicI64>,
    /// Client connections open, both APIs (sampled at scrape).
    pub connections_open: Gauge<i64, AtomicI64>,
    /// Connections refused for being over a connection limit (sampled at scrape).
    pub connections_refused: Gauge<i64, AtomicI64>,
    /// Bytes of sealed segments the embedded store's scrubber verified (sampled at
    /// scrape; stays 0 when the scrubber is off or the backend has none).
    pub scrub_bytes: Counter<u64, AtomicU64>,
    /// Full scrub passes over the sealed segments (sampled at scrape).
    pub scrub_passes: Counter<u64, AtomicU64>,
    /// Distinct damage the scrubber found (sampled at scrape): anything above 0 wants
    /// an operator.
    pub scrub_damage: Counter<u64, AtomicU64>,
    /// Bytes of segment table blocks the scrubber verified (sampled at scrape).
    pub scrub_table_bytes: Counter<u64, AtomicU64>,
    /// Damaged segment tables the scrubber rebuilt (sampled at scrape).
    pub scrub_tables_repaired: Counter<u64, AtomicU64>,
    /// Failed authentications, by API and reason.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// Requests refused by authorization, by API and operation.
    pub access_denied: Family<AccessDeniedLabels, Counter>,
}

impl Metrics {
    /// Fresh metrics, registered under the `strata_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let appends = Family::<AppendLabels, Counter>::default();
        let events_appended = Family::<ApiLabels, Counter>::default();
        let append_latency =
            Family::<ApiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let events_read = Family::<ApiLabels, Counter>::default();
        let subscriptions_open = Family::<ApiLabels, Gauge>::default();
        let subscription_lag = Gauge::<i64, AtomicI64>::default();
        let disk_bytes = Gauge::<i64, AtomicI64>::default();
        let head_position = Gauge::<i64, AtomicI64>::default();
        let connections_open = Gauge::<i64, AtomicI64>::default();
        let connections_refused = Gauge::<i64, AtomicI64>::default();
        let scrub_bytes = Counter::<u64, AtomicU64>::default();
        let scrub_passes = Counter::<u64, AtomicU64>::default();
        let scrub_damage = Counter::<u64, AtomicU64>::default();
        let scrub_table_bytes = Counter::<u64, AtomicU64>::default();
        let scrub_tables_repaired = Counter::<u64, AtomicU64>::default();
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        let access_denied = Family::<AccessDeniedLabels, Counter>::default();
        registry.register("appends", "Append requests", appends.clone());
        registry.register(
            "auth_failures",
            "Requests whose credentials were refused",
            auth_failures.clone(),
        );
        registry.register(
            "access_denied",
            "Requests refused by stream ACLs or roles",
            access_denied.clone(),
        );
        registry.register(
            "events_appended",
            "Events recorded by appends",
            events_appended.clone(),
        );
        registry.register(
            "append_latency_seconds",
            "Append latency",
            append_latency.clone(),
        );
        registry.register(
            "events_read",
            "Events sent to readers and subscribers",
            events_read.clone(),
        );
        registry.register(
            "subscriptions_open",
            "Subscriptions currently open",
            subscriptions_open.clone(),
        );
        registry.register(
            "subscription_lag_positions",
            "Positions between the head and the furthest-behind subscription",
            subscription_lag.clone(),
        );
        registry.register(
            "disk_bytes",
            "Bytes the store uses on disk",
            disk_bytes.clone(),
        );
        registry.register(
            "head_position",
            "Position of the last event in the log (-1 when empty)",
            head_position.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open (gRPC and HTTP)",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused for being over a connection limit, since start",
            connections_refused.clone(),
        );
        registry.register(
            "scrub_bytes",
            "Bytes of sealed segments the background scrubber verified",
            scrub_bytes.clone(),
        );
        registry.register(
            "scrub_passes",
            "Full passes of the background scrubber over the sealed segments",
            scrub_passes.clone(),
        );
        registry.register(
            "scrub_damage",
            "Distinct damage the background scrubber found in sealed segments",
            scrub_damage.clone(),
        );
        registry.register(
            "scrub_table_bytes",
            "Bytes of segment table blocks the background scrubber verified",
            scrub_table_bytes.clone(),
        );
        registry.register(
            "scrub_tables_repaired",
            "Damaged segment tables the background scrubber rebuilt from their segments",
            scrub_tables_repaired.clone(),
        );
        Metrics {
            registry,
            appends,
            events_appended,
            append_latency,
            events_read,
            subscriptions_open,
            subscription_lag,
            disk_bytes,
            head_position,
            connections_open,
            connections_refused,
            scrub_bytes,
            scrub_passes,
            scrub_damage,
            scrub_table_bytes,
            scrub_tables_repaired,
            auth_failures,
            access_denied,
        }
    }

    /// Brings the scrub counters up to the store's own counts (which only grow while
    /// the store is open): concurrent scrapes may sample in any order, and a counter
    /// never moves back.
    pub fn sample_scrub(&self, status: &strata::ScrubStatus) {
        for (counter, value) in [
            (&self.scrub_bytes, status.bytes_verified),
            (&self.scrub_passes, status.passes),
            (&self.scrub_damage, status.damage_found),
            (&self.scrub_table_bytes, status.table_bytes_verified),
            (&self.scrub_tables_repaired, status.tables_repaired),
        ] {
            counter.inner().fetch_max(value, Ordering::Relaxed);
        }
    }

    /// Records one append request.
    pub fn record_append(&self, api: Api, outcome: Outcome, events: usize, took: Duration) {
        self.appends
            .get_or_create(&AppendLabels { api, outcome })
            .inc();
        if outcome == Outcome::Ok {
            self.events_appended
                .get_or_create(&ApiLabels { api })
                .inc_by(events as u64);
        }
        self.append_latency
            .get_or_create(&ApiLabels { api })
            .observe(took.as_secs_f64());
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}
