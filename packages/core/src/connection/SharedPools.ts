/**
 * SharedPools: one connection pool per database, shared by every stream of a process that uses that database — for a
 * fleet, where a runner owns dozens of streams in the same database and a pool each (up to 4 sessions) would make the
 * server's `max_connections`, not the runner, the limit.
 *
 * What is shared is only the pool of guarded writes and plain reads (`StreamOwnership`'s `sql`). Each stream keeps
 * its own lock session and its own replication connection: ownership is proven by the lock holder's backend pid and
 * the epoch inside each guarded transaction (`Fencing`), never by which pooled session runs it, so sharing the pool
 * changes no guarantee. A stream's lock session is its own so that one stream's loss is never another's.
 *
 * **Details**
 * - A pool is found by the connection string as given (the same text, the same pool), the connect timeout and whether
 *   statements are prepared; streams whose strings differ in any way get pools of their own.
 * - The first stream to ask builds the pool (in a fiber of the service's scope, so that a first caller interrupted
 *   meanwhile abandons nothing the others wait for); a pool that cannot be built fails every caller waiting for it
 *   and is forgotten, so the next attempt builds it again — a failure is never kept.
 * - The pool lives while a stream uses it: the last one to let go closes it, waiting at most `closeWithinMs` (a
 *   session stuck on a dead connection is left to close in the background, as `Bounded` does for a stream's own pool).
 * - Its sessions are named `slotkeeper:*:<instance>:guard` (`applicationName`): no stream's id is `*`.
 *
 * **Gotchas**: the streams of a database share `maxConnections` sessions (default 4, a stream's own pool's size: a
 * database with one stream costs no more than under `run`). What holds one longer than a guarded write's bound is
 * rare — creating a stream's persistent slot waits for transactions running at that moment — but while it waits, the
 * others have one session fewer: their guarded writes wait (ownership does not: it lives on each lock session).
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Duration, Effect, Exit, Layer, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import * as Bounded from "../internal/bounded.ts"
import * as SessionSettings from "../SessionSettings.ts"
import * as StreamId from "../StreamId.ts"
import type * as Connector from "./Connector.ts"

/** Where a pool connects: `Connector.sqlPg`'s answer for the stream's URL. */
export type Target = Effect.Success<ReturnType<typeof Connector.sqlPg>>

export interface PoolRequest {
  /** The stream's database URL: the pool's identity (its text, never logged). */
  readonly url: Redacted.Redacted
  readonly target: Target
  /** Bounds connecting (and closing) the pool's sessions. */
  readonly connectTimeoutMs: number
  /** `false` through a transaction pooler (statements prepared on one session are unknown to the next). */
  readonly prepare: boolean
}

interface SharedPoolsShape {
  /** The pool for `request`, built by the first caller, held until the caller's scope closes. */
  readonly acquire: (request: PoolRequest) => Effect.Effect<SqlClient.SqlClient, SqlError, Scope.Scope>
  /** The `application_name` of every pooled session. */
  readonly applicationName: string
  /** How many pools are open now, and how many streams use each (for tests and `/metrics`). */
  readonly open: Effect.Effect<ReadonlyArray<number>>
}

export class SharedPools extends Context.Service<SharedPools, SharedPoolsShape>()("@slotkeeper/core/SharedPools") {}

export interface SharedPoolsOptions {
  /** This process's instance id, in the sessions' names. */
  readonly instanceId: string
  /** Sessions per pool, shared by the streams of one database (default 4, as a stream's own pool). */
  readonly maxConnections?: number | undefined
}

interface Entry {
  users: number
  readonly ready: Deferred.Deferred<SqlClient.SqlClient, SqlError>
  readonly scope: Scope.Closeable
  readonly closeWithinMs: number
}

/** The `application_name` of the pooled sessions of `instanceId`. */
export const applicationName = (instanceId: string): string => StreamId.applicationName("*", instanceId, "guard")

/** The pools, for the life of the scope; any still open when it closes are closed with it. */
export const make = (options: SharedPoolsOptions): Effect.Effect<SharedPools["Service"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const name = applicationName(options.instanceId)
    const maxConnections = options.maxConnections ?? 4
    const entries = new Map<string, Entry>()
    const serviceScope = yield* Effect.scope

    // closed within its bound; what does not close in time is left to close in the background
    const close = (entry: Entry) =>
      Effect.gen(function*() {
        const closing = yield* Effect.forkDetach(Scope.close(entry.scope, Exit.void), { startImmediately: true })
        if (!(yield* Bounded.awaitAtMost(closing, entry.closeWithinMs))) {
          yield* Effect.logWarning(`a shared connection pool did not close within ${entry.closeWithinMs} ms (a connection is stuck); leaving it to close in the background`)
        }
      })

    yield* Effect.addFinalizer(() =>
      Effect.forEach([...entries.values()], (entry) => close(entry), { concurrency: "unbounded", discard: true }).pipe(
        Effect.andThen(Effect.sync(() => entries.clear()))
      )
    )

    const release = (key: string, entry: Entry) =>
      Effect.suspend(() => {
        entry.users--
        // the last user closes it; an entry already forgotten (its build failed) has nothing left to close
        if (entry.users > 0 || entries.get(key) !== entry) return Effect.void
        entries.delete(key)
        return close(entry)
      })

    const build = (key: string, entry: Entry, request: PoolRequest) =>
      Layer.buildWithScope(PgClient.layer({
        connectTimeout: Duration.millis(request.connectTimeoutMs),
        ...request.target,
        applicationName: name,
        maxConnections,
        startupParameters: SessionSettings.startupParameters,
        ...(request.prepare ? {} : { prepare: false })
      }), entry.scope).pipe(
        Effect.map((context) => Context.get(context, SqlClient.SqlClient)),
        Effect.onExit((exit) =>
          Effect.gen(function*() {
            if (Exit.isFailure(exit)) {
              // forgotten, so that the next attempt builds it again
              if (entries.get(key) === entry) entries.delete(key)
              yield* Scope.close(entry.scope, Exit.void)
            }
            yield* Deferred.done(entry.ready, exit)
          })
        )
      )

    const acquire = (request: PoolRequest) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const key = JSON.stringify([Redacted.value(request.url), request.connectTimeoutMs, request.prepare])
          let entry = entries.get(key)
          if (entry === undefined) {
            const created: Entry = { users: 0, ready: Deferred.makeUnsafe(), scope: Scope.makeUnsafe(), closeWithinMs: request.connectTimeoutMs }
            entries.set(key, created)
            yield* Effect.forkIn(build(key, created, request), serviceScope, { startImmediately: true, uninterruptible: false })
            entry = created
          }
          const held = entry
          held.users++
          yield* Effect.addFinalizer(() => release(key, held))
          return yield* restore(Deferred.await(held.ready))
        })
      )

    return {
      acquire,
      applicationName: name,
      open: Effect.sync(() => [...entries.values()].map((e) => e.users))
    }
  })

/** `make` as a layer. */
export const layer = (options: SharedPoolsOptions): Layer.Layer<SharedPools> => Layer.effect(SharedPools, make(options))
