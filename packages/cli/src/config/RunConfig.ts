/**
 * RunConfig: `slotkeeper run`'s options, checked before anything touches a database — each problem is one
 * `ConfigInvalid` naming the option and what to change (the command exits 2 with it).
 *
 * **Where options come from**, first wins: the flag, its environment variable, the `--config` file, the default.
 * The file is JSON with the flags' names in camelCase (`streamId`, `lossDeadline`, ...); its `tables` are added to
 * the `--table` ones. Unknown keys are an error, so a misspelt option is never silently ignored.
 *
 * **Table names** follow PostgreSQL's rules: `schema.table`, each part unquoted (folded to lower case) or in double
 * quotes (exact, `""` for a quote); without a schema, `public`. So `--table Orders` is `public.orders`, and
 * `--table '"Sales"."Orders"'` is exactly that. A column list and a row filter are written as in
 * `CREATE PUBLICATION` (PostgreSQL 15+): `--table "public.orders (id, status, total) WHERE status <> 'draft'"`. In the
 * file a table is that string or `{"table": "public.orders", "columns": ["id"], "where": "...", "replicaIdentityFull": true}`.
 *
 * **Durations** are `500ms`, `5s`, `2m`, `1h` or Effect's `5 seconds`.
 */
import { hostname } from "node:os"
import { Duration, Option, Result, Schema } from "effect"
import { Connector, OwnershipConfig, PgPublication, Redact, StreamId, Subscription } from "@slotkeeper/core"
import * as RunOptions from "./RunOptions.ts"

export class ConfigInvalid extends Schema.TaggedError<ConfigInvalid>()("ConfigInvalid", {
  option: Schema.String,
  message: Schema.String
}) {}

export type Sink =
  | { readonly _tag: "Stdout" }
  | { readonly _tag: "File"; readonly path: string }
  | { readonly _tag: "Http"; readonly url: string }

/** A table as written: `schema.table [(columns)] [WHERE filter]`, or the file's object form. */
export type TableInput =
  | string
  | { readonly table: string; readonly columns?: ReadonlyArray<string>; readonly where?: string; readonly replicaIdentityFull?: boolean }

/** What the flags, the environment and the `--config` file gave; `undefined` when none did. */
export interface RunInput {
  readonly databaseUrl?: string | undefined
  readonly replicationUrl?: string | undefined
  readonly startupTimeout?: string | undefined
  readonly streamId?: string | undefined
  readonly schema?: string | undefined
  readonly tables?: ReadonlyArray<TableInput> | undefined
  readonly publish?: string | undefined
  readonly publishViaPartitionRoot?: boolean | undefined
  readonly publishGeneratedColumns?: string | undefined
  readonly lock?: string | undefined
  readonly slotMode?: string | undefined
  readonly instanceId?: string | undefined
  readonly sink?: string | undefined
  readonly httpPort?: number | undefined
  readonly acquireInterval?: string | undefined
  readonly heartbeatInterval?: string | undefined
  readonly lossDeadline?: string | undefined
  readonly serverReleaseBound?: string | undefined
  readonly leaseDuration?: string | undefined
  readonly renewInterval?: string | undefined
  readonly onLoss?: string | undefined
  readonly walHeartbeatInterval?: string | undefined
  readonly onSlotLost?: string | undefined
  readonly onSinkRejected?: string | undefined
  readonly snapshot?: string | undefined
  readonly chunkSize?: number | undefined
  /** Standbys to check the failover slot's readiness on (PostgreSQL URLs). */
  readonly standbyUrls?: ReadonlyArray<string> | undefined
}

/** The options that are durations (milliseconds once checked). */
const durationOptions = ["acquireInterval", "heartbeatInterval", "lossDeadline", "serverReleaseBound", "leaseDuration", "renewInterval", "walHeartbeatInterval"] as const

export interface TableSpec extends Subscription.TableRef {
  readonly schema: string
  readonly columns?: ReadonlyArray<string>
  readonly where?: string
  readonly replicaIdentityFull?: boolean
}

