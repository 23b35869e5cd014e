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
    // 3: the append as one function call (one round trip, one implicit transaction) for
    // the common case; see `append::append_fast`. It returns [xid, visible at commit (0/1),
    // start revision of each part]. It writes nothing and raises SQLSTATE
    // SA001 when the append conflicts ('conflict', DETAIL 'part,next_revision'), names a
    // tombstoned stream ('deleted', DETAIL 'part'), or needs the general path ('slow': a
    // soft-deleted stream to revive, or a retry of recorded events to answer exactly).
    "CREATE FUNCTION strata_append(
        p_streams text[], p_expected bigint[], p_first_ids uuid[], p_counts bigint[],
        p_part int[], p_offset bigint[], p_ids uuid[], p_types text[], p_binary boolean[],
        p_data bytea[], p_metadata bytea[], p_recorded_at bigint[], p_valid_at bigint[],
        p_delay_ms int
     ) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
     DECLARE
        v_xid bigint := pg_current_xact_id()::text::bigint;
        v_starts bigint[] := array_fill(0::bigint, ARRAY[array_length(p_streams, 1)]);
        v_start bigint;
        v_expected bigint;
        r record;
        i int;
     BEGIN
        -- One statement locks every stream row in name order (concurrent appends never
        -- deadlock), creates the missing ones, reserves the revisions and returns the
        -- state before: one new row version per stream. Any exception below undoes it.
        FOR r IN
            INSERT INTO strata_streams AS s (name, next_revision)
                SELECT u.name, u.n FROM unnest(p_streams, p_counts) AS u(name, n) ORDER BY 1
            ON CONFLICT (name) DO UPDATE SET next_revision = s.next_revision + EXCLUDED.next_revision
            RETURNING s.name, s.next_revision, s.tombstoned, s.metadata
        LOOP
            i := array_position(p_streams, r.name);
            v_start := r.next_revision - p_counts[i];
            IF r.tombstoned THEN
                RAISE EXCEPTION USING ERRCODE = 'SA001', MESSAGE = 'deleted', DETAIL = i::text;
            END IF;
            IF coalesce((r.metadata->>'$tb')::numeric, 0) = 9223372036854775807 THEN
                RAISE EXCEPTION USING ERRCODE = 'SA001', MESSAGE = 'slow', DETAIL = i::text;
            END IF;
            IF p_first_ids[i] IS NOT NULL AND EXISTS (
                SELECT 1 FROM strata_events WHERE id = p_first_ids[i] AND stream = r.name
            ) THEN
                RAISE EXCEPTION USING ERRCODE = 'SA001', MESSAGE = 'slow', DETAIL = i::text;
            END IF;
            v_expected := p_expected[i];
            IF NOT (v_expected = -2
                    OR (v_expected = -1 AND v_start = 0)
                    OR (v_expected = -4 AND v_start > 0)
                    OR (v_expected >= 0 AND v_start = v_expected + 1)) THEN
                RAISE EXCEPTION USING ERRCODE = 'SA001', MESSAGE = 'conflict',
                    DETAIL = i::text || ',' || v_start::text;
            END IF;
            v_starts[i] := v_start;
        END LOOP;
        INSERT INTO strata_events
            (position, stream, revision, id, event_type, is_binary, data, metadata, recorded_at, valid_at)
        SELECT (v_xid << 20) + e.ord - 1, p_streams[e.part], v_starts[e.part] + e.off, e.id, e.t,
               e.b, e.d, e.m, e.r, e.v
          FROM unnest(p_part, p_offset, p_ids, p_types, p_binary, p_data, p_metadata,
                      p_recorded_at, p_valid_at)
               WITH ORDINALITY AS e(part, off, id, t, b, d, m, r, v, ord);
        IF p_delay_ms > 0 THEN
            PERFORM pg_sleep(p_delay_ms / 1000.0);
        END IF;
        -- Whether no older transaction is still running: then nothing can hold readers
        -- below this append once it commits, and the caller need not wait to see it.
        RETURN ARRAY[v_xid,
                     (pg_snapshot_xmin(pg_current_snapshot())::text::bigint = v_xid)::int::bigint]
               || v_starts;
     END
     $fn$;",
    // 4: leases (work spread over nodes) and the documents and checkpoints of
    // `PostgresSink`. Expiry is the database's clock (`clock_timestamp()`), so nodes'
    // clocks need not agree. A lease row is never deleted: its epoch must keep growing.
    "CREATE TABLE strata_leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL
     );
     CREATE TABLE strata_projection_documents (
        projection text NOT NULL,
        key text NOT NULL,
        value jsonb NOT NULL,
        PRIMARY KEY (projection, key)
     );
     CREATE TABLE strata_projection_checkpoints (
        projection text PRIMARY KEY,
        position bigint NOT NULL
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
