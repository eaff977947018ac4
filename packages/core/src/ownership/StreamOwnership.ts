/**
 * StreamOwnership: everything needed to own one stream, assembled — configuration checked, a connection pool for
 * guarded writes, the server checked, slotkeeper's ownership table ready, and a `Supervisor` over the chosen lock.
 *
 * Nothing is changed in the database before the configuration has been validated. A database that cannot be reached
 * yet (refused, starting up, shutting down) is waited for, with a capped backoff and a warning now and then; a server
 * that refuses the connection for good (`ServerRefused`), too old for the lock mode, a standby, a server that does not
 * keep the lock session's bounds, or a role that may not create the ownership table is an error that says what to
 * change. Every session it opens is tagged `slotkeeper:<stream>:<instance>:<role>`.
 *
 * With `admit`, the rest of what the stream needs — the server's settings and every subscription, validated by
 * PostgreSQL (`Preflight.admit`) — is checked too before anything is created (the ownership table, the epoch), and a
 * refusal is a typed error (`PreflightRefused`, `SubscriptionInvalid`): bad input leaves the database as it was.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Redacted, Schema, type Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import * as ConnectFailure from "../connection/ConnectFailure.ts"
import type { ConnectionSpecInvalid } from "../connection/ConnectionSpec.ts"
import * as Connector from "../connection/Connector.ts"
import * as SharedPools from "../connection/SharedPools.ts"
import * as Bounded from "../internal/bounded.ts"
import * as ReplicationReach from "../connection/ReplicationReach.ts"
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
  /** The database to own the stream in, a connection string by libpq's rules (`ConnectionSpec`). Never logged. */
  readonly url: Redacted.Redacted
  /**
   * The replication connection's own URL (never logged), for SQL through a pooler or proxy that cannot carry the
   * replication protocol. It must reach the same server as `url`: checked here, before anything is created.
   */
  readonly replicationUrl?: Redacted.Redacted | undefined
  /**
   * How long to wait for a server that cannot be reached yet (milliseconds): `undefined` (the default) for ever,
   * `0` not at all (the first failure is final).
   */
  readonly startupTimeout?: number | undefined
  /** Told at every failed attempt to reach the server while waiting (for a status page, a metric). */
  readonly onWaiting?: ((waiting: Waiting) => Effect.Effect<void>) | undefined
  /** Checked before anything is created (see the summary); the publication's name is the stream's. */
  readonly admit?: Omit<Preflight.AdmitOptions, "lock" | "publication"> | undefined
  /**
   * Pools shared with the other streams of this process (a fleet): the stream's guarded writes and reads run on the
   * pool of its database there instead of a pool of its own (`SharedPools`). Its lock session and replication
   * connection stay its own.
   */
  readonly pools?: SharedPools.SharedPools["Service"] | undefined
}

/** Everything needed to own one stream (the `StreamOwnership` service's shape; `make` builds it). */
interface StreamOwnershipShape {
  readonly config: OwnershipConfig.OwnershipConfig
  readonly identity: StreamId.StreamIdentity
  readonly supervisor: Supervisor.Supervisor
  /** The pool guarded writes run on (also usable for reads that need no ownership). */
  readonly sql: SqlClient.SqlClient
  /** The `application_name` of `sql`'s sessions: the stream's own (`…:guard`), or the shared pools' (`SharedPools`). */
  readonly poolApplicationName: string
  /**
   * When this instance started, by the database's clock (microseconds since the Unix epoch, as text): which of two
   * differently configured instances is the newer (see `Configuration`), whatever the hosts' clocks say.
   */
  readonly startedAt: string
}

/** A failed attempt to reach the server, while waiting for it. */
export interface Waiting {
  readonly attempt: number
  readonly reason: string
}

/**
 * The server refused a connection for a reason no waiting fixes (a wrong password, a missing database or role, no
 * REPLICATION privilege, pg_hba.conf, a pooler on the replication connection, TLS that does not verify), or the two
 * URLs reach different database clusters. `url` says which URL to change; the message says how.
 */
export class ServerRefused extends Schema.TaggedError<ServerRefused>()("ServerRefused", {
  url: Schema.Literals(["url", "replicationUrl"]),
  reason: Schema.String,
  message: Schema.String
}) {}