export interface RunConfig {
  /** `undefined`: the embedded PostgreSQL. Never logged as is (see `Redact`). */
  readonly databaseUrl: string | undefined
  /** The replication connection's own URL; `undefined`: the database URL's. Never logged as is. */
  readonly replicationUrl: string | undefined
  /** How long to wait for an unreachable server (ms); `undefined`: for ever, `0`: not at all. */
  readonly startupTimeoutMs: number | undefined
  readonly streamId: string
  readonly instanceId: string
  readonly tables: ReadonlyArray<TableSpec>
  /** Whole schemas (`--table 'sales.*'`), exact names: every table in them, including ones created later. */
  readonly schemas: ReadonlyArray<string>
  /** What the publication publishes (`--publish`; all four by default). */
  readonly publishes: Publishes
  /** A partitioned table's changes named by it, not its partitions (`--partition-root`). */
  readonly publishViaPartitionRoot: boolean
  /** Stored generated columns in the lines (`--generated-columns`); `undefined`: stored on PostgreSQL 18+, else none. */
  readonly generatedColumns: "stored" | "none" | undefined
  readonly lock: "advisory" | "lease"
  readonly slotMode: "temporary" | "persistent"
  readonly sink: Sink
  readonly httpPort: number | undefined
  /** The ownership timing, checked by the core's rules (`OwnershipConfig`); milliseconds, only what was given. */
  readonly ownership: Pick<OwnershipConfig.OwnershipOptions, "schema" | "acquireInterval" | "heartbeatInterval" | "lossDeadline" | "serverReleaseBound" | "leaseDuration" | "renewInterval" | "onLoss">
  readonly walHeartbeatIntervalMs: number | undefined
  readonly onSlotLost: "fail" | "recreate"
  /** The http sink, on a 4xx that retrying cannot fix: stop with the error (default) or skip the batch. */
  readonly onSinkRejected: "fail" | "skip"
  /** `initial`: each table is backfilled once, when it first appears in the stream. */
  readonly snapshot: "never" | "initial"
  /** Rows per backfill chunk. */
  readonly chunkSize: number
  /** Standbys whose copy of the failover slot is checked for readiness. Never logged as they are. */
  readonly standbyUrls: ReadonlyArray<string>
}

const invalid = (option: string, message: string) => new ConfigInvalid({ option, message: `--${option}: ${message}` })

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

/**
 * Reads one identifier at `at` by PostgreSQL's rules (quoted: exact; unquoted: folded to lower case), stopping at
 * any character in `stops` outside quotes. The name, where it ended, or why it is not a name.
 */
const identifier = (text: string, at: number, stops: string): { readonly name: string; readonly end: number } | string => {
  let i = at
  if (text[i] === "\"") {
    let name = ""
    i++
    for (;;) {
      if (i >= text.length) return "has an unterminated quoted name"
      if (text[i] === "\"") {
        if (text[i + 1] === "\"") {
          name += "\""
          i += 2
          continue
        }
        i++
        break
      }
      name += text[i]
      i++
    }
    if (name.length === 0) return "has an empty quoted name"
    return { name, end: i }
  }
  let end = i
  while (end < text.length && !stops.includes(text[end]!) && !/\s/.test(text[end]!)) end++
  const name = text.slice(i, end)
  if (!/^[A-Za-z_][A-Za-z0-9_$]*$/.test(name)) {
    return name.length === 0 ? "has an empty name" : `has ${JSON.stringify(name)}, which is not a name without quotes (letters, digits, _ and $, not first a digit)`
  }
  return { name: name.toLowerCase(), end }
}

