/**
 * StreamOwnership: everything needed to own one stream, assembled — configuration checked, a connection pool for
 * guarded writes, the server checked, slotkeeper's ownership table ready, and a `Supervisor` over the chosen lock.
 *
 * Nothing is changed in the database before the configuration has been validated. A database that cannot be reached
 * yet (refused, starting up, shutting down) is waited for, with a capped backoff and a warning now and then; a server
 * too old for the lock mode, a standby, a server that does not keep the lock session's bounds, or a role that may not
 * create the ownership table is an error that says what to change. Every session it opens is tagged `slotkeeper:<stream>:<instance>:<role>`.
 *
 * With `admit`, the rest of what the stream needs — the server's settings and every subscription, validated by
 * PostgreSQL (`Preflight.admit`) — is checked too before anything is created (the ownership table, the epoch), and a
 * refusal is a typed error (`PreflightRefused`, `SubscriptionInvalid`): bad input leaves the database as it was.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, type Redacted, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as Bounded from "../internal/bounded.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Preflight from "../Preflight.ts"
import type { SubscriptionInvalid } from "../publication/Subscription.ts"
import * as SessionSettings from "../SessionSettings.ts"
import * as StreamId from "../StreamId.ts"
import * as AdvisoryLock from "./AdvisoryLock.ts"
import * as LeaseLock from "./LeaseLock.ts"
import * as OwnershipConfig from "./OwnershipConfig.ts"
import * as OwnershipTable from "./OwnershipTable.ts"
import * as ServerInstance from "./ServerInstance.ts"
import * as Supervisor from "./Supervisor.ts"
import * as Retry from "../internal/retry.ts"

export interface StreamOwnershipOptions extends OwnershipConfig.OwnershipOptions {
  /** The database to own the stream in. Never logged. */
  readonly url: Redacted.Redacted
  /** Checked before anything is created (see the summary); the publication's name is the stream's. */
  readonly admit?: Omit<Preflight.AdmitOptions, "lock" | "publication"> | undefined
}

/** Everything needed to own one stream (the `StreamOwnership` service's shape; `make` builds it). */
interface StreamOwnershipShape {
  readonly config: OwnershipConfig.OwnershipConfig
  readonly identity: StreamId.StreamIdentity
  readonly supervisor: Supervisor.Supervisor
  /** The pool guarded writes run on (also usable for reads that need no ownership). */
  readonly sql: SqlClient.SqlClient
  /**
   * When this instance started, by the database's clock (microseconds since the Unix epoch, as text): which of two
   * differently configured instances is the newer (see `Configuration`), whatever the hosts' clocks say.
   */
  readonly startedAt: string
}

export type StreamOwnershipError =
  | OwnershipConfig.OwnershipConfigError
  | StreamId.InvalidStreamId
  | StreamId.InvalidInstanceId
  | OwnershipTable.OwnershipSetupError
  | Preflight.PreflightRefused
  | SubscriptionInvalid

// 200 ms, 400 ms, ... at most 5 s apart.
const setupRetry = Retry.transient

/**
 * Everything needed to own `options.streamId`, for the life of the scope: the checked configuration, the stream's
 * identity (publication and slot names, lock keys), a pool for guarded writes, slotkeeper's tables in the server,
 * and a `Supervisor` over the lock of `options.mode`. It does not compete yet: `supervisor.run` does.
 *
 * **When to use**: the first thing an app that owns a stream builds (or `layer`, to compose it as a layer).
 *
 * **Details**
 * - Order: the configuration (`OwnershipConfig`), then the server (reachable, a primary, recent enough for the
 *   mode, keeping the lock session's `idle_session_timeout`), then `admit` (the server's settings and every
 *   subscription, by PostgreSQL itself), and only then `OwnershipTable.ensure` creates or upgrades slotkeeper's
 *   tables in `schema`.
 * - A server that cannot be reached yet (refused, starting up, shutting down) is waited for with `Retry.transient`,
 *   with a warning every 12 attempts: a pod started during a failover waits instead of crash-looping.
 *
 * **Gotchas**
 * - Every other error is final and says what to change: `OwnershipConfigError` (a timing rule, or a server that
 *   overrides `idle_session_timeout`), `OwnershipSetupError` (a standby, a server too old for advisory mode, a
 *   role that may not create the tables), `PreflightRefused` and `SubscriptionInvalid` (with `admit`).
 * - Without `admit`, a table that does not exist is found later, by the publication's own validation, after
 *   slotkeeper's tables exist and the epoch was taken.
 */
