/**
 * ServerInstance: which running server ownership was confirmed on — so that the stream is read only from that one.
 *
 * Ownership is a lock or a lease *on one server*. A replication connection that reaches another server (a promoted
 * standby behind the same address, a restored copy, an old primary that came back) must not stream, even while the
 * holder still believes it owns the stream: the owner on that server may be someone else. So the lock session (or
 * the lease renewal) reports the server it ran on, and every replication connection compares what it reaches with
 * that before it streams (`ReplicationStream`).
 *
 * **What identifies a server**: the cluster's system identifier (the same on a primary and its standbys), the
 * timeline (a promotion starts a new one) and the postmaster's start time (a restart, a crash recovery or another
 * server on the same timeline differ in it). All three are read the same way on both sides: a replication
 * connection (`replication=database`) accepts SQL as well as `IDENTIFY_SYSTEM`.
 *
 * **Details**
 * - The timeline is read from the name of the current WAL file (`pg_walfile_name(pg_current_wal_lsn())`), which
 *   uses the timeline WAL is inserted on: right after a promotion too, when `pg_control_checkpoint()` still shows the
 *   old one until the next checkpoint.
 * - `pg_control_system()` is executable by everyone by default, but an administrator may revoke it. Then the system
 *   identifier is left out on the SQL side (`systemId` undefined), and the timeline and start time decide; a
 *   replication connection still reports it through `IDENTIFY_SYSTEM` for the resume check.
 * - On a standby `pg_current_wal_lsn()` fails: ownership is never confirmed on one.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"

export interface ServerInstance {
  /** `undefined` when `pg_control_system()` may not be executed by this role. */
  readonly systemId: string | undefined
  readonly timeline: number
  /** The postmaster's start, in microseconds since the Unix epoch (as text). */
  readonly startedAt: string
}

/** The select list, over no table: `system_id`, `timeline`, `started_at`. */
export const columns = (withSystemId: boolean): string =>
  `${withSystemId ? "(SELECT system_identifier::text FROM pg_control_system())" : "NULL::text"} AS system_id,
   ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int AS timeline,
   (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text AS started_at`

export interface Row {
  readonly system_id: string | null
  readonly timeline: number
  readonly started_at: string
}

export const fromRow = (row: Row): ServerInstance => ({
  systemId: row.system_id ?? undefined,
  timeline: Number(row.timeline),
  startedAt: String(row.started_at)
})

/**
 * Whether this role may read the system identifier (`pg_control_system()`); read once per process. A permission
 * error is the only answer taken as "no": any other error is the caller's to handle.
 */
export const canReadSystemId = (sql: SqlClient): Effect.Effect<boolean, SqlError> =>
  sql.unsafe("SELECT system_identifier::text FROM pg_control_system()").pipe(
    Effect.as(true),
    Effect.catchIf((e) => SqlErrors.sqlState(e) === "42501", () => Effect.succeed(false))
  )

/** The server `sql` is connected to. */
export const read = (sql: SqlClient, withSystemId: boolean): Effect.Effect<ServerInstance, SqlError> =>
  Effect.map(sql.unsafe<Row>(`SELECT ${columns(withSystemId)}`), (rows) => fromRow(rows[0]!))

/** The same running server: same timeline and start, and the same system where both sides know it. */
export const same = (a: ServerInstance, b: ServerInstance): boolean =>
  a.timeline === b.timeline && a.startedAt === b.startedAt &&
  (a.systemId === undefined || b.systemId === undefined || a.systemId === b.systemId)

export const describe = (s: ServerInstance): string => {
  const started = new Date(Number(BigInt(s.startedAt) / 1000n)).toISOString()
  return `system ${s.systemId ?? "(not readable)"}, timeline ${s.timeline}, started ${started}`
}
