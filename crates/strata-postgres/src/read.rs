//! Reads: one stream (honouring its metadata) and the global log (below the safe bound).

use std::time::Duration;

use bytes::Bytes;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use strata::{
    ContentType, Direction, PageEnd, Position, ReadAllOptions, ReadAllPage, ReadError,
    ReadStreamOptions, RecordedEvent, StreamMetadata, Timestamp,
};

use crate::error;
use crate::head::SAFE_BOUND_SQL;

const COLUMNS: &str =
    "position, stream, revision, id, event_type, is_binary, data, metadata, recorded_at, valid_at";

/// Rows read per query while filtering the global log.
const PAGE_ROWS: i64 = 1000;

fn event(row: &Row) -> RecordedEvent {
    let data: Vec<u8> = row.get(6);
    let metadata: Vec<u8> = row.get(7);
    let valid_at: Option<i64> = row.get(9);
    RecordedEvent {
        position: Position(row.get::<_, i64>(0) as u64),
        stream: row.get(1),
        revision: row.get::<_, i64>(2) as u64,
        id: row.get(3),
        event_type: row.get(4),
        content_type: if row.get::<_, bool>(5) {
            ContentType::Binary
        } else {
            ContentType::Json
        },
        data: Bytes::from(data),
        metadata: Bytes::from(metadata),
        recorded_at: Timestamp::from_micros(row.get::<_, i64>(8) as u64),
        valid_at: valid_at.map(|v| Timestamp::from_micros(v as u64)),
    }
}

