//! Schema creation and migrations, versioned and safe when several nodes start at once
//! (a session advisory lock serialises them).

use tokio_postgres::Client;

use crate::error::backend;
use strata::StorageError;

/// The advisory lock key that serialises migrations ("STRATA01").
const MIGRATION_LOCK: i64 = 0x5354_5241_5441_3031;

/// The migrations, in order. Never edit one that has shipped: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: streams and events.
    "CREATE TABLE strata_streams (
        name text PRIMARY KEY,
        next_revision bigint NOT NULL DEFAULT 0,
        tombstoned boolean NOT NULL DEFAULT false,
        metadata jsonb
     );
     CREATE TABLE strata_events (
        position bigint PRIMARY KEY,
        stream text NOT NULL,
        revision bigint NOT NULL,
        id uuid NOT NULL,
        event_type text NOT NULL,
        is_binary boolean NOT NULL,
        data bytea NOT NULL,
        metadata bytea NOT NULL,
        recorded_at bigint NOT NULL,
        valid_at bigint,
        UNIQUE (stream, revision)
     );
     CREATE INDEX strata_events_id ON strata_events (id);",
    // 2: aggregate snapshots.
    "CREATE TABLE strata_snapshots (
        stream text PRIMARY KEY,
        state_version integer NOT NULL,
        revision bigint NOT NULL,
        position bigint NOT NULL,
        state jsonb NOT NULL
     );",
];

/// Brings the schema to the newest version.
pub async fn migrate(client: &mut Client) -> Result<(), StorageError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    let outcome = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend);
    outcome.and(unlocked.map(drop))
}

async fn apply(client: &mut Client) -> Result<(), StorageError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS strata_schema (version integer PRIMARY KEY)")
        .await
        .map_err(backend)?;
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM strata_schema", &[])
        .await
        .map_err(backend)?;
    let current: i32 = row.get(0);
    for (i, migration) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= current {
            continue;
        }
        let tx = client.transaction().await.map_err(backend)?;
        tx.batch_execute(migration).await.map_err(backend)?;
        tx.execute(
            "INSERT INTO strata_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
    }
    Ok(())
}