/** `schema.table [(column, ...)] [WHERE filter]`, by PostgreSQL's identifier rules; see the module comment. */
const tableOf = (text: string): TableSpec | ConfigInvalid => {
  const bad = (why: string) =>
    invalid("table", `${JSON.stringify(text)} ${why}; write schema.table, e.g. public.orders or "Sales"."Orders", optionally followed by (columns) and WHERE filter`)
  const parts: Array<string> = []
  let i = 0
  for (;;) {
    const id = identifier(text, i, ".(")
    if (typeof id === "string") return bad(id)
    parts.push(id.name)
    i = id.end
    if (text[i] !== ".") break
    i++
  }
  if (parts.length > 2) return bad("has more than two parts")
  const [schema, name] = parts.length === 2 ? parts : ["public", parts[0]]
  let rest = text.slice(i).trimStart()
  let columns: Array<string> | undefined
  if (rest.startsWith("(")) {
    columns = []
    let j = 1
    for (;;) {
      while (/\s/.test(rest[j] ?? "")) j++
      const id = identifier(rest, j, ",)")
      if (typeof id === "string") return bad(`: its column list ${id}`)
      columns.push(id.name)
      j = id.end
      while (/\s/.test(rest[j] ?? "")) j++
      if (rest[j] === ",") {
        j++
        continue
      }
      if (rest[j] === ")") break
      return bad(": its column list is not closed with )")
    }
    rest = rest.slice(j + 1).trimStart()
  }
  let where: string | undefined
  if (rest.length > 0) {
    const keyword = /^where\s+/i.exec(rest)
    if (keyword === null) return bad(`has ${JSON.stringify(rest)} after the name, where only (columns) and WHERE filter may follow`)
    where = rest.slice(keyword[0].length).trim()
    const problem = Subscription.filterProblem(where)
    if (problem !== undefined) return invalid("table", `${JSON.stringify(text)}: ${problem}`)
  }
  return { schema: schema!, name: name!, ...(columns === undefined ? {} : { columns }), ...(where === undefined ? {} : { where }) }
}

/**
 * `SLOTKEEPER_TABLES`: tables separated by commas — those inside a column list's parentheses or inside quotes
 * (`'...'` in a filter, `"..."` in a name) do not separate.
 */
export const splitTables = (text: string): Array<string> => {
  const tables: Array<string> = []
  let depth = 0
  let quote: string | undefined
  let from = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (quote !== undefined) {
      if (c === quote) quote = undefined // a doubled quote closes and reopens: same result
    } else if (c === "'" || c === "\"") quote = c
    else if (c === "(") depth++
    else if (c === ")") depth--
    else if (c === "," && depth === 0) {
      tables.push(text.slice(from, i))
      from = i + 1
    }
  }
  tables.push(text.slice(from))
  return tables.map((t) => t.trim()).filter((t) => t.length > 0)
}

/** A table from the `--config` file: the string form, or the object form with exact column names. */
const fileTableOf = (t: unknown): TableSpec | ConfigInvalid => {
  if (typeof t === "string") return tableOf(t)
  const bad = (why: string) => invalid("config", `tables: ${JSON.stringify(t)} ${why}`)
  if (typeof t !== "object" || t === null || Array.isArray(t)) return bad("is neither a string nor an object")
  const o = t as Record<string, unknown>
  for (const key of Object.keys(o)) if (!["table", "columns", "where", "replicaIdentityFull"].includes(key)) return bad(`has an unknown key ${JSON.stringify(key)}: use table, columns, where, replicaIdentityFull`)
  if (typeof o.table !== "string") return bad("needs \"table\": \"schema.table\"")
  const base = tableOf(o.table)
  if (base instanceof ConfigInvalid) return base
  if (base.columns !== undefined || base.where !== undefined) return bad("has a column list or filter inside \"table\": use \"columns\" and \"where\"")
  if (o.columns !== undefined && (!Array.isArray(o.columns) || !o.columns.every((c) => typeof c === "string"))) return bad("has \"columns\" that is not a list of names")
  if (o.where !== undefined && typeof o.where !== "string") return bad("has \"where\" that is not a string")
  if (o.replicaIdentityFull !== undefined && typeof o.replicaIdentityFull !== "boolean") return bad("has \"replicaIdentityFull\" that is not true or false")
  if (typeof o.where === "string") {
    const problem = Subscription.filterProblem(o.where)
    if (problem !== undefined) return bad(problem)
  }
  return {
    ...base,
    ...(o.columns === undefined ? {} : { columns: o.columns as Array<string> }),
    ...(o.where === undefined ? {} : { where: (o.where as string).trim() }),
    ...(o.replicaIdentityFull === undefined ? {} : { replicaIdentityFull: o.replicaIdentityFull as boolean })
  }
}

