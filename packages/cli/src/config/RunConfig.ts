/**
 * RunConfig: `slotkeeper run`'s options, checked before anything touches a database — each problem is one
 * `ConfigInvalid` naming the option and what to change (the command exits 2 with it).
 *
 * **Table names** follow PostgreSQL's rules: `schema.table`, each part unquoted (folded to lower case) or in double
 * quotes (exact, `""` for a quote); without a schema, `public`. So `--table Orders` is `public.orders`, and
 * `--table '"Sales"."Orders"'` is exactly that.
 */
import { hostname } from "node:os"
import { Schema } from "effect"
import { StreamId, Subscription } from "@slotkeeper/core"

export class ConfigInvalid extends Schema.TaggedError<ConfigInvalid>()("ConfigInvalid", {
  option: Schema.String,
  message: Schema.String
}) {}

export type Sink =
  | { readonly _tag: "Stdout" }
  | { readonly _tag: "File"; readonly path: string }
  | { readonly _tag: "Http"; readonly url: string }

export interface RunInput {
  readonly databaseUrl: string | undefined
  readonly streamId: string
  readonly tables: ReadonlyArray<string>
  readonly lock: string
  readonly slotMode: string
  readonly instanceId: string | undefined
  readonly sink: string
  readonly httpPort: number | undefined
}

export interface RunConfig {
  /** `undefined`: the embedded PostgreSQL. Never logged as is (see `Redact`). */
  readonly databaseUrl: string | undefined
  readonly streamId: string
  readonly instanceId: string
  readonly tables: ReadonlyArray<Subscription.TableRef & { readonly schema: string }>
  readonly lock: "advisory" | "lease"
  readonly slotMode: "temporary" | "persistent"
  readonly sink: Sink
  readonly httpPort: number | undefined
}

const invalid = (option: string, message: string) => new ConfigInvalid({ option, message: `--${option}: ${message}` })

/** Splits `schema.table` by PostgreSQL's identifier rules; see the module comment. */
export const parseTable = (text: string): { readonly schema: string; readonly name: string } | ConfigInvalid => {
  const parts: Array<string> = []
  let i = 0
  const bad = (why: string) => invalid("table", `${JSON.stringify(text)} ${why}; write schema.table, e.g. public.orders or "Sales"."Orders"`)
  while (i <= text.length) {
    if (text[i] === "\"") {
      let name = ""
      i++
      for (;;) {
        if (i >= text.length) return bad("has an unterminated quoted name")
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
      if (name.length === 0) return bad("has an empty quoted name")
      parts.push(name)
    } else {
      let end = i
      while (end < text.length && text[end] !== ".") end++
      const name = text.slice(i, end)
      if (!/^[A-Za-z_][A-Za-z0-9_$]*$/.test(name)) {
        return bad(name.length === 0 ? "has an empty name" : `has ${JSON.stringify(name)}, which is not a name without quotes (letters, digits, _ and $, not first a digit)`)
      }
      parts.push(name.toLowerCase())
      i = end
    }
    if (i === text.length) break
    if (text[i] !== ".") return bad("has something after a quoted name")
    i++
  }
  if (parts.length > 2) return bad("has more than two parts")
  const [schema, name] = parts.length === 2 ? parts : ["public", parts[0]]
  return { schema: schema!, name: name! }
}

export const parseSink = (text: string): Sink | ConfigInvalid => {
  if (text === "stdout") return { _tag: "Stdout" }
  if (text.startsWith("file:")) {
    const path = text.slice("file:".length)
    if (path.length === 0) return invalid("sink", "file: needs a path, e.g. file:./changes.ndjson")
    return { _tag: "File", path }
  }
  if (text.startsWith("http://") || text.startsWith("https://")) {
    try {
      const url = new URL(text)
      if (url.hostname.length === 0) return invalid("sink", `${JSON.stringify(text)} has no host`)
      return { _tag: "Http", url: url.toString() }
    } catch {
      return invalid("sink", `${JSON.stringify(text)} is not a URL`)
    }
  }
  return invalid("sink", `${JSON.stringify(text)} is not a sink: use stdout, file:PATH, or an http:// or https:// URL`)
}

/** Why `url` is not a PostgreSQL URL, or `undefined` when it is one. */
export const checkDatabaseUrl = (url: string): ConfigInvalid | undefined => {
  try {
    const u = new URL(url)
    return u.protocol === "postgres:" || u.protocol === "postgresql:"
      ? undefined
      : invalid("database-url", `must be a postgres:// or postgresql:// URL, not ${u.protocol}//...`)
  } catch {
    return invalid("database-url", "is not a URL: write postgres://user:password@host:5432/database")
  }
}

export const make = (input: RunInput): RunConfig | ConfigInvalid => {
  if (input.databaseUrl !== undefined) {
    const bad = checkDatabaseUrl(input.databaseUrl)
    if (bad !== undefined) return bad
  }
  const badStream = StreamId.validate(input.streamId)
  if (badStream !== undefined) return invalid("stream-id", badStream.message)
  // default: the host (a pod's name on Kubernetes) and the process, so two instances on one host differ
  const instanceId = input.instanceId ?? `${hostname().replace(/[^A-Za-z0-9_.-]/g, "_").slice(0, 50)}-${process.pid}`
  const badInstance = StreamId.validateInstanceId(instanceId)
  if (badInstance !== undefined) return invalid("instance-id", badInstance.message)
  if (input.lock !== "advisory" && input.lock !== "lease") return invalid("lock", `${JSON.stringify(input.lock)}: use advisory or lease`)
  if (input.slotMode !== "temporary" && input.slotMode !== "persistent") {
    return invalid("slot-mode", `${JSON.stringify(input.slotMode)}: use temporary or persistent`)
  }
  const tables: Array<{ schema: string; name: string }> = []
  for (const text of input.tables) {
    const t = parseTable(text)
    if ("_tag" in t) return t
    if (!tables.some((x) => x.schema === t.schema && x.name === t.name)) tables.push(t)
  }
  const sink = parseSink(input.sink)
  if ("_tag" in sink && sink._tag === "ConfigInvalid") return sink
  if (input.httpPort !== undefined && (!Number.isInteger(input.httpPort) || input.httpPort < 1 || input.httpPort > 65535)) {
    return invalid("http-port", `${input.httpPort} is not a TCP port: use 1..65535`)
  }
  return {
    databaseUrl: input.databaseUrl,
    streamId: input.streamId,
    instanceId,
    tables,
    lock: input.lock,
    slotMode: input.slotMode,
    sink: sink as Sink,
    httpPort: input.httpPort
  }
}
