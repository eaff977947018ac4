/**
 * FleetConfig: `slotkeeper fleet --config fleet.json` — the control database the runners share, this runner's
 * addresses, and the streams, each with `run`'s options — checked whole before anything connects.
 *
 * ```json
 * {
 *   "control": { "databaseUrl": "postgres://slotkeeper@control/fleet" },
 *   "defaults": { "lock": "advisory", "snapshot": "initial" },
 *   "streams": [
 *     { "id": "tenant_a", "databaseUrl": "postgres://.../a", "tables": ["public.orders"], "sink": "file:/data/a.ndjson" },
 *     { "id": "tenant_b", "databaseUrl": "postgres://.../b", "tables": ["public.orders"], "sink": "https://sink/b" }
 *   ]
 * }
 * ```
 *
 * **Details**
 * - A stream's keys are `run`'s `--config` keys (`RunOptions`), with `id` for `streamId`; `defaults` applies under
 *   every stream. A stream names its own database (no embedded PostgreSQL in a fleet) and at least one table.
 * - Per runner, not per stream: `httpPort` (one server for all of the runner's streams) and `instanceId` (the runner's
 *   name); a stream that sets them is refused, and so is `config` (a file cannot name another).
 * - Two streams with one id, or one sink file, are refused: each would overwrite the other's.
 * - `cluster` (optional): `shardLockRefreshInterval` and `shardLockExpiration` (durations, default `1s` and `3s`; the
 *   expiration at least three refreshes). The same on every runner. Longer tolerates a slow control database (one
 *   refresh slower than the interval releases all of a runner's shards), shorter moves a killed runner's streams
 *   sooner.
 * - **Ownership timing**: an advisory stream that sets none of `heartbeatInterval`, `lossDeadline` and
 *   `serverReleaseBound` gets `lossDeadline: "8s"` and `serverReleaseBound: "10s"` (`run`'s are 2 s and 4 s). A runner
 *   carries many streams on one event loop: 30 streams draining backlogs over 3 runners on a 2-core machine missed the
 *   2 s deadline dozens of times per stream — every miss a lost ownership and a restart — and drained in 292 s; with
 *   these, no loss, 69 s (`npm run bench -- fleet`). A crashed runner's locks are released by its closed sockets at
 *   once; the longer bound applies to a runner cut off or frozen.
 * - **Pooled SQL** (`poolSize`, default 4, as a stream's own pool under `run`): the runner's streams of one database share one pool of that many sessions
 *   for their guarded writes and reads (`SharedPools`: same `databaseUrl` text, same pool); each keeps its own lock
 *   session and replication connection. Read once, when the runner starts.
 * - Every refusal is a `ConfigInvalid` naming where it is (`fleet.json: streams[2] (tenant_b): ...`) and what to
 *   change; nothing has connected yet.
 */
import { Result } from "effect"
import * as RunConfig from "./RunConfig.ts"

/** An advisory stream's ownership timing in a fleet, unless the file gives it (see the module comment). */
export const fleetOwnershipTiming = { lossDeadline: "8s", serverReleaseBound: "10s" } as const

export interface FleetConfig {
  /** The control database: the cluster's runners and shard locks. */
  readonly controlUrl: string
  /**
   * The cluster's shard locks, in milliseconds: refreshed every `shardLockRefreshMs` (also how long one refresh may
   * take before the runner gives up all its shards), expiring after `shardLockExpirationMs` (how soon a killed
   * runner's shards move). Defaults 1 s and 3 s.
   */
  readonly shardLockRefreshMs: number
  readonly shardLockExpirationMs: number
  /** Sessions in the pool the runner's streams of one database share (`SharedPools`; default 4). */
  readonly poolSize: number
  /** Each stream's options, checked (`streamId` is the stream's `id`). */
  readonly streams: ReadonlyArray<RunConfig.RunConfig>
}

const perRunner = ["httpPort", "instanceId", "config", "streamId"] as const

const objectOf = (value: unknown): Record<string, unknown> | undefined =>
  typeof value === "object" && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : undefined