/** `500ms`, `5s`, `2m`, `1h`, or Effect's `5 seconds`: milliseconds, or why not. Zero only when `zero` allows it. */
export const durationOf = (option: string, text: string, zero = false): number | ConfigInvalid => {
  const short = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/.exec(text.trim())
  const millis = short !== null
    ? Number(short[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[short[2] as "ms" | "s" | "m" | "h"]
    : Option.match(Duration.fromInput(text as Duration.Input), { onNone: () => Number.NaN, onSome: Duration.toMillis })
  if (!Number.isFinite(millis) || millis < 0 || (millis === 0 && !zero)) {
    return invalid(option, `${JSON.stringify(text)} is not a ${zero ? "" : "positive "}duration: write e.g. 500ms, 5s or 2m`)
  }
  return millis
}

/**
 * The `--config` file's contents (`text`, read from `path`), as options. Values keep their flag form (strings,
 * a number for `httpPort`); `make` checks them like flags.
 */
const inputOfFile = (path: string, text: string): RunInput | ConfigInvalid => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return invalid("config", `${path}: is not JSON (${(e as Error).message})`)
  }
  return inputOfValue(path, value)
}

/** A JSON value (`where` names it in messages: a file, or a part of one) as options, checked like a file's. */
const inputOfValue = (where: string, value: unknown): RunInput | ConfigInvalid => {
  const bad = (why: string) => invalid("config", `${where}: ${why}`)
  if (typeof value !== "object" || value === null || Array.isArray(value)) return bad("must be a JSON object of options, e.g. {\"tables\": [\"public.orders\"]}")
  const o = value as Record<string, unknown>
  // the keys and their kinds are RunOptions' (a file cannot name another file)
  const fileOptions = RunOptions.runOptions.filter((option) => option.key !== "config")
  for (const key of Object.keys(o)) {
    const option = fileOptions.find((option) => option.key === key)
    if (option === undefined) return bad(`unknown option ${JSON.stringify(key)}; the options are ${fileOptions.map((option) => option.key).join(", ")}`)
    const v = o[key]
    switch (option.kind) {
      case "list":
        if (!Array.isArray(v) || (key !== "tables" && !v.every((u) => typeof u === "string"))) return bad(`${JSON.stringify(key)} must be a list${key === "tables" ? "" : " of strings"}`)
        break
      case "boolean":
        if (typeof v !== "boolean") return bad(`${JSON.stringify(key)} must be true or false`)
        break
      case "port":
      case "count":
        if (typeof v !== "number") return bad(`${JSON.stringify(key)} must be a number`)
        break
      case "duration":
        if (typeof v !== "string" && typeof v !== "number") return bad(`${JSON.stringify(key)} must be a string (or milliseconds)`)
        break
      case "choice":
      case "string":
        if (typeof v !== "string") return bad(`${JSON.stringify(key)} must be a string${option.kind === "choice" ? `: ${option.choices!.join(" or ")}` : ""}`)
    }
  }
  const input: Record<string, unknown> = { ...o }
  for (const key of [...durationOptions, "startupTimeout"]) if (typeof o[key] === "number") input[key] = `${o[key]}ms`
  return input as RunInput
}

/** Flags and environment first, then the file; the file's tables are added to the flags' ones. */
export const merge = (flags: RunInput, file: RunInput): RunInput => {
  const merged: Record<string, unknown> = { ...file }
  for (const [key, value] of Object.entries(flags)) {
    if (value !== undefined && key !== "tables" && !(key === "standbyUrls" && (value as ReadonlyArray<string>).length === 0)) merged[key] = value
  }
  merged.tables = [...(flags.tables ?? []), ...(file.tables ?? [])]
  return merged as RunInput
}

const sinkOf = (text: string): Sink | ConfigInvalid => {
  if (text === "stdout") return { _tag: "Stdout" }
  if (text.startsWith("file:")) {
    const path = text.slice("file:".length)
    if (path.length === 0) return invalid("sink", "file: needs a path, e.g. file:./changes.ndjson")
    return { _tag: "File", path }
  }
  // shown without its password, even when it is too malformed to parse
  const shown = JSON.stringify(Redact.text(text))
  if (text.startsWith("http://") || text.startsWith("https://")) {
    try {
      const url = new URL(text)
      if (url.hostname.length === 0) return invalid("sink", `${shown} has no host`)
      return { _tag: "Http", url: url.toString() }
    } catch {
      return invalid("sink", `${shown} is not a URL`)
    }
  }
  return invalid("sink", `${shown} is not a sink: use stdout, file:PATH, or an http:// or https:// URL`)
}

