/**
 * StreamProgram: one stream as `slotkeeper run` runs it — its sink, its ownership, and its slot, publication and
 * replication as the owner's work — prepared from a checked `RunConfig`, then run until interrupted. `run` and
 * `fleet` (one per stream of the fleet placed on this runner) both run streams through it, so a stream in a fleet is
 * owned, fenced and delivered exactly as a stream run alone.
 *
 * **Details**
 * - `prepare` opens the sink (a file that cannot be opened is bad input: `ConfigInvalid`, before any database is
 *   touched) and sets up what the stream reports; `snapshot` is what `/health` and `/metrics` show, from the start.
 * - `run` competes for ownership and streams while it holds it; what the server refuses for good (a table, a filter, a
 *   replication connection) is `ConfigInvalid` with the option to change.
 */
import { Delivery, PublicationManager, SchemaTables, SharedPools, ReplicationStream, SessionSecurity, SinkDelivery, SlotManager, StreamMetrics, StreamOwnership, type StreamStatus, type Subscription } from "@slotkeeper/core"
import { Effect, Layer, Logger, Redacted, SubscriptionRef } from "effect"
import * as RunConfig from "../config/RunConfig.ts"

/** What the stream's parts report, gathered for `/health` and `/metrics` (starting until ownership is set up). */
export interface Reporting {
  /** While the server cannot be reached yet: why, and how many attempts. */
  readonly waiting: SubscriptionRef.SubscriptionRef<{ readonly reason: string; readonly attempts: number } | undefined>
  /** The instance's sessions and their encryption, refreshed while it runs. */
  readonly sessions: SubscriptionRef.SubscriptionRef<ReadonlyArray<SessionSecurity.Session>>
  readonly slotState: SlotManager.SlotManagerState
  readonly publicationStatus: SubscriptionRef.SubscriptionRef<PublicationManager.PublicationStatus>
  readonly capture: SubscriptionRef.SubscriptionRef<Delivery.Capture | undefined>
  /** Tables of the stream's schemas left out of the publication, with why (`SchemaTables`). */
  readonly unpublished: SubscriptionRef.SubscriptionRef<ReadonlyArray<SchemaTables.Skipped>>
}

const snapshotOf = (config: RunConfig.RunConfig, reporting: Reporting, owned: () => StreamOwnership.StreamOwnership["Service"] | undefined, sink: SinkDelivery.SinkDelivery) =>
  Effect.gen(function*() {
    const current = owned()
    const slot = yield* SubscriptionRef.get(reporting.slotState.slot)
    return {
      streamId: config.streamId,
      status: current === undefined ? { _tag: "Starting" } as const : yield* SubscriptionRef.get(current.supervisor.status),
      capture: yield* SubscriptionRef.get(reporting.capture),
      failoverReady: yield* SubscriptionRef.get(reporting.slotState.failoverReady),
      slotName: slot?.slotName,
      slot: yield* SubscriptionRef.get(reporting.slotState.status),
      acknowledgedLsn: sink.acknowledged(),
      publicationProblems: (yield* SubscriptionRef.get(reporting.publicationStatus)).drift,
      waiting: yield* SubscriptionRef.get(reporting.waiting),
      sessions: yield* SubscriptionRef.get(reporting.sessions),
      unpublished: yield* SubscriptionRef.get(reporting.unpublished)
    } satisfies StreamStatus.Snapshot
  })

/** The option a URL of the core's came from. */
const urlOption = (url: "url" | "replicationUrl") => (url === "url" ? "database-url" : "replication-url")

/**
 * Ownership, with the server and every table admitted first: what PostgreSQL refuses is bad input (exit 2), and so is
 * a server that refuses the connection for good (a wrong password, no REPLICATION, TLS that does not verify, a pooler
 * on the replication connection). A server that cannot be reached yet is waited for (`--startup-timeout`).
 */
