/**
 * AdvisoryLock: ownership of a stream as a session-level advisory lock, held on a dedicated session.
 *
 * **What it guarantees**
 * - At most one session in the database holds the stream's lock `(OWNERSHIP_LOCK_NAMESPACE, key)`; the lock is
 *   taken with `pg_try_advisory_lock` polled by the supervisor, never with a blocking `pg_advisory_lock` (a
 *   provider's `statement_timeout` cancels that, and a waiting backend outlives a client that went away).
 * - Every acquisition bumps the fencing epoch in the ownership table, in a transaction that first takes the stream's
 *   write lock — so it waits for a guarded write the previous owner still has in flight, and every later guarded
 *   write of that owner fails its proof.
 * - The server releases the lock of an unreachable holder: the lock session runs with `idle_session_timeout` =
 *   `serverReleaseBound`, so a session that stops heartbeating (frozen process, half-open path) is terminated by the
 *   server and its lock released. TCP keepalives do not help through a path that still acknowledges packets, and
 *   `client_connection_check_interval` does nothing for an idle session; `idle_session_timeout` does.
 *
 * **What it assumes**: a direct (or session-pooled) connection: PgBouncer in transaction mode breaks session locks
 * (use `LeaseLock`). PostgreSQL 14+ (idle_session_timeout).
 *
 * **How it fails**: a heartbeat that finds the lock no longer granted to this backend, or finds the session gone,
 * is a loss at once. When an administrator terminates the lock session, the server releases the lock at that instant,
 * before the holder can know: another instance may become active up to one heartbeat interval before the holder
 * notices. From the first instant, the holder's guarded writes fail their proof, so it can change nothing; the
 * holder's interval and the new owner's overlap only in belief, never in effect. A heartbeat that errors in another
 * way, or hangs, is a miss, and the supervisor's deadline decides.
 * The guard (`guarded`) proves, in the write's own transaction, that the lock is granted to our lock session's pid
 * *with the same backend_start* (a pid may be reused by a new backend) and that the epoch is still ours, read
 * `FOR SHARE`.
 */
import { PgConnection } from "@effect/sql-pg"
import { Effect, type Redacted, type Scope } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Connector from "../connection/Connector.ts"
import { applicationName, asOid, type SessionRole, type StreamIdentity } from "../StreamId.ts"
import type { CheckOutcome } from "./Liveness.ts"
import { advisoryLockGranted, backendError, makeGuards, type Proof } from "./Fencing.ts"
import { type AttemptResult, type Held, type HolderInfo, type LockBackend, LockBackendError, type LockSession } from "./LockBackend.ts"
import { type Guards, OwnershipLost } from "./Ownership.ts"
import { type OwnershipConfig, OwnershipConfigError } from "./OwnershipConfig.ts"
import { leasesTableName, tableName } from "./OwnershipTable.ts"
import * as ReleaseNotice from "./ReleaseNotice.ts"
import * as ServerInstance from "./ServerInstance.ts"
import * as SessionSettings from "../SessionSettings.ts"

export interface AdvisoryLockOptions {
  readonly url: Redacted.Redacted
  readonly config: OwnershipConfig
  readonly identity: StreamIdentity
  /** The pool guarded writes run on. */
  readonly sql: SqlClient
  /** Whether this role may read the system identifier (`ServerInstance.canReadSystemId`). */
  readonly systemIdReadable: boolean
}

/** The lock as `pg_locks l` shows it, in this database. `$1` = classid, `$2` = objid (unsigned). */
const lockPredicate = advisoryLockGranted("$1", "$2")

/** The lock session's server-side bounds, as startup parameters: see the module comment. */
const sessionParameters = (config: OwnershipConfig) => ({
  ...SessionSettings.startupParameters,
  idle_session_timeout: String(Math.trunc(config.serverReleaseBoundMs)),
  idle_in_transaction_session_timeout: String(Math.trunc(config.serverReleaseBoundMs)),
  statement_timeout: String(Math.trunc(config.lossDeadlineMs)),
  lock_timeout: String(Math.trunc(config.lossDeadlineMs))
})

/**
 * Why the server's release bound does not hold on a session opened as the lock session is, or `undefined`: the
 * session's `idle_session_timeout` must read back as set. A server or a pooler that drops or overrides startup
 * parameters would otherwise keep an unreachable holder's lock for ever, silently.
 */