/** `--schema` checked by the core's rule (a lowercase identifier, safe in SQL text as it is). */
const schemaOf = (schema: string): string | ConfigInvalid => {
  const checked = OwnershipConfig.make({ streamId: "default", instanceId: "check", schema })
  return Result.isFailure(checked) ? invalid("schema", checked.failure.message) : checked.success.schema
}

/** Why `url` is not a PostgreSQL URL, or `undefined` when it is one. */
export const checkDatabaseUrl = (url: string, option = "database-url"): ConfigInvalid | undefined => {
  // libpq's rules, in this process's environment (PG* variables, ~/.pgpass, ~/.postgresql/), every named file read
  const checked = Connector.check(url)
  return Result.isFailure(checked) ? invalid(option, checked.failure.message) : undefined
}

const configOf = (input: RunInput): RunConfig | ConfigInvalid => {
  if (input.databaseUrl !== undefined) {
    const bad = checkDatabaseUrl(input.databaseUrl)
    if (bad !== undefined) return bad
  }
  if (input.replicationUrl !== undefined) {
    const bad = checkDatabaseUrl(input.replicationUrl, "replication-url")
    if (bad !== undefined) return bad
  }
  let startupTimeoutMs: number | undefined
  if (input.startupTimeout !== undefined) {
    const millis = /^0+(ms)?$/.test(input.startupTimeout.trim()) ? 0 : durationOf("startup-timeout", input.startupTimeout, true)
    if (typeof millis !== "number") return millis
    startupTimeoutMs = millis
  }
  const streamId = input.streamId ?? "default"
  const badStream = StreamId.validate(streamId)
  if (badStream !== undefined) return invalid("stream-id", badStream.message)
  // default: the host (a pod's name on Kubernetes) and the process, so two instances on one host differ
  const instanceId = input.instanceId ?? `${hostname().replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 50)}-${process.pid}`
  const badInstance = StreamId.validateInstanceId(instanceId)
  if (badInstance !== undefined) return invalid("instance-id", badInstance.message)
  const lock = input.lock ?? "advisory"
  if (lock !== "advisory" && lock !== "lease") return invalid("lock", `${JSON.stringify(lock)}: use advisory or lease`)
  const slotMode = input.slotMode ?? "temporary"
  if (slotMode !== "temporary" && slotMode !== "persistent") return invalid("slot-mode", `${JSON.stringify(slotMode)}: use temporary or persistent`)
  const tables: Array<TableSpec> = []
  const schemas: Array<string> = []
  for (const text of input.tables ?? []) {
    // a whole schema: schema.* (nothing after it: a schema's tables have no common columns or filter)
    const wildcard = typeof text === "string" ? wholeSchemaOf(text) : undefined
    if (wildcard instanceof ConfigInvalid) return wildcard
    if (wildcard !== undefined) {
      if (!schemas.includes(wildcard)) schemas.push(wildcard)
      continue
    }
    const t = typeof text === "string" ? tableOf(text) : fileTableOf(text)
    if (t instanceof ConfigInvalid) return t
    const same = tables.find((x) => x.schema === t.schema && x.name === t.name)
    if (same === undefined) tables.push(t)
    else if (JSON.stringify(same) !== JSON.stringify(t)) {
      // one table, one entry: the one that gives both is what the library would make of them (Desired): the columns
      // of both (all, if one has no list), the rows of either (all, if one has no filter)
      const columns = same.columns === undefined || t.columns === undefined ? undefined : [...new Set([...same.columns, ...t.columns])]
      const where = same.where === undefined || t.where === undefined ? undefined : same.where === t.where ? t.where : `(${same.where}) OR (${t.where})`
      const both = `${Subscription.qualifiedName(t.schema, t.name)}${columns === undefined ? "" : ` (${columns.map(Subscription.quoteIdent).join(", ")})`}${where === undefined ? "" : ` WHERE ${where}`}`
      return invalid("table", `${t.schema}.${t.name} is given twice with different column lists or filters: give it once; for the rows and columns of both, ${both}`)
    }
  }
  const sink = sinkOf(input.sink ?? "stdout")
  if (sink instanceof ConfigInvalid) return sink
  if (input.httpPort !== undefined && (!Number.isInteger(input.httpPort) || input.httpPort < 1 || input.httpPort > 65535)) {
    return invalid("http-port", `${input.httpPort} is not a TCP port: use 1..65535`)
  }
  if (input.chunkSize !== undefined && (!Number.isInteger(input.chunkSize) || input.chunkSize < 1 || input.chunkSize > 1_000_000)) {
    return invalid("chunk-size", `${input.chunkSize} is not a chunk size: use a whole number of rows, 1..1000000`)
  }
  const durations: Partial<Record<typeof durationOptions[number], number>> = {}
  for (const key of durationOptions) {
    const text = input[key]
    if (text === undefined) continue
    const millis = durationOf(kebab(key), text)
    if (typeof millis !== "number") return millis
    durations[key] = millis
  }
  const choice = <A extends string>(option: string, value: string | undefined, allowed: ReadonlyArray<A>): A | ConfigInvalid =>
    value === undefined || allowed.includes(value as A) ? (value ?? allowed[0]) as A : invalid(option, `${JSON.stringify(value)}: use ${allowed.join(" or ")}`)
  const onLoss = choice("on-loss", input.onLoss, ["wait", "exit"] as const)
  if (typeof onLoss !== "string") return onLoss
  const onSlotLost = choice("on-slot-lost", input.onSlotLost, ["fail", "recreate"] as const)
  if (typeof onSlotLost !== "string") return onSlotLost
  const onSinkRejected = choice("on-sink-rejected", input.onSinkRejected, ["fail", "skip"] as const)
  if (typeof onSinkRejected !== "string") return onSinkRejected
  const snapshot = choice("snapshot", input.snapshot, ["never", "initial"] as const)
  if (typeof snapshot !== "string") return snapshot
  // a flag of the other lock mode would be ignored in silence: refused instead
  const otherMode = lock === "lease"
    ? (["heartbeatInterval", "lossDeadline", "serverReleaseBound"] as const).find((k) => durations[k] !== undefined)
    : (["leaseDuration", "renewInterval"] as const).find((k) => durations[k] !== undefined)
  if (otherMode !== undefined) {
    return invalid(kebab(otherMode), lock === "lease"
      ? `applies to --lock advisory only; in lease mode the timing is --lease-duration and --renew-interval`
      : `applies to --lock lease only; in advisory mode the timing is --heartbeat-interval, --loss-deadline and --server-release-bound`)
  }
  const publishes = publishOf(input.publish)
  if (publishes instanceof ConfigInvalid) return publishes
  // the default depends on the server (stored from PostgreSQL 18): left undefined until it is known
  const generatedColumns = input.publishGeneratedColumns === undefined ? undefined : choice("generated-columns", input.publishGeneratedColumns, ["stored", "none"] as const)
  if (generatedColumns instanceof ConfigInvalid) return generatedColumns
  const standbyUrls = input.standbyUrls ?? []
  for (const url of standbyUrls) {
    const bad = checkDatabaseUrl(url, "standby-url")
    if (bad !== undefined) return bad
  }
  const { walHeartbeatInterval, ...lockTiming } = durations
  const ownership = { ...lockTiming, onLoss, ...(input.schema === undefined ? {} : { schema: input.schema }) }
  // the timing rules are the core's: checked here, before anything connects (a field name becomes its flag)
  const checked = OwnershipConfig.make({ streamId, instanceId, mode: lock, ...ownership })
  if (Result.isFailure(checked)) {
    const e = checked.failure
    const field = e._tag !== "OwnershipConfigError" ? "stream-id" : e.field === "safetyMargin" ? "lease-duration" : kebab(e.field)
    return invalid(field, e.message.replace(/\b(acquireInterval|heartbeatInterval|lossDeadline|serverReleaseBound|leaseDuration|renewInterval)\b/g, (f) => `--${kebab(f)}`))
  }
  return {
    databaseUrl: input.databaseUrl,
    replicationUrl: input.replicationUrl,
    startupTimeoutMs,
    streamId,
    instanceId,
    tables,
    schemas,
    publishes,
    publishViaPartitionRoot: input.publishViaPartitionRoot ?? false,
    generatedColumns,
    lock,
    slotMode,
    sink: sink as Sink,
    httpPort: input.httpPort,
    ownership,
    walHeartbeatIntervalMs: walHeartbeatInterval,
    standbyUrls,
    onSlotLost,
    onSinkRejected,
    snapshot,
    chunkSize: input.chunkSize ?? Number(RunOptions.byKey("chunkSize").default)
  }
}

