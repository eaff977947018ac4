/**
 * SessionSecurity: which of an instance's sessions are encrypted, by the server's own account (`pg_stat_ssl`) — for
 * `status`, `/health` and `/metrics`, so that "is the replication stream encrypted?" has an answer that does not
 * depend on reading the connection strings right.
 *
 * **Details**: the sessions are found by their `application_name` (`slotkeeper:<stream>:<instance>:<role>`): the lock
 * session, the guard pool (or the pool shared by a fleet's streams of one database), the replication connection (`repl`, a walsender) and short admin sessions. A session of
 * another role may show no `application_name` to a role without `pg_read_all_stats`; it is then not listed.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as StreamId from "../StreamId.ts"

export interface Session {
  readonly role: StreamId.SessionRole
  readonly pid: number
  readonly encrypted: boolean
  /** The TLS version (`TLSv1.3`), when encrypted. */
  readonly tls: string | undefined
}

const roles: ReadonlyArray<StreamId.SessionRole> = ["lock", "guard", "repl", "admin", "backfill"]

/**
 * The instance's sessions on the server `sql` is connected to, with whether each is encrypted. `poolName` is the
 * `application_name` of the pool the stream's guarded writes run on when it is not the stream's own (a pool shared by
 * the streams of a fleet, `SharedPools`).
 */
export const read = (sql: SqlClient, streamId: string, instanceId: string, poolName?: string): Effect.Effect<ReadonlyArray<Session>, SqlError> => {
  const names = roles.map((role) => role === "guard" && poolName !== undefined ? poolName : StreamId.applicationName(streamId, instanceId, role))
  return Effect.map(
    sql.unsafe<{ application_name: string; pid: number; ssl: boolean; version: string | null }>(
      `SELECT a.application_name, a.pid, COALESCE(s.ssl, false) AS ssl, s.version
         FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
        WHERE a.application_name = ANY($1::text[])
        ORDER BY a.application_name, a.pid`,
      [names]
    ),
    (rows) => rows.map((r) => ({ role: roles[names.indexOf(r.application_name)]!, pid: r.pid, encrypted: r.ssl === true, tls: r.version ?? undefined }))
  )
}
