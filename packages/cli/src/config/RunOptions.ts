/**
 * RunOptions: the one list of `slotkeeper run`'s options — for each, its flag, environment variable, `--config` file
 * key, kind, default and meaning.
 *
 * Everything that names an option is made from it, so they cannot disagree: the flags and their `--help` text
 * (`run.ts`), the environment variables they fall back to, the `--config` file's keys and the type each must have
 * (`RunConfig.fromFile`), and the option table in the README (`markdown`, written by `scripts/options-table.ts` and
 * compared with the README by a test). The checks of the values themselves (a duration, a stream id, a URL, the
 * timing rules between options) are `RunConfig.make`'s.
 */
import { Config, Option } from "effect"
import { Flag } from "effect/cli"

export type Kind =
  /** Text (checked by `RunConfig.make`). */
  | "string"
  /** One of `choices`; the first is the default. */
  | "choice"
  /** `500ms`, `5s`, `2m`, `1h` (in the file, also milliseconds as a number). */
  | "duration"
  /** A TCP port (a number in the file). */
  | "port"
  /** A positive whole number (a number in the file). */
  | "count"
  /** Repeatable flag; its environment variable is comma-separated; a list in the file. */
  | "list"
  /** A switch: the flag alone is `true`; `true` or `false` in the environment and the file. */
  | "boolean"

export interface RunOption {
  /** The `--config` file's key (camelCase), and `RunInput`'s field. */
  readonly key: string
  readonly flag: string
  readonly env: string
  readonly kind: Kind
  readonly choices?: ReadonlyArray<string>
  /** The default, as a user reads it (no default: empty). */
  readonly default: string
  readonly description: string
}