/** What a publication may publish, by PostgreSQL's `publish` option (the core's). */
export type Publishes = PgPublication.Publishes

const operations = PgPublication.operations

/**
 * `--publish`: some of insert, update, delete, truncate, comma-separated, as PostgreSQL reads its `publish` option
 * (case and spaces do not matter, a repeat is harmless). Publishing nothing is refused: the stream would carry no
 * change at all.
 */
const publishOf = (text: string | undefined): Publishes | ConfigInvalid => {
  if (text === undefined) return { insert: true, update: true, delete: true, truncate: true }
  const given = text.split(",").map((w) => w.trim().toLowerCase())
  const unknown = given.find((w) => !(operations as ReadonlyArray<string>).includes(w))
  if (unknown !== undefined) {
    return invalid("publish", `${JSON.stringify(text)}: ${unknown === "" ? "an empty item" : JSON.stringify(unknown)} is not an operation; give some of insert, update, delete, truncate, comma-separated (e.g. insert,truncate)`)
  }
  return { insert: given.includes("insert"), update: given.includes("update"), delete: given.includes("delete"), truncate: given.includes("truncate") }
}

/** The `publish` option's text for `publishes` (`insert, update`), as PostgreSQL writes it. */
export const publishText = PgPublication.publishList

/**
 * `schema.*`: a whole schema, its name by PostgreSQL's rules (`sales.*`, `"Sales".*`); `undefined` for a text that is
 * not one (a table).
 */