export const make = (options: StreamOwnershipOptions): Effect.Effect<StreamOwnership["Service"], StreamOwnershipError, Scope.Scope> =>
  Effect.gen(function*() {
    const config = yield* Effect.fromResult(OwnershipConfig.make(options))

    // closed at the end within the detection deadline, even with a query stuck on a dead connection (`Bounded`)
    const pool = yield* Bounded.buildClosingWithin(PgClient.layer({
      url: options.url,
      applicationName: StreamId.applicationName(config.streamId, config.instanceId, "guard"),
      maxConnections: 4,
      startupParameters: SessionSettings.startupParameters,
      connectTimeout: `${config.lossDeadlineMs} millis`
    }), config.lossDeadlineMs, `stream ${config.streamId}: the connection pool`).pipe(Effect.mapError((e) => new OwnershipTable.OwnershipSetupError({ message: `cannot create a connection pool: ${SqlErrors.describe(e)}`, cause: e })))
    const sql = Context.get(pool, SqlClient.SqlClient)

    // What the server must be, and slotkeeper's tables. A server that is not reachable yet (refused, starting up,
    // shutting down: a failover or a restart under way) is waited for — a pod started meanwhile must not crash-loop.
    const setup = Effect.gen(function*() {
      const [server] = yield* sql.unsafe<{ db: string; version: number; recovery: boolean; started_at: string }>(
        `SELECT current_database() AS db, current_setting('server_version_num')::int AS version, pg_is_in_recovery() AS recovery,
                (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS started_at`
      ).pipe(Effect.mapError((e) =>
        new OwnershipTable.OwnershipSetupError({
          message: `cannot reach the database: ${SqlErrors.describe(e)}. Check the database URL (host, port, database, user, ` +
            `password) and that the server accepts connections`,
          retryable: SqlErrors.isRetryable(e),
          cause: e
        })
      ))
      if (server === undefined) return yield* new OwnershipTable.OwnershipSetupError({ message: "the database returned no row for a trivial query" })
      if (server.recovery) {
        return yield* new OwnershipTable.OwnershipSetupError({
          message: `database ${server.db} is a standby (in recovery): ownership and replication need the primary; point the database URL at it`
        })
      }
      if (config.mode === "advisory" && server.version < 140000) {
        return yield* new OwnershipTable.OwnershipSetupError({
          message: `advisory mode needs PostgreSQL 14+ (idle_session_timeout bounds how long the server keeps an unreachable ` +
            `holder's lock); this server is ${server.version}. Upgrade, or use lease mode`
        })
      }
      if (config.mode === "advisory") {
        // the release bound must hold on the lock session: checked before anything is created
        yield* AdvisoryLock.checkServerBound(options.url, config).pipe(
          Effect.catchTag("LockBackendError", (e) => Effect.fail(new OwnershipTable.OwnershipSetupError({ message: e.message, retryable: e.retryable })))
        )
      }
      if (options.admit !== undefined) {
        yield* Preflight.admit(sql, { ...options.admit, lock: config.mode, publication: StreamId.identity(server.db, config.streamId).publicationName }).pipe(
          Effect.catchTags({
            // a lock held by another transaction on a table, or the connection: may pass
            PublicationError: (e) => Effect.fail(new OwnershipTable.OwnershipSetupError({ message: e.message, retryable: e.retryable === true || e.reason === "LockTimeout" })),
            SqlError: (e) => Effect.fail(new OwnershipTable.OwnershipSetupError({ message: `checking the server: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e), cause: e }))
          })
        )
      }
      yield* OwnershipTable.ensure(sql, config.schema)
      const systemIdReadable = yield* ServerInstance.canReadSystemId(sql).pipe(Effect.mapError((e) =>
        new OwnershipTable.OwnershipSetupError({ message: `cannot read the server's identity: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e), cause: e })
      ))
      return { server, systemIdReadable }
    })
    let attempts = 0
    const { server, systemIdReadable } = yield* setup.pipe(
      Effect.tapError((e) =>
        e._tag === "OwnershipSetupError" && e.retryable === true && attempts++ % 12 === 0
          ? Effect.logWarning(`stream ${config.streamId}: ${e.message}; waiting for the server (attempt ${attempts})`)
          : Effect.void
      ),
      Effect.retry({ while: (e) => e._tag === "OwnershipSetupError" && e.retryable === true, schedule: setupRetry })
    )

    const identity = StreamId.identity(server.db, config.streamId)
    const backend = config.mode === "advisory"
      ? AdvisoryLock.make({ url: options.url, config, identity, sql, systemIdReadable })
      : LeaseLock.make({ config, identity, sql, systemIdReadable })
    const supervisor = yield* Supervisor.make(config, backend, backend)
    return { config, identity, supervisor, sql, startedAt: server.started_at }
  })

/** The stream's ownership as a service, for apps that compose it as a layer. */
export class StreamOwnership extends Context.Service<StreamOwnership, StreamOwnershipShape>()("@slotkeeper/core/StreamOwnership") {}

/** `make` as a scoped layer: the pool and the supervisor live as long as the layer. */
export const layer = (options: StreamOwnershipOptions): Layer.Layer<StreamOwnership, StreamOwnershipError> =>
  Layer.effect(StreamOwnership, make(options))