export const runOptions: ReadonlyArray<RunOption> = [
  { key: "databaseUrl", flag: "database-url", env: "DATABASE_URL", kind: "string", default: "`PGHOST` and the other `PG*` variables when set, else the embedded PostgreSQL (and a demo table)", description: "the database, by libpq's rules: `postgres://user:password@host:5432/db?sslmode=verify-full&sslrootcert=/ca.crt` (or `host=... dbname=...`); what it leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, ... (see Connecting)" },
  { key: "replicationUrl", flag: "replication-url", env: "SLOTKEEPER_REPLICATION_URL", kind: "string", default: "the database URL", description: "the replication connection's own URL, when the database URL goes through a pooler or proxy that cannot carry replication (PgBouncer); it must reach the same server" },
  { key: "startupTimeout", flag: "startup-timeout", env: "SLOTKEEPER_STARTUP_TIMEOUT", kind: "duration", default: "none: wait for ever", description: "how long to wait for a server that cannot be reached yet (refused, starting up, a name not resolving); `0` fails at once" },
  { key: "tables", flag: "table", env: "SLOTKEEPER_TABLES", kind: "list", default: "", description: "a table to stream: `schema.table`, optionally with `(columns)` and `WHERE filter` as in `CREATE PUBLICATION`; see *Tables*" },
  { key: "publish", flag: "publish", env: "SLOTKEEPER_PUBLISH", kind: "string", default: "insert,update,delete,truncate", description: "what the publication publishes, as PostgreSQL's `publish` option: some of `insert`, `update`, `delete`, `truncate`, comma-separated; a table without a replica identity can be streamed when neither update nor delete is; see *Tables*" },
  { key: "publishViaPartitionRoot", flag: "partition-root", env: "SLOTKEEPER_PARTITION_ROOT", kind: "boolean", default: "false", description: "a partitioned table's changes are named by the partitioned table, not by its partitions (PostgreSQL 13+ `publish_via_partition_root`; a column list or row filter on it needs 15+); see *Tables*" },
  { key: "publishGeneratedColumns", flag: "generated-columns", env: "SLOTKEEPER_GENERATED_COLUMNS", kind: "choice", choices: ["stored", "none"], default: "stored on PostgreSQL 18+, else none", description: "whether stored generated columns are in the change lines (PostgreSQL 18+ `publish_generated_columns`; a column list names them either way); see *Tables*" },
  { key: "config", flag: "config", env: "SLOTKEEPER_CONFIG", kind: "string", default: "", description: "a JSON file of these options, keyed in camelCase (`streamId`, `lossDeadline`, ...); flags and environment variables win over it" },
  { key: "streamId", flag: "stream-id", env: "SLOTKEEPER_STREAM_ID", kind: "string", default: "default", description: "the stream: `[a-z0-9_]`, at most 40; names the slot `slotkeeper_<id>_<n>` and the publication `slotkeeper_<id>`" },
  { key: "schema", flag: "schema", env: "SLOTKEEPER_SCHEMA", kind: "string", default: "slotkeeper", description: "where slotkeeper keeps its tables (ownership, leases, slots, checkpoints, subscriptions): a lowercase identifier; `status`, `check` and `slots` take it too" },
  { key: "instanceId", flag: "instance-id", env: "SLOTKEEPER_INSTANCE_ID", kind: "string", default: "host and pid", description: "this instance's name, shown in `pg_stat_activity` as `slotkeeper:<stream>:<instance>:<role>`" },
  { key: "lock", flag: "lock", env: "SLOTKEEPER_LOCK", kind: "choice", choices: ["advisory", "lease"], default: "advisory", description: "how ownership is held: a session advisory lock, or a lease row (behind a transaction pooler)" },
  { key: "slotMode", flag: "slot-mode", env: "SLOTKEEPER_SLOT_MODE", kind: "choice", choices: ["temporary", "persistent"], default: "temporary", description: "stream from a temporary copy of the stream's slot per connection, or from the slot itself" },
  { key: "sink", flag: "sink", env: "SLOTKEEPER_SINK", kind: "string", default: "stdout", description: "where changes go: `stdout`, `file:PATH`, or an `http://` / `https://` URL" },
  { key: "onSinkRejected", flag: "on-sink-rejected", env: "SLOTKEEPER_ON_SINK_REJECTED", kind: "choice", choices: ["fail", "skip"], default: "fail", description: "http sink, a 4xx that retrying cannot fix: `fail` (exit 1) or `skip` the batch" },
  { key: "httpPort", flag: "http-port", env: "SLOTKEEPER_HTTP_PORT", kind: "port", default: "off", description: "serve `GET /health`, `/health/owner` and `/metrics` on this port" },
  { key: "acquireInterval", flag: "acquire-interval", env: "SLOTKEEPER_ACQUIRE_INTERVAL", kind: "duration", default: "500ms", description: "while waiting, try to take ownership this often (jittered ±20%)" },
  { key: "heartbeatInterval", flag: "heartbeat-interval", env: "SLOTKEEPER_HEARTBEAT_INTERVAL", kind: "duration", default: "500ms", description: "advisory: confirm the lock this often" },
  { key: "lossDeadline", flag: "loss-deadline", env: "SLOTKEEPER_LOSS_DEADLINE", kind: "duration", default: "2s", description: "advisory: give up ownership after this long without a confirmed heartbeat" },
  { key: "serverReleaseBound", flag: "server-release-bound", env: "SLOTKEEPER_SERVER_RELEASE_BOUND", kind: "duration", default: "4s", description: "advisory: the server frees a silent holder's lock after this (`idle_session_timeout`); at least loss deadline + 2 s" },
  { key: "leaseDuration", flag: "lease-duration", env: "SLOTKEEPER_LEASE_DURATION", kind: "duration", default: "4s", description: "lease: how long a renewal holds the lease, by the database's clock; the holder gives up 2 s before it ends" },
  { key: "renewInterval", flag: "renew-interval", env: "SLOTKEEPER_RENEW_INTERVAL", kind: "duration", default: "1s", description: "lease: renew this often, less than half the lease" },
  { key: "onLoss", flag: "on-loss", env: "SLOTKEEPER_ON_LOSS", kind: "choice", choices: ["wait", "exit"], default: "wait", description: "after losing ownership: compete again, or exit 1 for the orchestrator to restart" },
  { key: "walHeartbeatInterval", flag: "wal-heartbeat-interval", env: "SLOTKEEPER_WAL_HEARTBEAT_INTERVAL", kind: "duration", default: "30s", description: "an idle stream writes a heartbeat message to the WAL this often, so its slot moves" },
  { key: "onSlotLost", flag: "on-slot-lost", env: "SLOTKEEPER_ON_SLOT_LOST", kind: "choice", choices: ["fail", "recreate"], default: "fail", description: "an invalidated slot: `fail` (exit 1), or `recreate` it once, say so (a `resync` line, an error log) and go on" },
  { key: "snapshot", flag: "snapshot", env: "SLOTKEEPER_SNAPSHOT", kind: "choice", choices: ["never", "initial"], default: "never", description: "`initial`: each table's existing rows are delivered once, as `read` lines alongside the changes, when the table first appears in the stream (see *Snapshots and backfills*); `slotkeeper backfill` asks for one at any time" },
  { key: "chunkSize", flag: "chunk-size", env: "SLOTKEEPER_CHUNK_SIZE", kind: "count", default: "10000", description: "rows per backfill chunk (1..1000000): a chunk is read in one short transaction and held in memory until the stream places it; larger is faster, smaller holds less" },
  { key: "standbyUrls", flag: "standby-url", env: "SLOTKEEPER_STANDBY_URLS", kind: "list", default: "", description: "a standby to ask whether its copy of the failover slot is sync-ready (`/health`, `/metrics`, `status`)" }
]