const wholeSchemaOf = (text: string): string | ConfigInvalid | undefined => {
  const trimmed = text.trim()
  if (!/\.\s*\*/.test(trimmed)) return undefined
  const bad = (why: string) => invalid("table", `${JSON.stringify(text)} ${why}; write schema.* for every table of a schema, e.g. sales.* or "Sales".*`)
  const id = identifier(trimmed, 0, ".")
  if (typeof id === "string") return bad(id)
  const rest = trimmed.slice(id.end)
  if (!/^\.\s*\*$/.test(rest)) return bad(rest.replace(/^\.\s*\*/, "").trim().length > 0 ? "has something after .*: a schema's tables take no column list or filter (give a table on its own for that)" : "is not schema.*")
  return id.name
}

/** A value or the option that is wrong, as a `Result`. */
const result = <A>(value: A | ConfigInvalid): Result.Result<A, ConfigInvalid> =>
  value instanceof ConfigInvalid ? Result.fail(value) : Result.succeed(value)

/** `schema.table [(column, ...)] [WHERE filter]`, by PostgreSQL's identifier rules; see the module comment. */
export const parseTable = (text: string): Result.Result<TableSpec, ConfigInvalid> => result(tableOf(text))

/** A duration option (`500ms`, `5s`, `2m`, `1h`, Effect's `5 seconds`): milliseconds, positive (or 0 with `zero`). */
export const parseDuration = (option: string, text: string, zero = false): Result.Result<number, ConfigInvalid> => result(durationOf(option, text, zero))

/** `--sink`: stdout, `file:PATH`, or an http(s) URL. */
export const parseSink = (text: string): Result.Result<Sink, ConfigInvalid> => result(sinkOf(text))

/** `--schema` checked by the core's rule (a lowercase identifier, safe in SQL text as it is). */
export const checkSchema = (schema: string): Result.Result<string, ConfigInvalid> => result(schemaOf(schema))

/**
 * The `--config` file's contents (`text`, read from `path`), as options. Values keep their flag form (strings,
 * a number for `httpPort`); `make` checks them like flags.
 */
export const fromFile = (path: string, text: string): Result.Result<RunInput, ConfigInvalid> => result(inputOfFile(path, text))

/** Options from a JSON value already parsed (a stream of a fleet's file), checked like a `--config` file's. */
export const fromValue = (where: string, value: unknown): Result.Result<RunInput, ConfigInvalid> => result(inputOfValue(where, value))

/** The options checked, with their defaults, or the first one that is wrong (what to change, in its flag's name). */
export const make = (input: RunInput): Result.Result<RunConfig, ConfigInvalid> => result(configOf(input))
