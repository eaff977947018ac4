/**
 * `slotkeeper run`: own a replication stream and write its changes to a sink, for as long as it runs.
 *
 * With no `--database-url` it starts the embedded PostgreSQL (and, with no `--table` either, a small demo table that
 * gets a row every second), so that a newcomer sees changes flowing at once. Options are checked before anything
 * touches a database: a bad one exits 2 with one line that names it. SIGTERM/SIGINT drain and release ownership, then
 * exit 0. Logs go to stderr; the changes (NDJSON) to the sink.
 */
import { Delivery, SlotManager, StreamOwnership } from "@slotkeeper/core"
import { EmbeddedPostgres } from "@slotkeeper/testkit"
import { Config, Effect, Layer, Logger, LogLevel, Option, Redacted, Stream, SubscriptionRef } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as HealthServer from "../http/HealthServer.ts"
import * as Ndjson from "../output/Ndjson.ts"
import * as Redact from "../Redact.ts"
import * as FileSink from "../sinks/FileSink.ts"
import * as Sink from "../sinks/Sink.ts"

const env = <A>(flag: Flag.Flag<A>, config: Config.Config<A>, description: string) =>
  flag.pipe(Flag.withFallbackConfig(config), Flag.withDescription(description))

export const runFlags = {
  databaseUrl: env(Flag.String("database-url"), Config.String("DATABASE_URL"), "the database (env DATABASE_URL); default: the embedded PostgreSQL").pipe(Flag.optional),
  streamId: env(Flag.String("stream-id"), Config.String("SLOTKEEPER_STREAM_ID"), "the stream (env SLOTKEEPER_STREAM_ID): [a-z0-9_], at most 40").pipe(Flag.withDefault("default")),
  tables: Flag.String("table").pipe(Flag.withDescription("a table to stream, schema.table (repeat for more); names follow PostgreSQL's rules"), Flag.atLeast(0)),
  lock: env(Flag.String("lock"), Config.String("SLOTKEEPER_LOCK"), "advisory (default) or lease (behind a transaction pooler)").pipe(Flag.withDefault("advisory")),
  slotMode: env(Flag.String("slot-mode"), Config.String("SLOTKEEPER_SLOT_MODE"), "temporary (default: a copy per connection) or persistent").pipe(Flag.withDefault("temporary")),
  instanceId: env(Flag.String("instance-id"), Config.String("SLOTKEEPER_INSTANCE_ID"), "this instance's name (default: host and pid)").pipe(Flag.optional),
  sink: env(Flag.String("sink"), Config.String("SLOTKEEPER_SINK"), "stdout (default), file:PATH or an http(s):// URL").pipe(Flag.withDefault("stdout")),
  httpPort: env(Flag.Int("http-port"), Config.Int("SLOTKEEPER_HTTP_PORT"), "serve GET /health, /health/owner and /metrics on this port").pipe(Flag.optional)
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

export const run = Command.make("run", runFlags, Effect.fn("slotkeeper.run")(function*(flags) {
  const config = RunConfig.make({
    databaseUrl: Option.getOrUndefined(flags.databaseUrl),
    streamId: flags.streamId,
    tables: flags.tables,
    lock: flags.lock,
    slotMode: flags.slotMode,
    instanceId: Option.getOrUndefined(flags.instanceId),
    sink: flags.sink,
    httpPort: Option.getOrUndefined(flags.httpPort)
  })
  if ("_tag" in config) return yield* config
  if (config.sink._tag === "Http") {
    return yield* new RunConfig.ConfigInvalid({ option: "sink", message: "--sink: the http sink comes with the next release; use stdout or file:PATH" })
  }
  let url = config.databaseUrl
  let tables = config.tables
  if (url === undefined) {
    const pg = yield* EmbeddedPostgres.make({ dir: ".slotkeeper/postgres-18", port: EmbeddedPostgres.defaultPort })
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
  // file: the file is also where the durable position lives (read back on start, repaired if torn)
  const file = config.sink._tag === "File" ? yield* FileSink.make(config.sink.path) : undefined
  const sink = file?.sink ?? Sink.stdout
  const owned = yield* StreamOwnership.make({ streamId: config.streamId, instanceId: config.instanceId, url: redacted, mode: config.lock })
  const slotState = yield* SlotManager.makeState
  const counters = { changes: 0, transactions: 0, errors: 0, acknowledged: undefined as bigint | undefined }
  if (config.httpPort !== undefined) {
    const snapshot = Effect.gen(function*() {
      const slot = yield* SubscriptionRef.get(slotState.slot)
      return {
        streamId: config.streamId,
        status: yield* SubscriptionRef.get(owned.supervisor.status),
        slotName: slot?.slotName,
        slot: yield* SubscriptionRef.get(slotState.status),
        acknowledgedLsn: counters.acknowledged,
        changes: counters.changes,
        transactions: counters.transactions,
        errors: counters.errors
      } satisfies HealthServer.Snapshot
    })
    yield* HealthServer.serve(config.httpPort, snapshot).pipe(Effect.mapError((e) => new RunConfig.ConfigInvalid({ option: "http-port", message: e.message })))
    yield* Effect.logInfo(`serving GET /health, /health/owner and /metrics on port ${config.httpPort}`)
  }
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
    subscriptions: tables.map((t) => ({ id: `${t.schema}.${t.name}`, table: t })),
    ...(file === undefined ? {} : { checkpoint: file.checkpoint })
  }, (connection) => {
    let batch: Array<string> = []
    return Stream.runForEach(connection.events, (event) => {
      const text = Ndjson.line(event)
      if (text !== undefined) {
        batch.push(text)
        counters.changes++
      }
      if (event._tag === "Commit" || (event._tag === "Message" && !event.transactional)) {
        return Effect.gen(function*() {
          const lines = batch
          batch = []
          const position = event._tag === "Commit" ? event.endLsn : event.ackPosition
          if (file !== undefined) {
            // the file's own record of how far it is: read back on the next start
            const identity = yield* connection.durable
            lines.push(event._tag === "Commit"
              ? file.commitLine({ xid: event.xid, commitLsn: event.commitLsn, endLsn: event.endLsn, commitTime: event.commitTime, position: identity })
              : file.commitLine({ xid: 0, commitLsn: event.lsn, endLsn: position, commitTime: "", position: identity }))
          }
          yield* sink.write(lines)
          yield* sink.commit
          yield* connection.acknowledge(position)
          counters.transactions++
          counters.acknowledged = position
        })
      }
      if (batch.length < 1000) return Effect.void
      const lines = batch
      batch = []
      return sink.write(lines)
    })
  }).pipe(Layer.provide(Layer.succeed(StreamOwnership.StreamOwnershipService, owned)))
  // warnings and errors of the stream, counted for /metrics
  const counting = Logger.make((options) => {
    if (LogLevel.isGreaterThanOrEqualTo(options.logLevel, "Warn")) counters.errors++
  })
  yield* Effect.logInfo(`stream ${config.streamId}: instance ${config.instanceId} competing for ownership (${config.lock} lock) of ${tables.map((t) => `${t.schema}.${t.name}`).join(", ")}`)
  return yield* Layer.launch(stream).pipe(Effect.provide(Logger.layer([counting], { mergeWithExisting: true })))
}, Effect.scoped)).pipe(
  Command.withDescription("Own a replication stream and write its changes (NDJSON) to a sink until stopped")
)
