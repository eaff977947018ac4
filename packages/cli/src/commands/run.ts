/**
 * `slotkeeper run`: own a replication stream and write its changes to a sink, for as long as it runs.
 *
 * With no `--database-url` it starts the embedded PostgreSQL (and, with no `--table` either, a small demo table that
 * gets a row every second), so that a newcomer sees changes flowing at once. Options are checked before anything
 * touches a database: a bad one exits 2 with one line that names it. SIGTERM/SIGINT drain and release ownership, then
 * exit 0. Logs go to stderr; the changes (NDJSON) to the sink.
 */
import { readFileSync } from "node:fs"
import { Checkpoint, Delivery, Ownership, type OwnershipService, PublicationManager, type ReplicationStream, SlotManager, StreamMetrics, StreamOwnership, type StreamStatus } from "@slotkeeper/core"
import { Config, Effect, Layer, Logger, Option, Redacted, Stream, SubscriptionRef } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as Embedded from "../config/Embedded.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as HealthServer from "../http/HealthServer.ts"
import * as Ndjson from "../output/Ndjson.ts"
import * as Redact from "../Redact.ts"
import * as FileSink from "../sinks/FileSink.ts"
import * as HttpSink from "../sinks/HttpSink.ts"
import * as Sink from "../sinks/Sink.ts"

const env = <A>(flag: Flag.Flag<A>, config: Config.Config<A>, description: string) =>
  flag.pipe(Flag.withFallbackConfig(config), Flag.withDescription(description))

/** A flag with its environment variable, optional: its default is applied after the `--config` file (`RunConfig`). */
const option = (name: string, variable: string, description: string) =>
  env(Flag.String(name), Config.String(variable), `${description} (env ${variable})`).pipe(Flag.optional)

/** `--stream-id` with its default, for the commands that have no `--config` file. */
export const streamIdFlag = env(Flag.String("stream-id"), Config.String("SLOTKEEPER_STREAM_ID"), "the stream (env SLOTKEEPER_STREAM_ID): [a-z0-9_], at most 40").pipe(Flag.withDefault("default"))

