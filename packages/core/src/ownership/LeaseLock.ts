/**
 * LeaseLock: ownership of a stream as a lease row, for connections through poolers (PgBouncer in transaction
 * mode), where session-level advisory locks break.
 *
 * **What it guarantees**
 * - The lease is a row of its own (`leases`: holder, epoch, `lease_until`), always computed with the database's
 *   clock (`now()`), never a client's; the fencing epoch is in the ownership row. Acquisition is one statement that takes over only a lease that has
 *   expired (or a stream nobody holds) and bumps the epoch on every takeover; renewal is one statement that extends
 *   only our own unexpired lease with our epoch. A renewal that matches nothing is a proven loss.
 * - Acquisition first takes the stream's write lock (transaction level, which poolers keep), so it waits for the
 *   previous owner's in-flight guarded write; the epoch bump then fails every later write of that owner.
 * - Release expires the lease (`lease_until = now()`), so another instance can take over at once.
 *
 * **What it assumes**: instance ids may not be unique (two pods with the same name): an instance never takes over its
 * "own" unexpired lease at acquisition; it waits for it to expire like anyone else.
 *
 * **How it fails**: the holder declares loss at `leaseDuration - safetyMargin` after the start of its last good
 * renewal (the supervisor's deadline), before the lease can expire on the server. Errors of a renewal through the
 * pool are misses: the pool may reconnect, and the deadline decides.
 *
 * **Why the lease has its own row**: guarded writes hold the ownership row `FOR SHARE`; a renewal that updated that
 * row would wait for them, and a long guarded write would make the holder miss its own deadline (tested). The write
 * lock already orders epoch bumps against guarded writes, so renewals need not touch the epoch row.
 */
import { Effect, type Redacted } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as SqlErrors from "../internal/sqlError.ts"
import { asOid, type StreamIdentity } from "../StreamId.ts"
import type { CheckOutcome } from "./Liveness.ts"
import { advisoryLockGranted, backendError, boundTransaction, makeGuards, type Proof } from "./Fencing.ts"
import type { AttemptResult, Held, LockBackend, LockBackendError, LockSession } from "./LockBackend.ts"
import { type Guards, OwnershipLost } from "./Ownership.ts"
import type { OwnershipConfig } from "./OwnershipConfig.ts"
import { leasesTableName, tableName } from "./OwnershipTable.ts"
import * as ReleaseNotice from "./ReleaseNotice.ts"
import * as ServerInstance from "./ServerInstance.ts"

export interface LeaseLockOptions {
  readonly config: OwnershipConfig
  readonly identity: StreamIdentity
  /** The pool every lease statement and guarded write runs on. */
  readonly sql: SqlClient
  /** Whether this role may read the system identifier (`ServerInstance.canReadSystemId`). */
  readonly systemIdReadable: boolean
  /**
   * A URL that reaches PostgreSQL directly, for a waiter to listen for release notices on (`ReleaseNotice`); leave it
   * out behind a transaction pooler, where `LISTEN` does not work: waiters then poll.
   */
  readonly noticeUrl?: Redacted.Redacted | undefined
}

/**
 * The lease backend of a stream: a `LockBackend` whose "session" is a lease row renewed through the pool, and its
 * `Guards`. Used by `StreamOwnership.make` in `lease` mode; a `Supervisor` drives it.
 *
 * **When to use**: behind PgBouncer in transaction mode, or wherever session state does not survive (the advisory
 * lock needs a session of its own).
 *
 * **Details**
 * - Acquisition takes over only an expired lease (or a stream nobody holds), under the stream's write lock, and
 *   bumps the epoch; renewal extends only this instance's unexpired lease with its epoch; both by the database's
 *   clock. Release expires the lease at once and is announced (`ReleaseNotice`); with `noticeUrl`, a waiter listens
 *   for that and tries at once.
 * - The holder gives up at `leaseDuration - safetyMargin` after the start of its last good renewal, before the
 *   lease can expire on the server.
 *
 * **Gotchas**
 * - Takeover after an unclean loss waits for the lease to expire (up to `leaseDuration`), where the advisory lock
 *   is released as soon as the server ends the session.
 * - Two instances with the same instance id do not share a lease: an unexpired lease is never taken over, even by
 *   an instance of the same name.
 */
