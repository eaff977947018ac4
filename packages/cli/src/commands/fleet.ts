/**
 * `slotkeeper fleet --config fleet.json`: one runner of a fleet — many streams over many runners. Every runner is
 * started with the same file; the runners find each other through the control database (`effect/cluster`'s
 * `SqlRunnerStorage`: runners registered and heartbeating there) and ping each other over a socket (`--runner-host`,
 * `--runner-port`). Each stream runs on the runner `@slotkeeper/core`'s `FleetPlacement` gives it over the live
 * runners (balanced to ±1), exactly as `slotkeeper run` runs it (`StreamProgram`), under its own ownership and
 * fencing — placement is only a hint (`Fleet`).
 *
 * **Details**
 * - The file is checked whole before anything connects (`FleetConfig`): bad input exits 2, saying where.
 * - The file is watched (read again every 2 s): streams added, removed or changed start, stop (draining and releasing
 *   their ownership) or restart on every runner, without restarting runners. A file that no longer checks is said
 *   (an error log) and ignored: the streams go on as they were.
 * - `--http-port` serves `GET /health`, `/streams` and `/metrics` (`FleetRoutes`).
 * - SIGTERM: every stream here is stopped — each drains and releases its ownership, all in parallel — and the runner
 *   leaves the cluster; the other runners' placement gives them its streams.
 */
import { readFileSync } from "node:fs"
import { hostname } from "node:os"
import { createServer } from "node:http"
import * as NodeClusterSocket from "@effect/platform-node/NodeClusterSocket"
import * as NodeCrypto from "@effect/platform-node/NodeCrypto"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { PgClient } from "@effect/sql-pg"
import { Fleet, FleetRoutes, Membership, SharedPools, StreamStatus } from "@slotkeeper/core"
import { Config, Duration, Effect, Layer, Option, Redacted, Result, Schedule, Stream } from "effect"
import { Command, Flag } from "effect/cli"
import { RunnerAddress, ShardingConfig, SqlMessageStorage, SqlRunnerStorage } from "effect/cluster"
import { HttpRouter } from "effect/http"
import * as FleetConfig from "../config/FleetConfig.ts"
import * as RunConfig from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import * as StreamProgram from "../stream/StreamProgram.ts"

/**
 * The cluster's timings (its defaults drop a killed runner after about 36 s): a runner heartbeats with its shard-lock
 * refresh, every second, and is no longer counted once its heartbeat is 3 s old by default (`cluster` in the file:
 * `FleetConfig`) — also how long a runner that cannot read membership keeps its streams (`Fleet`'s expiration);
 * runners ping each other every 2 s and mark one that does not answer unhealthy; membership is read every second — so
 * a killed runner's streams stream elsewhere within a few seconds (measured by the fleet CLI test).
 */
const fleetTimings = {
  refreshAssignmentsInterval: "1 second",
  runnerHealthCheckInterval: "2 seconds"
} as const

const read = (path: string) =>
  Effect.try({
    try: () => readFileSync(path, "utf8"),
    catch: (e) => new RunConfig.ConfigInvalid({ option: "config", message: `--config: cannot read ${path}: ${(e as Error).message}` })
  })