export const runFlags = {
  databaseUrl: option("database-url", "DATABASE_URL", "the database; default: the embedded PostgreSQL"),
  streamId: option("stream-id", "SLOTKEEPER_STREAM_ID", "the stream: [a-z0-9_], at most 40; default default"),
  tables: Flag.String("table").pipe(
    Flag.withDescription("a table to stream (repeat for more): schema.table, names by PostgreSQL's rules, optionally with (columns) and WHERE filter as in CREATE PUBLICATION (env SLOTKEEPER_TABLES, comma-separated)"),
    Flag.atLeast(0)
  ),
  config: option("config", "SLOTKEEPER_CONFIG", "a JSON file of options (camelCase names, e.g. {\"tables\": [...]}); flags and environment win"),
  lock: option("lock", "SLOTKEEPER_LOCK", "advisory (default) or lease (behind a transaction pooler)"),
  slotMode: option("slot-mode", "SLOTKEEPER_SLOT_MODE", "temporary (default: a copy per connection) or persistent"),
  instanceId: option("instance-id", "SLOTKEEPER_INSTANCE_ID", "this instance's name; default: host and pid"),
  sink: option("sink", "SLOTKEEPER_SINK", "stdout (default), file:PATH or an http(s):// URL"),
  httpPort: env(Flag.Int("http-port"), Config.Int("SLOTKEEPER_HTTP_PORT"), "serve GET /health, /health/owner and /metrics on this port (env SLOTKEEPER_HTTP_PORT)").pipe(Flag.optional),
  acquireInterval: option("acquire-interval", "SLOTKEEPER_ACQUIRE_INTERVAL", "while waiting, try to take ownership this often; default 500ms"),
  heartbeatInterval: option("heartbeat-interval", "SLOTKEEPER_HEARTBEAT_INTERVAL", "advisory: confirm the lock this often; default 1s"),
  lossDeadline: option("loss-deadline", "SLOTKEEPER_LOSS_DEADLINE", "advisory: give up ownership after this long without a confirmed heartbeat; default 5s"),
  serverReleaseBound: option("server-release-bound", "SLOTKEEPER_SERVER_RELEASE_BOUND", "advisory: the server frees the lock of a holder silent this long (idle_session_timeout); default 10s, at least loss deadline + 2s"),
  leaseDuration: option("lease-duration", "SLOTKEEPER_LEASE_DURATION", "lease: how long a renewal holds the lease, by the database's clock; default 10s"),
  renewInterval: option("renew-interval", "SLOTKEEPER_RENEW_INTERVAL", "lease: renew this often, less than half the lease; default 3s"),
  onLoss: option("on-loss", "SLOTKEEPER_ON_LOSS", "after losing ownership: wait (default) to compete again, or exit 1 for the orchestrator to restart"),
  walHeartbeatInterval: option("wal-heartbeat-interval", "SLOTKEEPER_WAL_HEARTBEAT_INTERVAL", "write a heartbeat message to the WAL after this long without traffic, so an idle stream's slot moves; default 30s"),
  onSlotLost: option("on-slot-lost", "SLOTKEEPER_ON_SLOT_LOST", "an invalidated slot: fail (default, exit 1) or recreate it and report a resync"),
  onSinkRejected: option("on-sink-rejected", "SLOTKEEPER_ON_SINK_REJECTED", "the http sink refused a batch with a 4xx: fail (default, exit 1) or skip it"),
  standbyUrls: Flag.String("standby-url").pipe(
    Flag.withDescription("a standby to check the failover slot's readiness on (repeat for more; env SLOTKEEPER_STANDBY_URLS, comma-separated): /health and /metrics say whether each has a sync-ready copy"),
    Flag.atLeast(0)
  )
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
      // --table, else SLOTKEEPER_TABLES (comma-separated)
      tables: tables.length > 0 ? tables : RunConfig.splitTables(process.env.SLOTKEEPER_TABLES ?? ""),
      // --standby-url, else SLOTKEEPER_STANDBY_URLS (comma-separated)
      standbyUrls: standbyUrls.length > 0 ? standbyUrls : (process.env.SLOTKEEPER_STANDBY_URLS ?? "").split(",").map((u) => u.trim()).filter((u) => u.length > 0)
    }
    if (Option.isNone(config)) return fromFlags
    const path = config.value
    const text = yield* Effect.try({
      try: () => readFileSync(path, "utf8"),
      catch: (e) => new RunConfig.ConfigInvalid({ option: "config", message: `--config: cannot read ${path}: ${(e as Error).message}` })
    })
    const file = RunConfig.fromFile(path, text)
    if ("_tag" in file) return yield* file
    return RunConfig.merge(fromFlags, file)
  })

