/**
 * `slotkeeper run`: own a replication stream and write its changes to a sink, for as long as it runs.
 *
 * With no `--database-url` it starts the embedded PostgreSQL (and, with no `--table` either, a small demo table that
 * gets a row every second), so that a newcomer sees changes flowing at once. Options are checked before anything
 * touches a database: a bad one exits 2 with one line that names it. SIGTERM/SIGINT drain and release ownership, then
 * exit 0. Logs go to stderr; the changes (NDJSON) to the sink.
 */
import { readFileSync } from "node:fs"
import { Redact } from "@slotkeeper/core"
import { Config, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as Embedded from "../config/Embedded.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import * as HealthServer from "../http/HealthServer.ts"
import * as StreamProgram from "../stream/StreamProgram.ts"

/** The flags, each made from its entry in `RunOptions` (name, environment variable, help); defaults are `RunConfig`'s. */
export const runFlags = {
  databaseUrl: RunOptions.flag("databaseUrl"),
  replicationUrl: RunOptions.flag("replicationUrl"),
  startupTimeout: RunOptions.flag("startupTimeout"),
  streamId: RunOptions.flag("streamId"),
  schema: RunOptions.flag("schema"),
  tables: RunOptions.listFlag("tables"),
  publish: RunOptions.flag("publish"),
  publishViaPartitionRoot: RunOptions.booleanFlag("publishViaPartitionRoot"),
  publishGeneratedColumns: RunOptions.flag("publishGeneratedColumns"),
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
    if (config.tables.length > 0 || config.schemas.length > 0) return { url: pg.url, tables: config.tables }
    yield* demo(pg.url)
    yield* Effect.logInfo(`no --table: streaming the demo table ${demoSchema}.ticks, which gets a row every second`)
    return { url: pg.url, tables: [{ schema: demoSchema, name: "ticks" }] as ReadonlyArray<RunConfig.TableSpec> }
  })

export const run = Command.make("run", runFlags, Effect.fn("slotkeeper.run")(function*(flags) {
  const config = yield* Effect.fromResult(RunConfig.make(yield* input(flags)))
  // every log line of the run names the stream and the instance (fields in logfmt and JSON)
  yield* Effect.annotateLogsScoped({ stream: config.streamId, instance: config.instanceId })
  const { url, tables } = yield* database(config)
  if (tables.length === 0 && config.schemas.length === 0) return yield* new RunConfig.ConfigInvalid({ option: "table", message: "--table: name at least one table to stream, e.g. --table public.orders" })
  const stream = yield* StreamProgram.prepare(config, url, tables)
  // served from the start (a port that cannot be listened on is bad input, found before the database is touched)
  if (config.httpPort !== undefined) {
    yield* HealthServer.serve(config.httpPort, stream.snapshot)
    yield* Effect.logInfo(`serving GET /health, /health/owner and /metrics on port ${config.httpPort}`)
  }
  return yield* stream.run
}, Effect.scoped)).pipe(
  Command.withDescription("Own a replication stream and write its changes (NDJSON) to a sink until stopped")
)
