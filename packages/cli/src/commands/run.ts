/**
 * `slotkeeper run`: own a replication stream and write its changes to a sink, for as long as it runs.
 *
 * With no `--database-url` it starts the embedded PostgreSQL (and, with no `--table` either, a small demo table that
 * gets a row every second), so that a newcomer sees changes flowing at once. Options are checked before anything
 * touches a database: a bad one exits 2 with one line that names it. SIGTERM/SIGINT drain and release ownership, then
 * exit 0. Logs go to stderr; the changes (NDJSON) to the sink.
 */
import { readFileSync } from "node:fs"
import { Delivery, PublicationManager, Redact, ReplicationStream, SessionSecurity, SinkDelivery, SlotManager, StreamMetrics, StreamOwnership, type StreamStatus, type Subscription } from "@slotkeeper/core"
import { Config, Effect, Layer, Logger, Option, Redacted, SubscriptionRef } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as Embedded from "../config/Embedded.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import * as HealthServer from "../http/HealthServer.ts"

/** The flags, each made from its entry in `RunOptions` (name, environment variable, help); defaults are `RunConfig`'s. */
export const runFlags = {
  databaseUrl: RunOptions.flag("databaseUrl"),
  replicationUrl: RunOptions.flag("replicationUrl"),
  startupTimeout: RunOptions.flag("startupTimeout"),
  streamId: RunOptions.flag("streamId"),
  schema: RunOptions.flag("schema"),
  tables: RunOptions.listFlag("tables"),
  config: RunOptions.flag("config"),
  lock: RunOptions.flag("lock"),
  slotMode: RunOptions.flag("slotMode"),
  instanceId: RunOptions.flag("instanceId"),
  sink: RunOptions.flag("sink"),
  httpPort: RunOptions.intFlag("httpPort"),
  acquireInterval: RunOptions.flag("acquireInterval"),
  heartbeatInterval: RunOptions.flag("heartbeatInterval"),
  lossDeadline: RunOptions.flag("lossDeadline"),
  serverReleaseBound: RunOptions.flag("serverReleaseBound"),
  leaseDuration: RunOptions.flag("leaseDuration"),
  renewInterval: RunOptions.flag("renewInterval"),
  onLoss: RunOptions.flag("onLoss"),
  walHeartbeatInterval: RunOptions.flag("walHeartbeatInterval"),
  onSlotLost: RunOptions.flag("onSlotLost"),
  onSinkRejected: RunOptions.flag("onSinkRejected"),
  snapshot: RunOptions.flag("snapshot"),
  chunkSize: RunOptions.intFlag("chunkSize"),
  standbyUrls: RunOptions.listFlag("standbyUrls")
}

const demoSchema = "slotkeeper_demo"

