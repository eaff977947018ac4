/**
 * HttpRoutes: what a probe or a scraper asks a running stream, as routes of Effect's `HttpRouter` — served by
 * whatever HTTP server the program provides (the CLI: `@effect/platform-node`'s `NodeHttpServer`).
 *
 * - `GET /health`, `GET /health/owner`: `StreamStatus.health` and `StreamStatus.owner` as JSON.
 * - `GET /metrics`: `StreamMetrics.prometheus`, Prometheus's text format by Effect's exporter.
 * - Anything else: 404 with the list of routes.
 *
 * **Details**
 * - Each request reads the `StreamStatus` snapshot anew; nothing is cached between requests.
 * - `/metrics` reads the `Metric.MetricRegistry` of the context the routes were built in (Effect's default: the
 *   process's), where the program counts its deliveries.
 * - The routes need only `effect`: a library user adds them to the router of their own server
 *   (`HttpRouter.serve(HttpRoutes.layer, ...)` with their platform's server layer).
 */
import { Effect, Layer, Metric } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import * as StreamMetrics from "./StreamMetrics.ts"
import * as StreamStatus from "./StreamStatus.ts"

const json = (answer: StreamStatus.Answer) => HttpServerResponse.jsonUnsafe(answer.body, { status: answer.status })

const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const status = yield* StreamStatus.StreamStatus
  // the registry of the context the routes are built in: where the program updates its counters
  const registry = yield* Metric.MetricRegistry
  yield* router.add("GET", "/health", Effect.map(status.snapshot, (s) => json(StreamStatus.health(s))))
  yield* router.add("GET", "/health/owner", Effect.map(status.snapshot, (s) => json(StreamStatus.owner(s))))
  yield* router.add("GET", "/metrics", Effect.map(Effect.flatMap(status.snapshot, StreamMetrics.prometheus), (body) =>
    HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })).pipe(
      Effect.provideService(Metric.MetricRegistry, registry)
    ))
}))

// what no route matched (routes with a path of their own are preferred to this one)
const notFound = HttpRouter.add("*", "*", HttpServerResponse.text("not found: GET /health, /health/owner or /metrics\n", { status: 404 }))

/** The routes, for an `HttpRouter`; the stream's `StreamStatus` must be provided. */
export const layer: Layer.Layer<never, never, HttpRouter.HttpRouter | StreamStatus.StreamStatus> = Layer.mergeAll(routes, notFound)