export const fleet = Command.make("fleet", {
  config: Flag.String("config").pipe(Flag.withDescription("the fleet's file: control database, defaults, streams (see Running many streams)"), Flag.withFallbackConfig(Config.String("SLOTKEEPER_CONFIG"))),
  instanceId: RunOptions.flag("instanceId"),
  runnerHost: Flag.String("runner-host").pipe(
    Flag.withDescription("the address other runners reach this one at (default: this host's name) (env SLOTKEEPER_RUNNER_HOST)"),
    Flag.withFallbackConfig(Config.String("SLOTKEEPER_RUNNER_HOST")),
    Flag.optional
  ),
  runnerPort: Flag.Int("runner-port").pipe(
    Flag.withDescription("the port runners talk to each other on (default 34431) (env SLOTKEEPER_RUNNER_PORT)"),
    Flag.withFallbackConfig(Config.Int("SLOTKEEPER_RUNNER_PORT")),
    Flag.withDefault(34431)
  ),
  httpPort: RunOptions.intFlag("httpPort")
}, Effect.fn("slotkeeper.fleet")(function*(flags) {
  const instanceId = Option.getOrElse(flags.instanceId, () => `${hostname()}-${process.pid}`)
  if (!Number.isInteger(flags.runnerPort) || flags.runnerPort < 1 || flags.runnerPort > 65535) {
    return yield* new RunConfig.ConfigInvalid({ option: "runner-port", message: `--runner-port ${flags.runnerPort} is not a TCP port: use 1..65535` })
  }
  const httpPort = Option.getOrUndefined(flags.httpPort)
  if (httpPort !== undefined && (!Number.isInteger(httpPort) || httpPort < 1 || httpPort > 65535)) {
    return yield* new RunConfig.ConfigInvalid({ option: "http-port", message: `--http-port ${httpPort} is not a TCP port: use 1..65535` })
  }
  // the text the first list comes from is the one the watcher compares with: a change made meanwhile is not missed
  let lastText = yield* read(flags.config)
  const first = yield* Effect.fromResult(FleetConfig.fromFile(flags.config, lastText, instanceId))
  yield* Effect.annotateLogsScoped({ instance: instanceId })

  // one pool per database for the guarded writes of the streams here (their lock sessions and replication
  // connections stay their own); closed after every stream stopped, this scope being the outermost
  const pools = yield* SharedPools.make({ instanceId, maxConnections: first.poolSize })

  // the streams here: their snapshots for /streams and /metrics
  const snapshots = new Map<string, Effect.Effect<StreamStatus.Snapshot>>()
  const streamOf = (config: RunConfig.RunConfig): Fleet.FleetStream<unknown, never> => ({
    id: config.streamId,
    version: JSON.stringify(config),
    run: (started) => Effect.scoped(Effect.gen(function*() {
      const prepared = yield* StreamProgram.prepare(config, config.databaseUrl!, config.tables, { pools })
      snapshots.set(config.streamId, prepared.snapshot)
      yield* Effect.addFinalizer(() => Effect.sync(() => snapshots.delete(config.streamId)))
      // started: streaming, or waiting as a standby behind another owner (the start gate's slot is given back)
      yield* Effect.forkScoped(Effect.gen(function*() {
        while (!["active", "waiting"].includes(StreamStatus.state(yield* prepared.snapshot))) yield* Effect.sleep("100 millis")
        yield* started
      }))
      yield* Effect.logInfo(`fleet: stream ${config.streamId} placed here`)
      return yield* prepared.run
    })).pipe(Effect.annotateLogs({ stream: config.streamId }))
  })

  // the file, watched: each version that checks is the list; one that does not is said and ignored
  const changes = Stream.fromEffectSchedule(
    Effect.gen(function*() {
      const text = yield* Effect.sync(() => {
        try {
          return readFileSync(flags.config, "utf8")
        } catch {
          return lastText
        }
      })
      if (text === lastText) return undefined
      lastText = text
      const checked = FleetConfig.fromFile(flags.config, text, instanceId)
      if (Result.isFailure(checked)) {
        yield* Effect.logError(`fleet: ${checked.failure.message} — the streams go on as they were`)
        return undefined
      }
      yield* Effect.logInfo(`fleet: ${flags.config} changed: ${checked.success.streams.length} streams`)
      return checked.success.streams
    }),
    Schedule.spaced("2 seconds")
  ).pipe(Stream.filter((list): list is ReadonlyArray<RunConfig.RunConfig> => list !== undefined))
  const lists = Stream.concat(Stream.make(first.streams), changes).pipe(Stream.map((list) => list.map(streamOf)))

  const address = RunnerAddress.make(Option.getOrElse(flags.runnerHost, () => hostname()), flags.runnerPort)
  const shardingConfig: Partial<ShardingConfig.ShardingConfig["Service"]> = {
    // Option-wrapped: a bare address would silently make a client-only runner on a random port
    runnerAddress: Option.some(address),
    runnerListenAddress: Option.some(RunnerAddress.make("0.0.0.0", flags.runnerPort)),
    shardLockRefreshInterval: Duration.millis(first.shardLockRefreshMs),
    shardLockExpiration: Duration.millis(first.shardLockExpirationMs),
    ...fleetTimings
  }
  // the cluster's tables in the control database under slotkeeper's own prefix (slotkeeper_cluster_runners, ...)
  // (the runner storage and the configuration are kept in the output: `Membership` reads them)
  const cluster = NodeClusterSocket.layer({ storage: "byo", shardingConfig }).pipe(
    Layer.provideMerge(Layer.mergeAll(
      SqlRunnerStorage.layerWith({ prefix: "slotkeeper_cluster" }).pipe(Layer.orDie),
      SqlMessageStorage.layerWith({ prefix: "slotkeeper_cluster" }).pipe(Layer.provide(NodeCrypto.layerDigest))
    )),
    // the storages read the same configuration
    Layer.provideMerge(ShardingConfig.layerFromEnv(shardingConfig)),
    Layer.provide(PgClient.layer({ url: Redacted.make(first.controlUrl), applicationName: `slotkeeper:fleet:${instanceId}` }))
  )

  const fleetLayer = Fleet.layer(lists, { expiration: Duration.millis(first.shardLockExpirationMs) }).pipe(
    Layer.provide(Membership.layerCluster),
    Layer.provide(cluster)
  )
  const http = httpPort === undefined ? Layer.empty : HttpRouter.serve(FleetRoutes.layer, { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provide(Layer.effect(FleetRoutes.FleetStatus)(Effect.gen(function*() {
      const running = yield* Fleet.Fleet
      return {
        runner: instanceId,
        streams: Effect.gen(function*() {
          const here = new Map((yield* running.here).map((h) => [h.id, h]))
          const { placed } = yield* running.placement
          return yield* Effect.forEach(yield* running.streams, (id) =>
            Effect.gen(function*() {
              const snapshot = snapshots.get(id)
              return { id, placedOn: placed.get(id), here: here.get(id), snapshot: snapshot === undefined ? undefined : yield* snapshot }
            }))
        })
      }
    }))),
    Layer.provide(NodeHttpServer.layer(createServer, { port: httpPort, gracefulShutdownTimeout: "1 second" }))
  )
  yield* Effect.logInfo(`fleet: runner ${instanceId} at ${address.host}:${address.port}, ${first.streams.length} streams in ${flags.config}`)
  return yield* Layer.launch(http.pipe(Layer.provideMerge(fleetLayer)))
}, Effect.scoped)).pipe(Command.withDescription("Run one runner of a fleet: many streams over many runners (Effect Cluster), each owned and fenced as by run"))