const own = (config: RunConfig.RunConfig, url: Redacted.Redacted, subscriptions: ReadonlyArray<Subscription.Subscription>, reporting: Reporting, pools: SharedPools.SharedPools["Service"] | undefined) =>
  StreamOwnership.make({
    pools,
    streamId: config.streamId,
    instanceId: config.instanceId,
    url,
    ...(config.replicationUrl === undefined ? {} : { replicationUrl: Redacted.make(config.replicationUrl) }),
    startupTimeout: config.startupTimeoutMs,
    onWaiting: (w) => Effect.andThen(SubscriptionRef.set(reporting.waiting, { reason: w.reason, attempts: w.attempt }), StreamMetrics.startupAttempt(config.streamId)),
    mode: config.lock,
    admit: { subscriptions, publishes: config.publishes, viaRoot: config.publishViaPartitionRoot, generatedColumns: config.generatedColumns },
    ...config.ownership
  }).pipe(
    Effect.tap(() => SubscriptionRef.set(reporting.waiting, undefined)),
    // the options were checked already: what is left is the server not keeping a setting they need
    Effect.catchTags({
      OwnershipConfigError: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "server-release-bound", message: `--server-release-bound: ${e.message}` })),
      PreflightRefused: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "database-url", message: `--database-url: ${e.check}: ${e.message}` })),
      SubscriptionInvalid: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` })),
      ServerRefused: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: urlOption(e.url), message: `--${urlOption(e.url)}: ${e.message}` })),
      ConnectionSpecInvalid: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "database-url", message: `--database-url: ${e.message}` }))
    })
  )

/** The stream as a layer: slot, publication and replication as the owner's work, each connection into the sink. */
const streamLayer = (
  config: RunConfig.RunConfig,
  url: Redacted.Redacted,
  owned: StreamOwnership.StreamOwnership["Service"],
  subscriptions: ReadonlyArray<Subscription.Subscription>,
  reporting: Reporting,
  sink: SinkDelivery.SinkDelivery
) =>
  Delivery.layer({
    url,
    ...(config.replicationUrl === undefined ? {} : { replicationUrl: Redacted.make(config.replicationUrl) }),
    streamId: config.streamId,
    instanceId: config.instanceId,
    sql: owned.sql,
    slotPrefix: owned.identity.slotPrefix,
    schema: owned.config.schema,
    publication: owned.identity.publicationName,
    mode: config.slotMode,
    ...reporting,
    onSlotLost: config.onSlotLost,
    standbys: config.standbyUrls.map((u) => Redacted.make(u)),
    ...(config.walHeartbeatIntervalMs === undefined ? {} : { heartbeatInterval: config.walHeartbeatIntervalMs }),
    subscriptions,
    schemas: config.schemas,
    publishes: config.publishes,
    viaRoot: config.publishViaPartitionRoot,
    generatedColumns: config.generatedColumns,
    // backfills (`slotkeeper backfill`, `--snapshot initial`) run inside the stream
    backfill: { chunkSize: config.chunkSize, ...(config.snapshot === "initial" ? { initial: "publication" as const } : {}) },
    // a file is also the position's store, opened (and locked) for each holding period
    ...(sink.checkpoint === undefined ? {} : { checkpoint: sink.checkpoint })
  }, sink.consume).pipe(Layer.provide(Layer.succeed(StreamOwnership.StreamOwnership, owned)))


/**
 * Prepares `config`'s stream on `url` with `tables` (the sink opened, its reporting set up); `run` runs it until
 * interrupted.
 */
export const prepare = (
  config: RunConfig.RunConfig,
  url: string,
  tables: ReadonlyArray<RunConfig.TableSpec>,
  options?: {
    /** The connection pools the streams of a fleet share, one per database (`SharedPools`); without, a pool its own. */
    readonly pools?: SharedPools.SharedPools["Service"] | undefined
  }
) =>
  Effect.gen(function*() {
    const redacted = Redacted.make(url)
    // the configured tables are the whole set: ones a previous configuration had are removed from the publication
    const subscriptions = tables.map((t) => ({ ...t, id: `${t.schema}.${t.name}`, table: { schema: t.schema, name: t.name } }))
    // the sink (a file is opened here: one that cannot be is bad input, found before the database is touched)
    const sink = yield* SinkDelivery.make(config.streamId, config.sink._tag === "Http" ? { ...config.sink, onRejected: config.onSinkRejected } : config.sink).pipe(
      Effect.mapError((e) => new RunConfig.ConfigInvalid({ option: "sink", message: `--sink: ${e.message}` }))
    )
    const reporting: Reporting = {
      waiting: yield* SubscriptionRef.make<{ readonly reason: string; readonly attempts: number } | undefined>(undefined),
      sessions: yield* SubscriptionRef.make<ReadonlyArray<SessionSecurity.Session>>([]),
      slotState: yield* SlotManager.makeState,
      publicationStatus: yield* SubscriptionRef.make(PublicationManager.initialStatus),
      capture: yield* SubscriptionRef.make<Delivery.Capture | undefined>(undefined),
      unpublished: yield* SubscriptionRef.make<ReadonlyArray<SchemaTables.Skipped>>([])
    }
    yield* StreamMetrics.register(config.streamId)
    let owned: StreamOwnership.StreamOwnership["Service"] | undefined
    const snapshot = snapshotOf(config, reporting, () => owned, sink)
    const run = Effect.gen(function*() {
      owned = yield* own(config, redacted, subscriptions, reporting, options?.pools)
      const ownedNow = owned
      // which sessions are encrypted, by the server's account (pg_stat_ssl): for /health, /metrics and the log
      const sql = owned.sql
      yield* Effect.forkScoped(Effect.forever(Effect.andThen(
        SessionSecurity.read(sql, config.streamId, config.instanceId, ownedNow.poolApplicationName).pipe(Effect.flatMap((found) => SubscriptionRef.set(reporting.sessions, found)), Effect.ignore),
        Effect.sleep("10 seconds")
      )))
      yield* Effect.logInfo(`stream ${config.streamId}: instance ${config.instanceId} competing for ownership (${config.lock} lock) of ${tables.map((t) => `${t.schema}.${t.name}`).join(", ")}`)
      return yield* Layer.launch(streamLayer(config, redacted, ownedNow, subscriptions, reporting, sink)).pipe(
        // warnings and errors of the stream, counted for /metrics
        Effect.provide(Logger.layer([StreamMetrics.countErrors(config.streamId)], { mergeWithExisting: true })),
        // a table the server refuses (missing, a filter it rejects, no replica identity for it) is bad input: exit 2
        Effect.catchTag("SubscriptionInvalid", (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` }))),
        // ... and so is a set of tables whose publication would make PostgreSQL refuse the application's writes
        Effect.catchTag("WritesWouldBreak", (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` }))),
        // ... and a replication connection the server refuses for good (its privilege, pg_hba.conf, a pooler, TLS)
        Effect.catchIf(
          (e): e is ReplicationStream.ReplicationError => e instanceof ReplicationStream.ReplicationError && e.reason === "Refused",
          (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: config.replicationUrl === undefined ? "database-url" : "replication-url", message: `--${config.replicationUrl === undefined ? "database-url" : "replication-url"}: ${e.message}` }))
        )
      )
    })
    return { snapshot, run }

  })
