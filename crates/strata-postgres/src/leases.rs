//! Leases in PostgreSQL: the `strata_leases` table, shared by every node.
//!
//! One row per lease name, never deleted (a released lease is expired in place, so the
//! next holder's epoch is still higher). Expiry is computed and compared by the
//! database's clock (`clock_timestamp()`, not `now()`, which is the transaction's
//! start), so the nodes' clocks need not agree. Acquiring and renewing are the same
//! single statement: an upsert that only changes the row when the caller already holds
//! it or it has expired. Concurrent callers are serialised by the row (or, for a new
//! name, by the primary key): the second sees the first's row and is refused.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::time::Instant;

use strata::lease::{validate, Lease, LeaseError, LeaseInfo, Leases};

use crate::error::{backend, pool};

/// Acquires or renews: `$1` name, `$2` holder, `$3` TTL in seconds. Answers the epoch,
/// or no row when another holder's lease has not expired.
const ACQUIRE: &str = "
    INSERT INTO strata_leases AS l (name, holder, epoch, expires_at)
    VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))
    ON CONFLICT (name) DO UPDATE SET
        holder = EXCLUDED.holder,
        -- A live lease renewed by its holder keeps its term; anything else is a new one.
        epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                     THEN l.epoch ELSE l.epoch + 1 END,
        expires_at = clock_timestamp() + make_interval(secs => $3)
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
    RETURNING epoch";

/// Expires a live lease of that holder and epoch at once.
const RELEASE: &str = "
    UPDATE strata_leases SET expires_at = clock_timestamp()
    WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > clock_timestamp()";

const CURRENT: &str = "
    SELECT holder, epoch, extract(epoch FROM expires_at - clock_timestamp())::float8
    FROM strata_leases WHERE name = $1";

/// [`Leases`] in the store's database: every node that connects to it competes for the
/// same leases. Cheap to clone.
#[derive(Clone)]
pub struct PostgresLeases {
    pool: Pool,
}

impl std::fmt::Debug for PostgresLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLeases").finish()
    }
}

impl PostgresLeases {
    pub(crate) fn new(pool: Pool) -> PostgresLeases {
        PostgresLeases { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LeaseError> {
        self.pool
            .get()
            .await
            .map_err(|e| LeaseError::Storage(pool(e, &self.pool)))
    }
}

fn epoch(value: i64) -> u64 {
    // Epochs start at 1 and only grow.
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl Leases for PostgresLeases {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        validate(name, holder, ttl)?;
        let client = self.client().await?;
        let statement = client.prepare_cached(ACQUIRE).await.map_err(backend)?;
        // Measured once the connection is in hand: the database computes the expiry
        // after this instant, so `valid_until` is never later than its expiry.
        let sent = Instant::now();
        let row = client
            .query_opt(&statement, &[&name, &holder, &ttl.as_secs_f64()])
            .await
            .map_err(backend)?;
        Ok(row.map(|row| Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch: epoch(row.get(0)),
            ttl,
            valid_until: sent + ttl,
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let client = self.client().await?;
        let epoch = i64::try_from(lease.epoch).unwrap_or(i64::MAX);
        let released = client
            .execute(RELEASE, &[&lease.name, &lease.holder, &epoch])
            .await
            .map_err(backend)?;
        Ok(released == 1)
    }

    async fn current(&self, name: &str) -> Result<Option<LeaseInfo>, LeaseError> {
        let client = self.client().await?;
        let row = client.query_opt(CURRENT, &[&name]).await.map_err(backend)?;
        Ok(row.map(|row| {
            let remaining_secs: f64 = row.get(2);
            LeaseInfo {
                holder: row.get(0),
                epoch: epoch(row.get(1)),
                expires_in: (remaining_secs > 0.0).then(|| Duration::from_secs_f64(remaining_secs)),
            }
        }))
    }
}