export const make = (options: LeaseLockOptions): LockBackend & Guards => {
  const { config, identity, sql } = options
  const table = tableName(config.schema)
  const leases = leasesTableName(config.schema)
  const write = identity.writeLock
  const own = identity.ownershipLock
  const leaseMs = Math.trunc(config.leaseDurationMs)
  const tryAcquire: Effect.Effect<AttemptResult, LockBackendError> = SqlErrors.transaction(sql, Effect.gen(function*() {
    yield* boundTransaction(sql, config.lossDeadlineMs)
    yield* sql.unsafe("SELECT pg_advisory_xact_lock($1::int4, $2::int4)", [write.namespace, write.key])
    // One statement: take the stream only if no lease is live and no advisory holder has it, bump the epoch, and
    // write our lease. (The write lock above orders it against other acquisitions and guarded writes.)
    const taken = yield* sql.unsafe<{ epoch: string } & ServerInstance.Row>(
      `WITH free AS (
         SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM ${leases} WHERE stream_id = $1 AND lease_until > now())
           AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE ${advisoryLockGranted("$4", "$5")})
       ), bumped AS (
         INSERT INTO ${table} AS o (stream_id, epoch, mode, holder, holder_pid, holder_backend_start, acquired_at)
         SELECT $1, 1, 'lease', $2, NULL, NULL, clock_timestamp() FROM free
         ON CONFLICT (stream_id) DO UPDATE SET
           epoch = o.epoch + 1, mode = 'lease', holder = EXCLUDED.holder, holder_pid = NULL, holder_backend_start = NULL,
           acquired_at = clock_timestamp()
         RETURNING o.epoch
       )
       INSERT INTO ${leases} AS l (stream_id, holder, epoch, lease_until)
       SELECT $1, $2, epoch, now() + make_interval(secs => $3::float8 / 1000) FROM bumped
       ON CONFLICT (stream_id) DO UPDATE SET holder = EXCLUDED.holder, epoch = EXCLUDED.epoch, lease_until = EXCLUDED.lease_until
       RETURNING l.epoch::text AS epoch, ${ServerInstance.columns(options.systemIdReadable)}`,
      [config.streamId, config.instanceId, leaseMs, asOid(own.namespace), asOid(own.key)]
    )
    if (taken[0] !== undefined) return { _tag: "Acquired", held: { epoch: Number(taken[0].epoch), server: ServerInstance.fromRow(taken[0]) } } as const
    const [row] = yield* sql.unsafe<{ holder: string; epoch: string; since: string; held_ms: number }>(
      `SELECT holder, epoch::text AS epoch, acquired_at::text AS since,
              (extract(epoch FROM (now() - acquired_at)) * 1000)::float8 AS held_ms
         FROM ${table} WHERE stream_id = $1`,
      [config.streamId]
    )
    return {
      _tag: "Busy",
      holder: row && { holder: row.holder, epoch: Number(row.epoch), since: row.since, heldMs: Number(row.held_ms) }
    } as const
  })).pipe(Effect.mapError(backendError("acquire")))

  // The lease row only: a renewal never waits for guarded writes, which hold the ownership row FOR SHARE.
  // It says which server it ran on: through a pool that reconnected after a failover, the lease (replicated with the
  // database) is renewed on the promoted server, and the stream may then be read from there.
  const renew = (held: Held): Effect.Effect<CheckOutcome> =>
    sql.unsafe<{ epoch: string } & ServerInstance.Row>(
      `UPDATE ${leases} SET lease_until = now() + make_interval(secs => $4::float8 / 1000)
        WHERE stream_id = $1 AND holder = $2 AND epoch = $3::bigint AND lease_until > now()
        RETURNING epoch::text AS epoch, ${ServerInstance.columns(options.systemIdReadable)}`,
      [config.streamId, config.instanceId, held.epoch, leaseMs]
    ).pipe(
      Effect.map((rows): CheckOutcome =>
        rows.length === 1
          ? { _tag: "Confirmed", server: ServerInstance.fromRow(rows[0]!) }
          : { _tag: "NotHeld", detail: `the lease of stream ${config.streamId} with epoch ${held.epoch} has expired or was taken over` }
      ),
      Effect.catch((e): Effect.Effect<CheckOutcome> => Effect.succeed({ _tag: "Miss", detail: SqlErrors.describe(e) }))
    )

  // Expired, then announced (NOTIFY passes through poolers): a waiter woken by the notice finds the lease free.
  const release = (held: Held) =>
    Effect.ignore(sql.unsafe(
      ReleaseNotice.announcing(
        `UPDATE ${leases} SET lease_until = now()
          WHERE stream_id = $1 AND holder = $2 AND epoch = $3::bigint AND lease_until > now() RETURNING 1`,
        4
      ),
      [config.streamId, config.instanceId, held.epoch, ReleaseNotice.channel, ReleaseNotice.payload(config)]
    ))

  const session: LockSession = {
    tryAcquire,
    check: renew,
    release,
    breakHolder: () => Effect.succeed(false), // a lease expires by itself
    ...(options.noticeUrl === undefined ? {} : { releases: ReleaseNotice.listenDirect(options.noticeUrl, config) })
  }

  // The proof: the ownership row names us with our epoch, and our lease with that epoch is unexpired.
  const proof: Proof = (held, rowLock) =>
    Effect.gen(function*() {
      const rows = yield* sql.unsafe<{ epoch: string }>(
        `SELECT o.epoch::text AS epoch FROM ${table} o
          WHERE o.stream_id = $1 AND o.holder = $2 AND o.epoch = $3::bigint AND o.mode = 'lease'
            AND EXISTS (SELECT 1 FROM ${leases} l
                         WHERE l.stream_id = o.stream_id AND l.holder = o.holder AND l.epoch = o.epoch AND l.lease_until > now())
          ${rowLock}`,
        [config.streamId, config.instanceId, held.epoch]
      )
      if (rows.length > 0) return
      const [found] = yield* sql.unsafe<{ epoch: string; holder: string; lease_until: string | null }>(
        `SELECT o.epoch::text AS epoch, o.holder, l.lease_until::text AS lease_until
           FROM ${table} o LEFT JOIN ${leases} l ON l.stream_id = o.stream_id WHERE o.stream_id = $1`, [config.streamId])
      return yield* new OwnershipLost({
        streamId: config.streamId,
        epoch: held.epoch,
        message: `guarded write refused: this instance (epoch ${held.epoch}) no longer holds the lease of stream ${config.streamId}`,
        found: found === undefined ? "no lease row" : `epoch ${found.epoch} held by ${found.holder} until ${found.lease_until ?? "-"}`
      })
    })

  return { mode: "lease", open: Effect.succeed(session), ...makeGuards(sql, config.lossDeadlineMs, write, proof) }
}