/** The file's text as a fleet; `instanceId` is this runner's name (every stream's instance). */
export const fromFile = (path: string, text: string, instanceId: string): Result.Result<FleetConfig, RunConfig.ConfigInvalid> => {
  const bad = (why: string) => Result.fail(new RunConfig.ConfigInvalid({ option: "config", message: `--config: ${path}: ${why}` }))
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    return bad(`is not JSON (${(e as Error).message})`)
  }
  const file = objectOf(value)
  if (file === undefined) return bad("must be a JSON object: {\"control\": {\"databaseUrl\": ...}, \"streams\": [...]}")
  for (const key of Object.keys(file)) {
    if (!["control", "cluster", "defaults", "streams", "poolSize"].includes(key)) return bad(`unknown key ${JSON.stringify(key)}; the keys are control, cluster, defaults, streams, poolSize`)
  }
  const poolSize = file.poolSize ?? 4
  if (typeof poolSize !== "number" || !Number.isInteger(poolSize) || poolSize < 1 || poolSize > 100) {
    return bad(`poolSize: ${JSON.stringify(file.poolSize)} is not a number of sessions: give an integer 1..100 (default 4), the sessions the runner's streams of one database share`)
  }
  const control = objectOf(file.control)
  if (control === undefined || typeof control.databaseUrl !== "string" || control.databaseUrl.length === 0) {
    return bad("\"control\" must be {\"databaseUrl\": \"postgres://...\"}: the database the runners share (their membership and shard locks)")
  }
  for (const key of Object.keys(control)) {
    if (key !== "databaseUrl") return bad(`control: unknown key ${JSON.stringify(key)}; the only key is databaseUrl`)
  }
  const cluster = objectOf(file.cluster ?? {})
  if (cluster === undefined) return bad("\"cluster\" must be an object: {\"shardLockRefreshInterval\": \"1s\", \"shardLockExpiration\": \"3s\"}")
  const timings = { shardLockRefreshInterval: 1000, shardLockExpiration: 3000 }
  for (const [key, value] of Object.entries(cluster)) {
    if (!(key in timings)) return bad(`cluster: unknown key ${JSON.stringify(key)}; the keys are shardLockRefreshInterval, shardLockExpiration`)
    const millis = typeof value === "string" ? RunConfig.durationOf("config", value) : typeof value === "number" && value > 0 ? value : new RunConfig.ConfigInvalid({ option: "config", message: "" })
    if (typeof millis !== "number") return bad(`cluster: ${key}: ${JSON.stringify(value)} is not a positive duration: write e.g. 1s or 500ms`)
    timings[key as keyof typeof timings] = millis
  }
  if (timings.shardLockExpiration < 3 * timings.shardLockRefreshInterval) {
    return bad(`cluster: shardLockExpiration (${timings.shardLockExpiration} ms) must be at least three shardLockRefreshInterval (${timings.shardLockRefreshInterval} ms): a runner must be able to miss a refresh without losing its shards`)
  }
  const defaultsValue = file.defaults ?? {}
  const defaults = RunConfig.fromValue(`${path}: defaults`, defaultsValue)
  if (Result.isFailure(defaults)) return Result.fail(defaults.failure)
  for (const key of [...perRunner, "databaseUrl", "tables", "sink"] as const) {
    if (key in (objectOf(defaultsValue) ?? {})) return bad(`defaults: ${JSON.stringify(key)} cannot be a default: ${perRunner.includes(key as typeof perRunner[number]) ? "it is the runner's (a flag of slotkeeper fleet)" : "each stream names its own"}`)
  }
  if (!Array.isArray(file.streams) || file.streams.length === 0) return bad("\"streams\" must be a list of at least one stream: {\"id\": ..., \"databaseUrl\": ..., \"tables\": [...], \"sink\": ...}")
  const streams: Array<RunConfig.RunConfig> = []
  for (const [i, entry] of file.streams.entries()) {
    const object = objectOf(entry)
    const id = object?.id
    const where = `${path}: streams[${i}]${typeof id === "string" ? ` (${id})` : ""}`
    const refuse = (why: string) => Result.fail(new RunConfig.ConfigInvalid({ option: "config", message: `--config: ${where}: ${why}` }))
    if (object === undefined) return refuse("must be an object with id, databaseUrl, tables and sink")
    if (typeof id !== "string") return refuse("\"id\" must be the stream's id, a string ([a-z0-9_], at most 40)")
    const { id: _, ...options } = object
    for (const key of perRunner) {
      if (key in options) return refuse(`${JSON.stringify(key)} is the runner's, not a stream's${key === "streamId" ? ": use \"id\"" : key === "config" ? "" : ": give it to slotkeeper fleet"}`)
    }
    const input = RunConfig.fromValue(where, options)
    if (Result.isFailure(input)) return Result.fail(input.failure)
    if (input.success.databaseUrl === undefined) return refuse("\"databaseUrl\" is missing: a fleet's stream names its database")
    if ((input.success.tables ?? []).length === 0) return refuse("\"tables\" is missing: name at least one table to stream")
    const merged = { ...defaults.success, ...input.success }
    // an advisory stream whose timing is not given gets the fleet's (see the module comment)
    const timing = merged.lock !== "lease" && merged.heartbeatInterval === undefined && merged.lossDeadline === undefined && merged.serverReleaseBound === undefined
      ? fleetOwnershipTiming
      : {}
    const config = RunConfig.make({ ...timing, ...merged, streamId: id, instanceId })
    if (Result.isFailure(config)) return refuse(config.failure.message)
    const same = streams.find((s) => s.streamId === config.success.streamId)
    if (same !== undefined) return refuse(`stream id ${id} is given twice: each stream needs its own id (its slot and publication are named by it)`)
    const sink = config.success.sink
    if (sink._tag === "File" && streams.some((s) => s.sink._tag === "File" && s.sink.path === sink.path)) {
      return refuse(`sink file ${sink.path} is another stream's too: give each stream its own file`)
    }
    streams.push(config.success)
  }
  return Result.succeed({ controlUrl: control.databaseUrl, poolSize, shardLockRefreshMs: timings.shardLockRefreshInterval, shardLockExpirationMs: timings.shardLockExpiration, streams })
}
