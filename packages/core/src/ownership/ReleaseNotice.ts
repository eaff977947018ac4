/**
 * ReleaseNotice: a holder that gives a stream up says so, and waiting instances try at once instead of at their next
 * poll.
 *
 * **What it guarantees**: nothing about safety — a notice only wakes a waiter early, and the waiter still acquires by
 * the backend's own statement (the lock, or the lease row under the write lock), exactly as a poll does. A notice that
 * is lost, late, duplicated or sent by anyone else costs at most one extra attempt; polling (`acquireInterval`) stays
 * the fallback and the only mechanism after an unclean loss, when nobody announces anything.
 *
 * **How**: a graceful release runs, in its own statement, `pg_notify('slotkeeper_release', '<schema>.<stream>')` (sent
 * when that statement commits, so after the release, and only if something was released). A waiter `LISTEN`s on a *direct* session while it competes: the
 * advisory lock session itself, or, in lease mode, a session of its own opened only when the SQL connection is known to
 * reach PostgreSQL directly (no `replicationUrl`: the same URL serves replication, which a pooler cannot). `LISTEN`
 * through PgBouncer in transaction mode is not supported, so lease mode behind a pooler polls.
 *
 * **How it fails**: a `LISTEN` that fails, a listening session that dies, or a notice sent through a pooler that
 * drops it: the waiter falls back to polling, silently (logged at debug level).
 */
import { PgConnection } from "@effect/sql-pg"
import { Effect, Queue, type Redacted, type Scope } from "effect"
import * as Connector from "../connection/Connector.ts"
import { applicationName } from "../StreamId.ts"
import type { OwnershipConfig } from "./OwnershipConfig.ts"

/** The channel every slotkeeper release is announced on; the payload names the stream. */
export const channel = "slotkeeper_release"

/** The payload naming a stream: schema-qualified, since streams of two schemas may share a database. */
export const payload = (config: Pick<OwnershipConfig, "schema" | "streamId">): string => `${config.schema}.${config.streamId}`

/**
 * `release` (a statement returning a row only when it released something) followed, in the same statement, by the
 * notice — sent when the statement commits, so after the release, and only when there was one. `channel` and
 * `payload` are the parameters numbered `first` and `first + 1`.
 */
export const announcing = (release: string, first: number): string =>
  `WITH released AS (${release}) SELECT pg_notify($${first}, $${first + 1}) FROM released LIMIT 1`

// Without notices a waiter polls: never a failure.
const pollingOnly = (cause: unknown): Effect.Effect<Effect.Effect<void>> =>
  Effect.as(Effect.logDebug("release notices unavailable; polling only", cause), Effect.never as Effect.Effect<void>)

/**
 * Listens on `conn` (a direct session, pinned for the scope) and returns an effect that completes at the next release
 * of this stream announced after the `LISTEN` — or never, when listening is not possible (then the waiter polls).
 */
export const listen = (
  conn: PgConnection.PgConnection,
  config: Pick<OwnershipConfig, "schema" | "streamId">
): Effect.Effect<Effect.Effect<void>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const wanted = payload(config)
    const queue = yield* conn.listen(channel)
    const next: Effect.Effect<void> = Effect.flatMap(Queue.take(queue), (n) => (n.payload === wanted ? Effect.void : next)).pipe(
      // a listening session that died: poll from now on
      Effect.catchCause(() => Effect.never)
    )
    return next
  }).pipe(Effect.catchCause(pollingOnly))

/**
 * A session of its own to listen on, for lease mode on a direct connection (see the module comment): opened in the
 * scope, closed with it. Never fails: without it the waiter polls.
 */
export const listenDirect = (
  url: Redacted.Redacted,
  config: Pick<OwnershipConfig, "schema" | "streamId" | "instanceId" | "lossDeadlineMs">
): Effect.Effect<Effect.Effect<void>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const target = yield* Connector.sqlPg(url, config.lossDeadlineMs)
    const conn = yield* PgConnection.make({
      connectTimeout: `${config.lossDeadlineMs} millis`,
      ...target,
      applicationName: applicationName(config.streamId, config.instanceId, "admin")
    })
    return yield* listen(yield* conn.pin, config)
  }).pipe(Effect.catchCause(pollingOnly))
