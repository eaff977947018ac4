/**
 * FleetRoutes: what a probe or a scraper asks a fleet's runner, as routes of Effect's `HttpRouter`.
 *
 * - `GET /health`: 200 with the runner's name and the streams it runs (a runner is healthy while it serves; each
 *   stream's own health is in `/streams`).
 * - `GET /streams`: every stream of the fleet's list — the runner it is placed on (`placedOn`, as this runner sees
 *   membership), whether it runs on this runner, since when, how often it was run again, its last error, and for
 *   those here their state (`StreamStatus.state`), epoch and acknowledged position.
 * - `GET /metrics`: `StreamMetrics.prometheusOf` the snapshots of the streams here — every series labelled `stream`.
 */
import { Context, Effect, Layer, Metric } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as Lsn from "../Lsn.ts"
import * as StreamMetrics from "../service/StreamMetrics.ts"
import * as StreamStatus from "../service/StreamStatus.ts"
import type { Here } from "./Fleet.ts"

export interface FleetStatusShape {
  readonly runner: string
  /** Every stream of the list; `here` and `snapshot` for those on this runner. */
  readonly streams: Effect.Effect<ReadonlyArray<{ readonly id: string; readonly placedOn: string | undefined; readonly here: Here | undefined; readonly snapshot: StreamStatus.Snapshot | undefined }>>
}

export class FleetStatus extends Context.Service<FleetStatus, FleetStatusShape>()("@slotkeeper/core/FleetStatus") {}

const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const status = yield* FleetStatus
  const registry = yield* Metric.MetricRegistry
  yield* router.add("GET", "/health", Effect.map(status.streams, (streams) =>
    HttpServerResponse.jsonUnsafe({ runner: status.runner, streams: streams.filter((s) => s.here !== undefined).map((s) => s.id) })))
  yield* router.add("GET", "/streams", Effect.map(status.streams, (streams) =>
    HttpServerResponse.jsonUnsafe({
      runner: status.runner,
      streams: streams.map((s) => ({
        id: s.id,
        placedOn: s.placedOn ?? null,
        here: s.here !== undefined,
        ...(s.here === undefined ? {} : { since: new Date(s.here.since).toISOString(), restarts: s.here.restarts, lastError: s.here.lastError ?? null }),
        ...(s.snapshot === undefined ? {} : {
          state: StreamStatus.state(s.snapshot),
          epoch: s.snapshot.status._tag === "Active" ? s.snapshot.status.epoch : null,
          acknowledged: s.snapshot.acknowledgedLsn === undefined ? null : Lsn.format(s.snapshot.acknowledgedLsn)
        })
      }))
    })))
  yield* router.add("GET", "/metrics", Effect.flatMap(status.streams, (streams) =>
    StreamMetrics.prometheusOf(streams.flatMap((s) => (s.snapshot === undefined ? [] : [s.snapshot])))).pipe(
      Effect.map((body) => HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })),
      Effect.provideService(Metric.MetricRegistry, registry)
    ))
}))

const notFound = HttpRouter.add("*", "*", HttpServerResponse.text("not found: GET /health, /streams or /metrics\n", { status: 404 }))

/** The routes, for an `HttpRouter`; the runner's `FleetStatus` must be provided. */
export const layer: Layer.Layer<never, never, HttpRouter.HttpRouter | FleetStatus> = Layer.mergeAll(routes, notFound)