export type StreamOwnershipError =
  | ServerRefused
  | ConnectionSpecInvalid
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
 * - Every session is made by libpq's rules from `url` (`Connector`): a bad connection string is a
 *   `ConnectionSpecInvalid` before anything connects.
 * - A server that cannot be reached yet (refused, timed out, a name not resolving, starting up, shutting down) is
 *   waited for with `Retry.transient`, with a warning every 12 attempts and `onWaiting` at each (for as long as
 *   `startupTimeout` allows): a pod started during a failover waits instead of crash-looping. A refusal no waiting
 *   fixes (`ConnectFailure`: password, role, database, REPLICATION, pg_hba.conf, a pooler, TLS) is a `ServerRefused`
 *   naming the URL to change.
 * - The replication connection is opened once before anything is created (`ReplicationReach`): it must open, and
 *   reach the server the SQL URL does (another cluster: `ServerRefused`; another server of the same cluster, as
 *   during a failover: waited for).
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

    const replicationUrl = options.replicationUrl ?? options.url
    const replicationOption = options.replicationUrl === undefined ? "url" as const : "replicationUrl" as const
    // the connection strings, by libpq's rules: a bad one is bad input, said before anything connects
    yield* Effect.fromResult(Connector.check(Redacted.value(options.url)))
    if (options.replicationUrl !== undefined) yield* Effect.fromResult(Connector.check(Redacted.value(options.replicationUrl)))

    // A failure to reach the server either may pass (refused, timed out, starting up: a failover or a restart under
    // way) and is waited for — a pod started meanwhile must not crash-loop — or is final and says what to change.
    const reach = (which: "url" | "replicationUrl", what: string) => (e: unknown) => {
      const c = ConnectFailure.classify(e)
      return c.permanent
        ? new ServerRefused({
          url: which,
          reason: c.reason,
          // a ConnectFailed says already which connection it was
          message: e instanceof ConnectFailure.ConnectFailed ? ConnectFailure.describe(c) : `${what}: ${ConnectFailure.describe(c)}`
        })
        : new OwnershipTable.OwnershipSetupError({
          message: `${what === "the database" ? "cannot reach the database" : `cannot open ${what}`}: ${c.message}. Check the ` +
            `${which === "url" ? "database" : "replication"} URL (host, port, database, user, password) and that the server accepts connections`,
          retryable: true,
          cause: e
        })
    }
    const startedWaiting = Date.now()
    let attempts = 0
    const waitingFor = <A, E>(step: Effect.Effect<A, E | OwnershipTable.OwnershipSetupError>) =>
      step.pipe(
        Effect.tapError((e) => {
          if (!isWaitable(e)) return Effect.void
          attempts++
          return Effect.andThen(
            options.onWaiting === undefined ? Effect.void : options.onWaiting({ attempt: attempts, reason: e.message }),
            attempts % 12 === 1 ? Effect.logWarning(`stream ${config.streamId}: ${e.message}; waiting for the server (attempt ${attempts})`) : Effect.void
          )
        }),
        Effect.retry({
          while: (e) => isWaitable(e) && (options.startupTimeout === undefined || Date.now() - startedWaiting < options.startupTimeout),
          schedule: setupRetry
        }),
        Effect.mapError((e) =>
          isWaitable(e) && options.startupTimeout !== undefined
            ? new OwnershipTable.OwnershipSetupError({ message: `${e.message} (gave up: the startup timeout of ${options.startupTimeout} ms passed)`, cause: e })
            : e
        )
      )

    // The pool's options (asking the server about TLS, for sslmode=prefer, is a connection too).
    const target = yield* waitingFor(Connector.sqlPg(options.url, config.lossDeadlineMs).pipe(
      Effect.mapError((e) => (e._tag === "ConnectionSpecInvalid" ? e : reach("url", "the database")(e)))
    ))
    // statements prepared on one server session are unknown to the next one a transaction pooler hands out: with a
    // separate replication URL, the SQL URL may be such a pooler (PgBouncer before 1.21)
    const prepare = options.replicationUrl === undefined
    const poolFailed = (e: SqlError) => new OwnershipTable.OwnershipSetupError({ message: `cannot create a connection pool: ${SqlErrors.describe(e)}`, cause: e })
    const ownPoolName = StreamId.applicationName(config.streamId, config.instanceId, "guard")
    const sql: SqlClient.SqlClient = options.pools !== undefined
      // the pool of this database shared with the process's other streams, held while the stream's scope is open
      ? yield* options.pools.acquire({ url: options.url, target, connectTimeoutMs: config.lossDeadlineMs, prepare }).pipe(Effect.mapError(poolFailed))
      // closed at the end within the detection deadline, even with a query stuck on a dead connection (`Bounded`)
      : Context.get(
        yield* Bounded.buildClosingWithin(PgClient.layer({
          connectTimeout: `${config.lossDeadlineMs} millis`,
          ...target,
          applicationName: ownPoolName,
          maxConnections: 4,
          startupParameters: SessionSettings.startupParameters,
          ...(prepare ? {} : { prepare: false })
        }), config.lossDeadlineMs, `stream ${config.streamId}: the connection pool`).pipe(Effect.mapError(poolFailed)),
        SqlClient.SqlClient
      )

    // What the server must be, and slotkeeper's tables.
    const setup = Effect.gen(function*() {
      const [server] = yield* sql.unsafe<{ db: string; version: number; recovery: boolean; started_at: string }>(
        `SELECT current_database() AS db, current_setting('server_version_num')::int AS version, pg_is_in_recovery() AS recovery,
                (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text AS started_at`
      ).pipe(Effect.mapError(reach("url", "the database")))
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
      const systemIdReadable = yield* ServerInstance.canReadSystemId(sql).pipe(Effect.mapError((e) =>
        new OwnershipTable.OwnershipSetupError({ message: `cannot read the server's identity: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e), cause: e })
      ))
      if (options.admit !== undefined) {
        yield* Preflight.admit(sql, { ...options.admit, lock: config.mode, publication: StreamId.identity(server.db, config.streamId).publicationName }).pipe(
          Effect.catchTags({
            // a lock held by another transaction on a table, or the connection: may pass
            PublicationError: (e) => Effect.fail(new OwnershipTable.OwnershipSetupError({ message: e.message, retryable: e.retryable === true || e.reason === "LockTimeout" })),
            SqlError: (e) => Effect.fail(new OwnershipTable.OwnershipSetupError({ message: `checking the server: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e), cause: e }))
          })
        )
      }
      // The replication connection: the role may replicate, pg_hba.conf lets it in, nothing between refuses the
      // protocol — and it reaches the server the SQL URL does. Found now (after
      // `admit`, whose role check says it best), not after this instance became the owner.
      yield* ReplicationReach.sameServer(sql, systemIdReadable, replicationUrl, StreamId.applicationName(config.streamId, config.instanceId, "admin")).pipe(
        Effect.mapError((e) =>
          e._tag === "Different"
            ? e.clusters
              ? new ServerRefused({ url: replicationOption, reason: "DifferentCluster", message: `the replication URL reaches another database cluster than the database URL (${e.message}): point both at the same primary` })
              : new OwnershipTable.OwnershipSetupError({ message: `the replication URL and the database URL reach different servers (${e.message}); a failover under way?`, retryable: true })
            : e._tag === "Replication"
            ? reach(replicationOption, "the replication connection")(e.cause)
            : reach("url", "the database")(e.cause)
        )
      )
      yield* OwnershipTable.ensure(sql, config.schema)
      return { server, systemIdReadable }
    })
    const { server, systemIdReadable } = yield* waitingFor(setup)

    const identity = StreamId.identity(server.db, config.streamId)
    const backend = config.mode === "advisory"
      ? AdvisoryLock.make({ url: options.url, config, identity, sql, systemIdReadable })
      // without a replication URL of its own, the URL serves replication too, so it reaches PostgreSQL directly (no
      // pooler can): LISTEN works there
      : LeaseLock.make({ config, identity, sql, systemIdReadable, noticeUrl: options.replicationUrl === undefined ? options.url : undefined })
    const supervisor = yield* Supervisor.make(config, backend, backend)
    return { config, identity, supervisor, sql, poolApplicationName: options.pools?.applicationName ?? ownPoolName, startedAt: server.started_at }
  })

const isWaitable = (e: unknown): e is OwnershipTable.OwnershipSetupError =>
  e instanceof OwnershipTable.OwnershipSetupError && e.retryable === true

/** The stream's ownership as a service, for apps that compose it as a layer. */
export class StreamOwnership extends Context.Service<StreamOwnership, StreamOwnershipShape>()("@slotkeeper/core/StreamOwnership") {}

/** `make` as a scoped layer: the pool and the supervisor live as long as the layer. */
export const layer = (options: StreamOwnershipOptions): Layer.Layer<StreamOwnership, StreamOwnershipError> =>
  Layer.effect(StreamOwnership, make(options))