/** The demo for a newcomer: a table in the embedded database that gets a row every second. */
const demo = (url: string) =>
  Effect.gen(function*() {
    const sql = yield* Database.client(url, "slotkeeper-demo")
    yield* sql.unsafe(`CREATE SCHEMA IF NOT EXISTS ${demoSchema}`)
    yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${demoSchema}.ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), note text)`)
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(
      Effect.sleep("1 second"),
      sql.unsafe(`INSERT INTO ${demoSchema}.ticks (note) VALUES ('written by the slotkeeper demo')`).pipe(Effect.ignore)
    )))
  })

/**
 * The options as given: flags and environment (each `runFlags` key is the `RunInput` option of the same name), then
 * the `--config` file.
 */
const input = (flags: { readonly [K in keyof typeof runFlags]: typeof runFlags[K] extends Flag.Flag<infer A> ? A : never }) =>
  Effect.gen(function*() {
    const { config, standbyUrls, tables, ...options } = flags
    const fromFlags: RunConfig.RunInput = {
      ...Object.fromEntries(Object.entries(options).map(([key, value]) => [key, Option.getOrUndefined(value as Option.Option<unknown>)])),
      // --table, else SLOTKEEPER_TABLES (comma-separated, commas inside a filter kept)
      tables: tables.length > 0 ? tables : RunOptions.listFromEnv("tables", process.env, RunConfig.splitTables),
      // --standby-url, else SLOTKEEPER_STANDBY_URLS (comma-separated)
      standbyUrls: standbyUrls.length > 0 ? standbyUrls : RunOptions.listFromEnv("standbyUrls", process.env)
    }
    if (Option.isNone(config)) return fromFlags
    const path = config.value
    const text = yield* Effect.try({
      try: () => readFileSync(path, "utf8"),
      catch: (e) => new RunConfig.ConfigInvalid({ option: "config", message: `--config: cannot read ${path}: ${(e as Error).message}` })
    })
    return RunConfig.merge(fromFlags, yield* Effect.fromResult(RunConfig.fromFile(path, text)))
  })

/** The database: the one given, or the embedded one — with the demo table when no table is given either. */
const database = (config: RunConfig.RunConfig) =>
  Effect.gen(function*() {
    if (config.databaseUrl !== undefined) return { url: config.databaseUrl, tables: config.tables }
    // libpq's environment alone names a server (PGHOST, with PGPORT, PGUSER, PGPASSWORD, ...)
    if (process.env.PGHOST !== undefined && process.env.PGHOST !== "") return { url: "", tables: config.tables }
    // the same folder and port as `slotkeeper embedded` (its environment variables)
    const dir = yield* Config.option(Config.String("SLOTKEEPER_EMBEDDED_DIR"))
    const port = yield* Config.option(Config.Port("SLOTKEEPER_EMBEDDED_PORT")).pipe(
      Effect.mapError(() => new RunConfig.ConfigInvalid({ option: "SLOTKEEPER_EMBEDDED_PORT", message: `SLOTKEEPER_EMBEDDED_PORT: not a TCP port: use 1..65535` }))
    )
    const pg = yield* Embedded.start("--database-url", { dir: Option.getOrUndefined(dir), port: Option.getOrUndefined(port) })
    yield* Effect.logInfo(`no --database-url: streaming from the embedded PostgreSQL ${pg.install.version} at ${Redact.url(pg.url)}`)
    if (config.tables.length > 0) return { url: pg.url, tables: config.tables }
    yield* demo(pg.url)
    yield* Effect.logInfo(`no --table: streaming the demo table ${demoSchema}.ticks, which gets a row every second`)
    return { url: pg.url, tables: [{ schema: demoSchema, name: "ticks" }] as ReadonlyArray<RunConfig.TableSpec> }
  })

/** What the stream's parts report, gathered for `/health` and `/metrics` (starting until ownership is set up). */
interface Reporting {
  /** While the server cannot be reached yet: why, and how many attempts. */
  readonly waiting: SubscriptionRef.SubscriptionRef<{ readonly reason: string; readonly attempts: number } | undefined>
  /** The instance's sessions and their encryption, refreshed while it runs. */
  readonly sessions: SubscriptionRef.SubscriptionRef<ReadonlyArray<SessionSecurity.Session>>
  readonly slotState: SlotManager.SlotManagerState
  readonly publicationStatus: SubscriptionRef.SubscriptionRef<PublicationManager.PublicationStatus>
  readonly capture: SubscriptionRef.SubscriptionRef<Delivery.Capture | undefined>
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
      sessions: yield* SubscriptionRef.get(reporting.sessions)
    } satisfies StreamStatus.Snapshot
  })

/** The option a URL of the core's came from. */
const urlOption = (url: "url" | "replicationUrl") => (url === "url" ? "database-url" : "replication-url")

/**
 * Ownership, with the server and every table admitted first: what PostgreSQL refuses is bad input (exit 2), and so is
 * a server that refuses the connection for good (a wrong password, no REPLICATION, TLS that does not verify, a pooler
 * on the replication connection). A server that cannot be reached yet is waited for (`--startup-timeout`).
 */
const own = (config: RunConfig.RunConfig, url: Redacted.Redacted, subscriptions: ReadonlyArray<Subscription.Subscription>, reporting: Reporting) =>
  StreamOwnership.make({
    streamId: config.streamId,
    instanceId: config.instanceId,
    url,
    ...(config.replicationUrl === undefined ? {} : { replicationUrl: Redacted.make(config.replicationUrl) }),
    startupTimeout: config.startupTimeoutMs,
    onWaiting: (w) => Effect.andThen(SubscriptionRef.set(reporting.waiting, { reason: w.reason, attempts: w.attempt }), StreamMetrics.startupAttempt(config.streamId)),
    mode: config.lock,
    admit: { subscriptions },
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
    // backfills (`slotkeeper backfill`, `--snapshot initial`) run inside the stream
    backfill: { chunkSize: config.chunkSize, ...(config.snapshot === "initial" ? { initial: "publication" as const } : {}) },
    // a file is also the position's store, opened (and locked) for each holding period
    ...(sink.checkpoint === undefined ? {} : { checkpoint: sink.checkpoint })
  }, sink.consume).pipe(Layer.provide(Layer.succeed(StreamOwnership.StreamOwnership, owned)))

export const run = Command.make("run", runFlags, Effect.fn("slotkeeper.run")(function*(flags) {
  const config = yield* Effect.fromResult(RunConfig.make(yield* input(flags)))
  // every log line of the run names the stream and the instance (fields in logfmt and JSON)
  yield* Effect.annotateLogsScoped({ stream: config.streamId, instance: config.instanceId })
  const { url, tables } = yield* database(config)
  if (tables.length === 0) return yield* new RunConfig.ConfigInvalid({ option: "table", message: "--table: name at least one table to stream, e.g. --table public.orders" })
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
    capture: yield* SubscriptionRef.make<Delivery.Capture | undefined>(undefined)
  }
  yield* StreamMetrics.register(config.streamId)
  // served from the start (a port that cannot be listened on is bad input, found before the database is touched)
  let owned: StreamOwnership.StreamOwnership["Service"] | undefined
  if (config.httpPort !== undefined) {
    yield* HealthServer.serve(config.httpPort, snapshotOf(config, reporting, () => owned, sink))
    yield* Effect.logInfo(`serving GET /health, /health/owner and /metrics on port ${config.httpPort}`)
  }
  owned = yield* own(config, redacted, subscriptions, reporting)
  // which sessions are encrypted, by the server's account (pg_stat_ssl): for /health, /metrics and the log
  const sql = owned.sql
  yield* Effect.forkScoped(Effect.forever(Effect.andThen(
    SessionSecurity.read(sql, config.streamId, config.instanceId).pipe(Effect.flatMap((found) => SubscriptionRef.set(reporting.sessions, found)), Effect.ignore),
    Effect.sleep("10 seconds")
  )))
  yield* Effect.logInfo(`stream ${config.streamId}: instance ${config.instanceId} competing for ownership (${config.lock} lock) of ${tables.map((t) => `${t.schema}.${t.name}`).join(", ")}`)
  return yield* Layer.launch(streamLayer(config, redacted, owned, subscriptions, reporting, sink)).pipe(
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
}, Effect.scoped)).pipe(
  Command.withDescription("Own a replication stream and write its changes (NDJSON) to a sink until stopped")
)
