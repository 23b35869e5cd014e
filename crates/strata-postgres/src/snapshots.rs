//! Aggregate snapshots in PostgreSQL, beside the events, so every node shares them.

use async_trait::async_trait;
use deadpool_postgres::Pool;

use strata::model::{ModelError, Snapshot, SnapshotStore};
use strata::Position;

/// A [`SnapshotStore`] in the `strata_snapshots` table of the store's database.
#[derive(Clone)]
pub struct PostgresSnapshots {
    pool: Pool,
}

impl std::fmt::Debug for PostgresSnapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSnapshots").finish()
    }
}

impl PostgresSnapshots {
    pub(crate) fn new(pool: Pool) -> PostgresSnapshots {
        PostgresSnapshots { pool }
    }
}

fn failed(error: impl std::fmt::Display) -> ModelError {
    ModelError::Snapshot(format!("postgres: {error}"))
}

#[async_trait]
impl SnapshotStore for PostgresSnapshots {
    async fn load(&self, stream: &str) -> Result<Option<Snapshot>, ModelError> {
        let client = self.pool.get().await.map_err(failed)?;
        let row = client
            .query_opt(
                "SELECT state_version, revision, position, state FROM strata_snapshots WHERE stream = $1",
                &[&stream],
            )
            .await
            .map_err(failed)?;
        Ok(row.map(|row| Snapshot {
            stream: stream.to_owned(),
            state_version: row.get::<_, i32>(0) as u32,
            revision: row.get::<_, i64>(1) as u64,
            position: Position(row.get::<_, i64>(2) as u64),
            state: row.get(3),
        }))
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), ModelError> {
        let client = self.pool.get().await.map_err(failed)?;
        client
            .execute(
                "INSERT INTO strata_snapshots (stream, state_version, revision, position, state)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (stream) DO UPDATE SET state_version = EXCLUDED.state_version,
                    revision = EXCLUDED.revision, position = EXCLUDED.position, state = EXCLUDED.state
                 WHERE strata_snapshots.revision <= EXCLUDED.revision",
                &[
                    &snapshot.stream,
                    &(snapshot.state_version as i32),
                    &(snapshot.revision as i64),
                    &(snapshot.position.0 as i64),
                    &snapshot.state,
                ],
            )
            .await
            .map_err(failed)?;
        Ok(())
    }
}