export const byKey = (key: string): RunOption => {
  const o = runOptions.find((o) => o.key === key)
  if (o === undefined) throw new Error(`no run option ${key}`)
  return o
}

const plain = (markdown: string) => markdown.replaceAll("`", "").replaceAll("*", "")

/** `--help`'s text of an option: what it is, its choices and default, its environment variable. */
export const help = (o: RunOption): string =>
  `${plain(o.description)}${o.kind === "choice" ? ` (${o.choices!.join(" or ")})` : ""}${o.default.length > 0 ? `; default ${plain(o.default)}` : ""}` +
  ` (env ${o.env}${o.kind === "list" ? ", comma-separated" : ""})`

/** A single-valued option as a flag that falls back to its environment variable; its default is `RunConfig`'s. */
export const flag = (key: string): Flag.Flag<Option.Option<string>> => {
  const o = byKey(key)
  return Flag.String(o.flag).pipe(Flag.withFallbackConfig(Config.String(o.env)), Flag.withDescription(help(o)), Flag.optional)
}

/**
 * A single-valued option with its default applied by the flag itself, for the commands that have no `--config` file
 * (`status`, `check`, `slots`): `--stream-id`, `--schema`.
 */
export const flagWithDefault = (key: "streamId" | "schema"): Flag.Flag<string> => {
  const o = byKey(key)
  return Flag.String(o.flag).pipe(Flag.withFallbackConfig(Config.String(o.env)), Flag.withDescription(help(o)), Flag.withDefault(o.default))
}

/** A port or count option (`kind: "port"` or `"count"`). */
export const intFlag = (key: string): Flag.Flag<Option.Option<number>> => {
  const o = byKey(key)
  return Flag.Int(o.flag).pipe(Flag.withFallbackConfig(Config.Int(o.env)), Flag.withDescription(help(o)), Flag.optional)
}

/** A switch (`kind: "boolean"`): the flag alone turns it on; its environment variable is `true` or `false`. */
export const booleanFlag = (key: string): Flag.Flag<Option.Option<boolean>> => {
  const o = byKey(key)
  return Flag.Boolean(o.flag).pipe(Flag.withFallbackConfig(Config.Boolean(o.env)), Flag.withDescription(help(o)), Flag.optional)
}

/** A repeatable option (`kind: "list"`); its comma-separated environment variable is read by `listFromEnv`. */
export const listFlag = (key: string): Flag.Flag<ReadonlyArray<string>> => {
  const o = byKey(key)
  return Flag.String(o.flag).pipe(Flag.withDescription(`repeatable: ${help(o)}`), Flag.atLeast(0))
}

/** A list option's environment variable, split at commas (`split` for values that may contain commas themselves). */
export const listFromEnv = (key: string, env: NodeJS.ProcessEnv, split?: (text: string) => ReadonlyArray<string>): ReadonlyArray<string> => {
  const text = env[byKey(key).env] ?? ""
  return split !== undefined ? split(text) : text.split(",").map((u) => u.trim()).filter((u) => u.length > 0)
}

/** Where the README's table starts and ends. */
export const tableMarkers = {
  start: "<!-- options:run — generated from packages/cli/src/config/RunOptions.ts by `npm run options:table`; do not edit -->",
  end: "<!-- /options:run -->"
} as const

/** The README's table of `run`'s options. */
export const markdown = (): string => {
  const cell = (text: string) => text.replaceAll("|", "\\|")
  const rows = runOptions.map((o) =>
    `| \`--${o.flag}\`${o.kind === "list" ? " (repeatable)" : ""} | \`${o.env}\`${o.kind === "list" ? " (comma-separated)" : ""} | ${o.key === "config" ? "" : `\`${o.key}\``} | ` +
    `${o.kind === "choice" ? o.choices!.map((c) => `\`${c}\``).join(" or ") : o.kind} | ${o.default.length > 0 && !o.default.includes(" ") ? `\`${o.default}\`` : cell(o.default)} | ${cell(o.description)} |`
  )
  return [tableMarkers.start, "| flag | environment variable | `--config` key | value | default | |", "|---|---|---|---|---|---|", ...rows, tableMarkers.end].join("\n")
}