const boundNotHeld = (conn: { readonly query: (text: string) => Effect.Effect<{ readonly rows: ReadonlyArray<unknown> }, SqlError> }, config: OwnershipConfig) =>
  Effect.map(conn.query("SELECT setting FROM pg_settings WHERE name = 'idle_session_timeout'"), (r): string | undefined => {
    const got = (r.rows[0] as { setting?: string } | undefined)?.setting
    return got === String(Math.trunc(config.serverReleaseBoundMs)) ? undefined
      : `the lock session's idle_session_timeout reads ${got === undefined ? "nothing" : `${got} ms`}, not the ${Math.trunc(config.serverReleaseBoundMs)} ms ` +
        `slotkeeper set: the server's release bound does not hold (a pooler or a server setting overrides session parameters). ` +
        `Connect to PostgreSQL directly (or through a session-mode pooler that passes startup parameters), or use lease mode`
  })

/**
 * A session of this stream with the lock session's server-side bounds, made by libpq's rules (`Connector`); a
 * connection refused for good (a wrong password, TLS that does not verify) is not retryable.
 */
const session = (url: Redacted.Redacted, config: OwnershipConfig, role: SessionRole) =>
  Connector.sqlPg(url, config.lossDeadlineMs).pipe(
    Effect.mapError((e) => new LockBackendError({ operation: "connect", message: `connect: ${e.message}`, retryable: e._tag === "ConnectFailed" && !e.permanent })),
    Effect.flatMap((target) =>
      PgConnection.make({
        connectTimeout: `${config.lossDeadlineMs} millis`,
        ...target,
        applicationName: applicationName(config.streamId, config.instanceId, role),
        startupParameters: sessionParameters(config)
      }).pipe(Effect.mapError(backendError("connect")))
    )
  )

/**
 * Checks, before the stream is competed for, that a session like the lock session keeps `idle_session_timeout`: an
 * `OwnershipConfigError` (bad setup, said before anything changes) when it does not.
 */
export const checkServerBound = (url: Redacted.Redacted, config: OwnershipConfig): Effect.Effect<void, OwnershipConfigError | LockBackendError> =>
  Effect.scoped(Effect.gen(function*() {
    const conn = yield* session(url, config, "admin")
    const problem = yield* boundNotHeld(conn, config).pipe(Effect.mapError(backendError("check")))
    if (problem !== undefined) return yield* new OwnershipConfigError({ field: "serverReleaseBound", message: problem })
  }))

/**
 * The advisory-lock backend of a stream: a `LockBackend` (sessions that acquire, heartbeat and release the lock) and
 * its `Guards` (the proof every guarded write runs). Used by `StreamOwnership.make` in `advisory` mode; a
 * `Supervisor` drives it.
 *
 * **When to use**: a direct or session-pooled connection to PostgreSQL 14+. Behind a transaction pooler use
 * `LeaseLock.make`.
 *
 * **Details**
 * - Each holding period opens its own lock session (application_name `slotkeeper:<stream>:<instance>:lock`) with
 *   `idle_session_timeout` = `serverReleaseBound`; `checkServerBound` proves before anything is created that the
 *   server keeps that setting.
 * - Acquisition is `pg_try_advisory_lock`, then the epoch bump under the stream's write lock, in one transaction.
 * - A heartbeat proves the lock is still granted to this session's pid and `backend_start`.
 * - A graceful release is announced (`ReleaseNotice`); a waiting session listens for it and tries at once.
 *
 * **Gotchas**
 * - Creating the backend opens nothing: sessions are opened by the supervisor, per attempt.
 * - An administrator who terminates the lock session hands the lock over at once; the old holder learns it at its
 *   next heartbeat, and its guarded writes fail from the first instant (see the module's summary).
 */