export const run = Command.make("run", runFlags, Effect.fn("slotkeeper.run")(function*(flags) {
  const config = RunConfig.make(yield* input(flags))
  if ("_tag" in config) return yield* config
  let url = config.databaseUrl
  let tables = config.tables
  if (url === undefined) {
    // the same folder and port as `slotkeeper embedded` (its environment variables)
    const dir = yield* Config.String("SLOTKEEPER_EMBEDDED_DIR").pipe(Config.withDefault(".slotkeeper/postgres-18"))
    const port = yield* Config.Port("SLOTKEEPER_EMBEDDED_PORT").pipe(
      Config.withDefault(Embedded.defaultPort),
      Effect.mapError(() => new RunConfig.ConfigInvalid({ option: "SLOTKEEPER_EMBEDDED_PORT", message: `SLOTKEEPER_EMBEDDED_PORT: not a TCP port: use 1..65535` }))
    )
    const { EmbeddedPostgres } = yield* Embedded.load("--database-url")
    const pg = yield* EmbeddedPostgres.make({ dir, port })
    url = pg.url
    yield* Effect.logInfo(`no --database-url: streaming from the embedded PostgreSQL ${pg.install.version} at ${Redact.url(url)}`)
    if (tables.length === 0) {
      yield* demo(url)
      tables = [{ schema: demoSchema, name: "ticks" }]
      yield* Effect.logInfo(`no --table: streaming the demo table ${demoSchema}.ticks, which gets a row every second`)
    }
  }
  if (tables.length === 0) return yield* new RunConfig.ConfigInvalid({ option: "table", message: "--table: name at least one table to stream, e.g. --table public.orders" })
  const redacted = Redacted.make(url)
  // the configured tables are the whole set: ones a previous configuration had are removed from the publication
  const subscriptions = tables.map((t) => ({ ...t, id: `${t.schema}.${t.name}`, table: { schema: t.schema, name: t.name } }))
  const file = config.sink._tag === "File" ? yield* FileSink.make(config.sink.path) : undefined
  const http = config.sink._tag === "Http" ? HttpSink.make({ url: config.sink.url, onRejected: config.onSinkRejected }) : undefined
  // the file as this holding period has it open (locked), while it lasts
  let period: FileSink.FilePeriod | undefined
  const fenceOf = (own: OwnershipService): Sink.Fence => ({ streamId: config.streamId, epoch: own.epoch, assertFresh: own.assertFresh })
  const slotState = yield* SlotManager.makeState
  const publicationStatus = yield* SubscriptionRef.make(PublicationManager.initialStatus)
  const capture = yield* SubscriptionRef.make<Delivery.Capture | undefined>(undefined)
  let acknowledged: bigint | undefined
  yield* StreamMetrics.register(config.streamId)
  // served from the start (a port that cannot be listened on is bad input, found before the database is touched)
  let owned: StreamOwnership.StreamOwnership | undefined
  if (config.httpPort !== undefined) {
    const snapshot = Effect.gen(function*() {
      const slot = yield* SubscriptionRef.get(slotState.slot)
      return {
        streamId: config.streamId,
        // starting until ownership is set up (the server checked, slotkeeper's tables ready)
        status: owned === undefined ? { _tag: "Starting" } as const : yield* SubscriptionRef.get(owned.supervisor.status),
        capture: yield* SubscriptionRef.get(capture),
        failoverReady: yield* SubscriptionRef.get(slotState.failoverReady),
        slotName: slot?.slotName,
        slot: yield* SubscriptionRef.get(slotState.status),
        acknowledgedLsn: acknowledged,
        publicationProblems: (yield* SubscriptionRef.get(publicationStatus)).drift
      } satisfies StreamStatus.Snapshot
    })
    yield* HealthServer.serve(config.httpPort, snapshot)
    yield* Effect.logInfo(`serving GET /health, /health/owner and /metrics on port ${config.httpPort}`)
  }
  owned = yield* StreamOwnership.make({
    streamId: config.streamId,
    instanceId: config.instanceId,
    url: redacted,
    mode: config.lock,
    // the server and every table checked before anything is created or changed: bad input leaves the database as it was
    admit: { subscriptions },
    ...config.ownership
  }).pipe(
    // the options were checked already: what is left is the server not keeping a setting they need
    Effect.catchTags({
      OwnershipConfigError: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "server-release-bound", message: `--server-release-bound: ${e.message}` })),
      PreflightRefused: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "database-url", message: `--database-url: ${e.check}: ${e.message}` })),
      SubscriptionInvalid: (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` }))
    })
  )
  // One replication connection's events, written to a sink opened for it (nothing half sent carries over), under the
  // holding period's epoch. Events come in arrays of what has arrived: their lines are written, and the sink is made
  // durable and the last commit in the array acknowledged once per array, not once per transaction (many small ones
  // share one fsync or one POST). A transaction still open at the end of an array is acknowledged with a later array.
  // Counted as delivered only once acknowledged.
  const consume = (connection: ReplicationStream.ReplicationStream) =>
    Effect.gen(function*() {
      const own = yield* Ownership
      const fence: Sink.Fence = { ...fenceOf(own), resumedFrom: connection.startedAt }
      const sink = period?.sink ?? (http !== undefined ? http.open(fence) : Sink.stdout(fence))
      // what the file's commit lines say the position belongs to (slot, system, timeline): one per connection
      const identity = period === undefined ? undefined : yield* connection.durable
      let inTransaction = false
      // since the last acknowledgement: counted as delivered once acknowledged
      let changes = 0
      let bytes = 0
      let transactions = 0
      let sinkMs = 0
      return yield* Stream.runForEachArray(connection.events, (events) =>
        Effect.gen(function*() {
          const lines: Array<string> = []
          let position: bigint | undefined
          let lastCommitTime: string | undefined
          // the sink's own time, for slotkeeper_sink_write_seconds
          const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) => {
            const t = performance.now()
            return Effect.ensuring(effect, Effect.sync(() => { sinkMs += performance.now() - t }))
          }
          for (const event of events) {
            if (event._tag === "Begin") inTransaction = true
            const text = Ndjson.line(event, own.epoch)
            if (text !== undefined) {
              lines.push(text)
              changes++
              bytes += Buffer.byteLength(text) + 1
            }
            if (event._tag === "Commit" || (event._tag === "Message" && !event.transactional)) {
              inTransaction = false
              position = event._tag === "Commit" ? event.endLsn : event.ackPosition
              if (event._tag === "Commit") lastCommitTime = event.commitTime
              transactions++
              if (period !== undefined && identity !== undefined) {
                // the file's own record of how far it is: read back at the next connection
                lines.push(event._tag === "Commit"
                  ? period.commitLine({ xid: event.xid, commitLsn: event.commitLsn, endLsn: event.endLsn, commitTime: event.commitTime, position: identity })
                  : period.commitLine({ xid: 0, commitLsn: event.lsn, endLsn: position, commitTime: "", position: identity }))
              }
            }
            if (lines.length >= 1000) yield* timed(sink.write(lines.splice(0), !inTransaction))
          }
          yield* timed(sink.write(lines, !inTransaction))
          if (position !== undefined) {
            yield* timed(sink.commit)
            yield* connection.acknowledge(position)
            acknowledged = position
            yield* StreamMetrics.delivered(config.streamId, { changes, transactions, bytes, sinkSeconds: sinkMs / 1000, lastCommitTime })
            changes = 0
            bytes = 0
            transactions = 0
            sinkMs = 0
          }
        }))
    })
  const stream = Delivery.layer({
    url: redacted,
    streamId: config.streamId,
    instanceId: config.instanceId,
    sql: owned.sql,
    slotPrefix: owned.identity.slotPrefix,
    schema: owned.config.schema,
    publication: owned.identity.publicationName,
    mode: config.slotMode,
    slotState,
    publicationStatus,
    capture,
    onSlotLost: config.onSlotLost,
    standbys: config.standbyUrls.map((u) => Redacted.make(u)),
    ...(config.walHeartbeatIntervalMs === undefined ? {} : { heartbeatInterval: config.walHeartbeatIntervalMs }),
    subscriptions,
    // the file is opened (and locked) for each holding period, in the owned scope
    ...(file === undefined ? {} : {
      checkpoint: Effect.gen(function*() {
        const own = yield* Ownership
        const opened = yield* file.open(fenceOf(own)).pipe(
          Effect.catchTag("SinkError", (e) => Effect.fail(new Checkpoint.CheckpointError({ message: e.message })))
        )
        period = opened
        yield* Effect.addFinalizer(() => Effect.sync(() => { period = undefined }))
        return opened.checkpoint
      })
    })
  }, consume).pipe(Layer.provide(Layer.succeed(StreamOwnership.StreamOwnershipService, owned)))
  yield* Effect.logInfo(`stream ${config.streamId}: instance ${config.instanceId} competing for ownership (${config.lock} lock) of ${tables.map((t) => `${t.schema}.${t.name}`).join(", ")}`)
  return yield* Layer.launch(stream).pipe(
    // warnings and errors of the stream, counted for /metrics
    Effect.provide(Logger.layer([StreamMetrics.countErrors(config.streamId)], { mergeWithExisting: true })),
    // a table the server refuses (missing, a filter it rejects, no replica identity for it) is bad input: exit 2
    Effect.catchTag("SubscriptionInvalid", (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` }))),
    // ... and so is a set of tables whose publication would make PostgreSQL refuse the application's writes
    Effect.catchTag("WritesWouldBreak", (e) => Effect.fail(new RunConfig.ConfigInvalid({ option: "table", message: `--table: ${e.message}` })))
  )
}, Effect.scoped)).pipe(
  Command.withDescription("Own a replication stream and write its changes (NDJSON) to a sink until stopped")
)