/// Reads one stream, in `client` (a read transaction whose statements are cancelled
/// after `timeout`).
pub async fn stream(
    client: &Transaction<'_>,
    timeout: Duration,
    name: &str,
    options: ReadStreamOptions,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let backend = |e| error::read(e, timeout);
    let not_found = || ReadError::StreamNotFound {
        stream: name.to_owned(),
    };
    let row = client
        .query_opt(
            "SELECT next_revision, tombstoned, metadata FROM strata_streams WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(backend)?
        .ok_or_else(not_found)?;
    let len = row.get::<_, i64>(0) as u64;
    if row.get::<_, bool>(1) {
        return Err(ReadError::StreamDeleted {
            stream: name.to_owned(),
        });
    }
    let metadata: Option<serde_json::Value> = row.get(2);
    let metadata = metadata
        .and_then(|m| StreamMetadata::from_json(&m).ok())
        .unwrap_or_default();
    if metadata.is_deleted() || len == 0 {
        return Err(not_found());
    }
    let lowest = metadata.first_visible(len);
    let limit = options.limit.min(i64::MAX as usize) as i64;
    // Max age is part of the query, so a page is never emptied by expired events. An
    // age beyond the clock saturates (the cutoff is the epoch): it hides nothing.
    let cutoff = metadata.max_age.map_or(i64::MIN, |max_age| {
        let max_age = u64::try_from(max_age.as_micros()).unwrap_or(u64::MAX);
        let cutoff = Timestamp::now().as_micros().saturating_sub(max_age);
        i64::try_from(cutoff).unwrap_or(i64::MAX)
    });
    let rows = match options.direction {
        Direction::Forwards => {
            let start = options.from.unwrap_or(0).max(lowest);
            let query = format!(
                "SELECT {COLUMNS} FROM strata_events WHERE stream = $1 AND revision >= $2 AND recorded_at >= $4
                 ORDER BY revision LIMIT $3"
            );
            let statement = client.prepare_cached(&query).await.map_err(backend)?;
            client.query(&statement, &[&name, &(start.min(i64::MAX as u64) as i64), &limit, &cutoff]).await
        }
        Direction::Backwards => {
            let start = options.from.unwrap_or(len - 1).min(len - 1);
            if start < lowest {
                return Ok(Vec::new());
            }
            let query = format!(
                "SELECT {COLUMNS} FROM strata_events WHERE stream = $1 AND revision <= $2 AND revision >= $3
                 AND recorded_at >= $5 ORDER BY revision DESC LIMIT $4"
            );
            let statement = client.prepare_cached(&query).await.map_err(backend)?;
            client.query(&statement, &[&name, &(start as i64), &(lowest as i64), &limit, &cutoff]).await
        }
    }
    .map_err(backend)?;
    Ok(rows.iter().map(event).collect())
}

/// Reads the global log below the safe bound, filtered, in pages of at most
/// [`PAGE_ROWS`] rows, until `limit` events matched, the scan budget was examined, or
/// the bound was reached; in `client`, a read transaction whose statements are
/// cancelled after `timeout`.
///
/// Matching runs on the async runtime: each page costs a bounded time (rows times the
/// bounded cost of a filter), and the task yields between pages.
pub async fn all(
    client: &Transaction<'_>,
    timeout: Duration,
    options: &ReadAllOptions,
) -> Result<ReadAllPage, ReadError> {
    let backend = |e| error::read(e, timeout);
    let (direction, from, limit, filter) = (
        options.direction,
        options.from,
        options.limit,
        &options.filter,
    );
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(ReadAllPage {
            events: out,
            next: from,
            end: PageEnd::Limit,
        });
    }
    // Unfiltered reads return every row they examine: `limit` bounds them.
    let budget = if filter.is_empty() {
        u64::MAX
    } else {
        options.scan_budget.max(1)
    };
    // One bound for every page, so that pages agree with each other.
    let bound: i64 = client
        .query_one(&format!("SELECT {SAFE_BOUND_SQL}"), &[])
        .await
        .map_err(backend)?
        .get(0);
    let (query, mut cursor) = match direction {
        Direction::Forwards => (
            format!("SELECT {COLUMNS} FROM strata_events WHERE position >= $1 AND position < $2 ORDER BY position LIMIT $3"),
            from.map_or(0, |p| p.0.min(i64::MAX as u64) as i64),
        ),
        Direction::Backwards => (
            format!("SELECT {COLUMNS} FROM strata_events WHERE position <= $1 AND position < $2 ORDER BY position DESC LIMIT $3"),
            from.map_or(i64::MAX, |p| p.0.min(i64::MAX as u64) as i64),
        ),
    };
    // `cursor` is always the next position to examine: forwards the first, backwards
    // the last not examined yet (negative once position 0 was).
    let next_of = |cursor: i64| u64::try_from(cursor).ok().map(Position);
    let statement = client.prepare_cached(&query).await.map_err(backend)?;
    let mut examined = 0u64;
    let overruns_at_start = filter.backtrack_overruns();
    loop {
        let page = if filter.is_empty() {
            (limit - out.len()).min(i64::MAX as usize) as i64
        } else {
            let spent = filter.scan_cost(examined, overruns_at_start);
            PAGE_ROWS
                .min(i64::try_from(budget.saturating_sub(spent)).unwrap_or(i64::MAX))
                .max(1)
        };
        let rows = client
            .query(&statement, &[&cursor, &bound, &page])
            .await
            .map_err(backend)?;
        let done = (rows.len() as i64) < page;
        for row in &rows {
            let event = event(row);
            cursor = match direction {
                Direction::Forwards => event.position.0 as i64 + 1,
                Direction::Backwards => event.position.0 as i64 - 1,
            };
            examined += 1;
            if filter.matches_event(&event) {
                out.push(event);
                if out.len() >= limit {
                    return Ok(ReadAllPage {
                        events: out,
                        next: next_of(cursor),
                        end: PageEnd::Limit,
                    });
                }
            }
            // Checked per row: a pathological pattern may spend the budget mid-page.
            if filter.scan_cost(examined, overruns_at_start) >= budget {
                return Ok(ReadAllPage {
                    events: out,
                    next: next_of(cursor),
                    end: PageEnd::ScanBudget,
                });
            }
        }
        if done || cursor < 0 {
            let next = match direction {
                // Every position below the bound is visible: all were examined.
                Direction::Forwards => next_of(cursor.max(bound)),
                Direction::Backwards => None,
            };
            return Ok(ReadAllPage {
                events: out,
                next,
                end: PageEnd::End,
            });
        }
        tokio::task::yield_now().await;
    }
}