export const make = (options: AdvisoryLockOptions): LockBackend & Guards => {
  const { config, identity, sql } = options
  const table = tableName(config.schema)
  const leases = leasesTableName(config.schema)
  const own = identity.ownershipLock
  const write = identity.writeLock
  const lockParams = [asOid(own.namespace), asOid(own.key)]

  const open: Effect.Effect<LockSession, LockBackendError, Scope.Scope> = Effect.gen(function*() {
    // Server-side bounds of the lock session: the server ends it (releasing the lock) once it is idle for the
    // release bound; no statement on it may run longer than the holder's own detection deadline.
    // Pinned: a release notice listener (while waiting) shares the session with the lock's own statements.
    const conn = yield* Effect.flatMap(session(options.url, config, "lock"), (c) => c.pin)
    // ... and read back: a session that does not keep it must never hold the stream
    const problem = yield* boundNotHeld(conn, config).pipe(Effect.mapError(backendError("connect")))
    if (problem !== undefined) return yield* new LockBackendError({ operation: "connect", message: problem, retryable: false })
    const query = <Row>(text: string, params: ReadonlyArray<unknown> = []) =>
      Effect.map(conn.query(text, params), (r) => r.rows as unknown as ReadonlyArray<Row>)

    const holderInfo = Effect.map(
      query<{ pid: number; application_name: string; idle_ms: number; holder: string | null; epoch: string | null; since: string | null; held_ms: number | null }>(
        `SELECT l.pid, a.application_name,
                (extract(epoch FROM (now() - a.state_change)) * 1000)::float8 AS idle_ms,
                o.holder, o.epoch::text AS epoch,
                -- the ownership row describes this holder only if it names this backend; otherwise (a session of
                -- another program, an older holder) the backend's own start is the best "since"
                COALESCE(o.acquired_at, a.backend_start)::text AS since,
                (extract(epoch FROM (now() - COALESCE(o.acquired_at, a.backend_start))) * 1000)::float8 AS held_ms
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           LEFT JOIN ${table} o ON o.stream_id = $3 AND o.holder_pid = l.pid AND o.holder_backend_start = a.backend_start
          WHERE ${lockPredicate}`,
        [...lockParams, config.streamId]
      ),
      (rows): HolderInfo | undefined => {
        const r = rows[0]
        if (r === undefined) return undefined
        return {
          pid: r.pid,
          applicationName: r.application_name,
          idleMs: Number(r.idle_ms),
          holder: r.holder ?? undefined,
          epoch: r.epoch === null ? undefined : Number(r.epoch),
          since: r.since ?? undefined,
          heldMs: r.held_ms === null ? undefined : Number(r.held_ms)
        }
      }
    )

    // The lock is ours: bump the epoch, after draining guarded writes of the previous owner (write lock).
    const bumpEpoch = Effect.gen(function*() {
      yield* query("BEGIN")
      yield* query("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", [write.namespace, write.key])
      const rows = yield* query<{ epoch: string; pid: number; backend_start: string }>(
        `INSERT INTO ${table} AS o (stream_id, epoch, mode, holder, holder_pid, holder_backend_start, acquired_at)
         SELECT $1, 1, 'advisory', $2, pg_backend_pid(), a.backend_start, clock_timestamp()
           FROM pg_stat_activity a WHERE a.pid = pg_backend_pid()
         ON CONFLICT (stream_id) DO UPDATE SET
           epoch = o.epoch + 1, mode = 'advisory', holder = EXCLUDED.holder, holder_pid = EXCLUDED.holder_pid,
           holder_backend_start = EXCLUDED.holder_backend_start, acquired_at = clock_timestamp()
         -- a live lease of an instance in lease mode is not ours to take
         WHERE o.mode = 'advisory'
            OR NOT EXISTS (SELECT 1 FROM ${leases} l WHERE l.stream_id = o.stream_id AND l.lease_until > now())
         RETURNING o.epoch::text AS epoch, o.holder_pid AS pid, o.holder_backend_start::text AS backend_start`,
        [config.streamId, config.instanceId]
      )
      yield* query("COMMIT")
      return rows[0]
    }).pipe(Effect.onError(() => Effect.ignore(query("ROLLBACK"))))

    const tryAcquire: Effect.Effect<AttemptResult, LockBackendError> = Effect.gen(function*() {
      const [attempt] = yield* query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1::int4, $2::int4) AS ok", [own.namespace, own.key])
      if (!attempt?.ok) return { _tag: "Busy", holder: yield* holderInfo } as const
      const bumped = yield* bumpEpoch.pipe(
        Effect.onError(() => Effect.ignore(query("SELECT pg_advisory_unlock($1::int4, $2::int4)", [own.namespace, own.key])))
      )
      if (bumped === undefined) {
        yield* query("SELECT pg_advisory_unlock($1::int4, $2::int4)", [own.namespace, own.key])
        const [row] = yield* query<{ holder: string; epoch: string; since: string }>(
          `SELECT holder, epoch::text AS epoch, acquired_at::text AS since FROM ${table} WHERE stream_id = $1`, [config.streamId])
        return { _tag: "Busy", holder: row && { holder: row.holder, epoch: Number(row.epoch), since: row.since } } as const
      }
      // the server the lock is held on: the stream is read from this one only (see ServerInstance)
      const [server] = yield* query<ServerInstance.Row>(`SELECT ${ServerInstance.columns(options.systemIdReadable)}`)
      return {
        _tag: "Acquired",
        held: { epoch: Number(bumped.epoch), pid: bumped.pid, backendStart: bumped.backend_start, server: server && ServerInstance.fromRow(server) }
      } as const
    }).pipe(Effect.mapError(backendError("acquire")))

    const check = (_held: Held): Effect.Effect<CheckOutcome> =>
      query<{ held: boolean }>(
        `SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE ${lockPredicate} AND l.pid = pg_backend_pid()) AS held`,
        lockParams
      ).pipe(
        Effect.map((rows): CheckOutcome =>
          rows[0]?.held === true
            ? { _tag: "Confirmed" }
            : { _tag: "NotHeld", detail: "the stream's advisory lock is no longer granted to this lock session" }
        ),
        Effect.catch((e): Effect.Effect<CheckOutcome> =>
          Effect.succeed(SqlErrors.isSessionGone(e)
            ? { _tag: "SessionGone", detail: SqlErrors.describe(e) }
            : { _tag: "Miss", detail: SqlErrors.describe(e) })
        )
      )

    // Unlocked, then announced: a waiter woken by the notice finds the lock free.
    const release = (_held: Held) =>
      Effect.ignore(query(
        ReleaseNotice.announcing("SELECT 1 WHERE pg_advisory_unlock($1::int4, $2::int4)", 3),
        [own.namespace, own.key, ReleaseNotice.channel, ReleaseNotice.payload(config)]
      ))

    // Terminates the holder only if that pid still holds this stream's lock.
    const breakHolder = (holder: HolderInfo) =>
      Effect.map(
        query<{ ok: boolean }>(
          `SELECT pg_terminate_backend(l.pid) AS ok FROM pg_locks l WHERE ${lockPredicate} AND l.pid = $3`,
          [...lockParams, holder.pid]
        ),
        (rows) => rows[0]?.ok === true
      ).pipe(Effect.mapError(backendError("break")))

    return { tryAcquire, check, release, breakHolder, releases: ReleaseNotice.listen(conn, config) } satisfies LockSession
  })

  // The proof: the lock is granted to our lock session's pid with the same backend_start (a pid can be reused), and
  // the epoch is ours.
  const proof: Proof = (held, rowLock) =>
    Effect.gen(function*() {
      const rows = yield* sql.unsafe<{ epoch: string }>(
        `SELECT o.epoch::text AS epoch FROM ${table} o
          WHERE o.stream_id = $3 AND o.epoch = $4::bigint AND o.holder = $5 AND o.mode = 'advisory'
            AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                         WHERE ${lockPredicate} AND l.pid = $6::int4 AND a.backend_start = $7::timestamptz)
          ${rowLock}`,
        [...lockParams, config.streamId, held.epoch, config.instanceId, held.pid, held.backendStart]
      )
      if (rows.length > 0) return
      const [found] = yield* sql.unsafe<{ epoch: string | null; holder: string | null; lock_pid: number | null }>(
        `SELECT (SELECT epoch::text FROM ${table} WHERE stream_id = $3) AS epoch,
                (SELECT holder FROM ${table} WHERE stream_id = $3) AS holder,
                (SELECT l.pid FROM pg_locks l WHERE ${lockPredicate}) AS lock_pid`,
        [...lockParams, config.streamId]
      )
      return yield* new OwnershipLost({
        streamId: config.streamId,
        epoch: held.epoch,
        message: `guarded write refused: this instance (epoch ${held.epoch}, lock session pid ${held.pid}) no longer owns stream ${config.streamId}`,
        found: `epoch ${found?.epoch ?? "none"} held by ${found?.holder ?? "nobody"}; lock granted to pid ${found?.lock_pid ?? "nobody"}`
      })
    })

  return { mode: "advisory", open, ...makeGuards(sql, config.lossDeadlineMs, write, proof) }
}
