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
    // 3: appends as one function call (one round trip, one implicit transaction) for the
    // common case; see `combine.rs`. One call carries the appends of several callers
    // ("groups", each all or nothing) so that they share one commit. Per part it returns
    // a status and a value: 0 written (value: first revision), 1 wrong expected revision
    // (value: the stream's next revision), 2 tombstoned, 3 needs the general path (a
    // soft-deleted stream to revive, or a retry of recorded events to answer exactly),
    // 4 not written because another part of its group failed. The array starts with the
    // transaction id and whether no older transaction was running (so readers see the
    // events as soon as the call returns).
    "CREATE FUNCTION strata_append_groups(
        p_group int[], p_streams text[], p_expected bigint[], p_first_ids uuid[],
        p_counts bigint[], p_part int[], p_offset bigint[], p_ids uuid[], p_types text[],
        p_binary boolean[], p_data bytea[], p_metadata bytea[], p_recorded_at bigint[],
        p_valid_at bigint[], p_delay_ms int
     ) RETURNS bigint[] LANGUAGE plpgsql AS $fn$
     DECLARE
        v_xid bigint := pg_current_xact_id()::text::bigint;
        n int := coalesce(array_length(p_streams, 1), 0);
        v_status bigint[] := array_fill(0::bigint, ARRAY[n]);
        v_value bigint[] := array_fill(0::bigint, ARRAY[n]);
        v_names text[];
        v_next bigint[];
        v_tomb boolean[];
        v_deleted boolean[];
        v_changed boolean[];
        v_group_next bigint[];
        v_written boolean[] := array_fill(false, ARRAY[n]);
        v_out bigint[];
        i int;
        k int;
        g int;
        first int;
        last int;
        v_start bigint;
        v_expected bigint;
        v_failed boolean;
     BEGIN
        -- Lock (creating) every stream row in name order: concurrent calls never deadlock.
        WITH locked AS (
            INSERT INTO strata_streams AS s (name)
                SELECT DISTINCT u FROM unnest(p_streams) AS u ORDER BY 1
            ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
            RETURNING s.name, s.next_revision, s.tombstoned,
                      coalesce((s.metadata->>'$tb')::numeric, 0) = 9223372036854775807 AS deleted
        )
        SELECT array_agg(name), array_agg(next_revision), array_agg(tombstoned), array_agg(deleted)
          INTO v_names, v_next, v_tomb, v_deleted FROM locked;
        v_changed := array_fill(false, ARRAY[coalesce(array_length(v_names, 1), 0)]);
        -- Groups in order; a group's parts are contiguous.
        first := 1;
        WHILE first <= n LOOP
            g := p_group[first];
            last := first;
            WHILE last < n AND p_group[last + 1] = g LOOP
                last := last + 1;
            END LOOP;
            v_failed := false;
            v_group_next := v_next;
            FOR i IN first .. last LOOP
                k := array_position(v_names, p_streams[i]);
                v_start := v_group_next[k];
                IF v_tomb[k] THEN
                    v_status[i] := 2; v_failed := true; EXIT;
                END IF;
                IF v_deleted[k] THEN
                    v_status[i] := 3; v_failed := true; EXIT;
                END IF;
                IF p_first_ids[i] IS NOT NULL AND EXISTS (
                    SELECT 1 FROM strata_events WHERE id = p_first_ids[i] AND stream = p_streams[i]
                ) THEN
                    v_status[i] := 3; v_failed := true; EXIT;
                END IF;
                v_expected := p_expected[i];
                IF NOT (v_expected = -2
                        OR (v_expected = -1 AND v_start = 0)
                        OR (v_expected = -4 AND v_start > 0)
                        OR (v_expected >= 0 AND v_start = v_expected + 1)) THEN
                    v_status[i] := 1; v_value[i] := v_start; v_failed := true; EXIT;
                END IF;
                v_value[i] := v_start;
                v_group_next[k] := v_start + p_counts[i];
            END LOOP;
            IF v_failed THEN
                FOR i IN first .. last LOOP
                    IF v_status[i] = 0 THEN
                        v_status[i] := 4;
                    END IF;
                END LOOP;
            ELSE
                FOR i IN first .. last LOOP
                    v_written[i] := true;
                    k := array_position(v_names, p_streams[i]);
                    v_changed[k] := v_changed[k] OR p_counts[i] > 0;
                END LOOP;
                v_next := v_group_next;
            END IF;
            first := last + 1;
        END LOOP;
        -- The events of the written parts, numbered in call order.
        INSERT INTO strata_events
            (position, stream, revision, id, event_type, is_binary, data, metadata, recorded_at, valid_at)
        SELECT (v_xid << 20) + row_number() OVER (ORDER BY e.ord) - 1, p_streams[e.part],
               v_value[e.part] + e.off, e.id, e.t, e.b, e.d, e.m, e.r, e.v
          FROM unnest(p_part, p_offset, p_ids, p_types, p_binary, p_data, p_metadata,
                      p_recorded_at, p_valid_at)
               WITH ORDINALITY AS e(part, off, id, t, b, d, m, r, v, ord)
         WHERE v_written[e.part];
        UPDATE strata_streams AS s SET next_revision = u.next
          FROM unnest(v_names, v_next, v_changed) AS u(name, next, changed)
         WHERE s.name = u.name AND u.changed;
        IF p_delay_ms > 0 THEN
            PERFORM pg_sleep(p_delay_ms / 1000.0);
        END IF;
        v_out := ARRAY[v_xid,
                       (pg_snapshot_xmin(pg_current_snapshot())::text::bigint = v_xid)::int::bigint];
        FOR i IN 1 .. n LOOP
            v_out := v_out || v_status[i] || v_value[i];
        END LOOP;
        RETURN v_out;
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
