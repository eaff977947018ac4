/**
 * OTLP export (`Telemetry`) against a local collector stub (a real HTTP server receiving OTLP/JSON): in process for
 * the redaction of logs, and `slotkeeper run` as a child process for metrics, traces and logs of a real stream.
 */
import { createServer } from "node:http"
import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import * as Telemetry from "../src/config/Telemetry.ts"
import { ids, start, streaming, until } from "./cli-helpers.ts"

/** A collector: what each path received (request bodies, as text). */
const collector = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ port: number; received: Map<string, Array<string>>; close: () => Promise<void> }>((resolve) => {
      const received = new Map<string, Array<string>>()
      const server = createServer((request, response) => {
        let body = ""
        request.on("data", (d: Buffer) => (body += d.toString()))
        request.on("end", () => {
          received.set(request.url ?? "", [...(received.get(request.url ?? "") ?? []), body])
          response.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () =>
        resolve({ port: (server.address() as { port: number }).port, received, close: () => new Promise((r) => server.close(() => r())) }))
    })
  ),
  (c) => Effect.promise(c.close)
)
const all = (c: { received: Map<string, Array<string>> }, path: string) => (c.received.get(path) ?? []).join("\n")

describe("Telemetry: OTLP export (a local collector stub)", () => {
  it("no endpoint: nothing is set up; an endpoint that is not a URL is bad input", () => {
    assert.strictEqual(Result.getOrThrow(Telemetry.fromEnv({}, "0")), Layer.empty)
    const bad = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }, "0")
    assert.isTrue(Result.isFailure(bad) && bad.failure._tag === "ConfigInvalid")
  })

  it.live("logs leave the process redacted, as the console's do", () =>
    Effect.gen(function*() {
      const c = yield* collector
      const layer = Result.getOrThrow(Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${c.port}`, OTEL_BLRP_SCHEDULE_DELAY: "100" }, "0"))
      yield* Effect.logWarning("connecting to postgres://app:s3cret@db:5432/orders").pipe(Effect.provide(layer))
      const logs = all(c, "/v1/logs")
      assert.include(logs, "connecting to postgres://app:***@db:5432/orders")
      assert.notInclude(logs, "s3cret")
    }))

  it.live("slotkeeper run exports its metrics, its spans and its logs while it streams, and flushes them when it stops", () =>
    Effect.gen(function*() {
      const c = yield* collector
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      const a = yield* start(["--database-url", pg.url, "--table", "items", "--instance-id", "a"], {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${c.port}`,
        OTEL_SERVICE_NAME: "orders-cdc",
        OTEL_METRIC_EXPORT_INTERVAL: "300",
        OTEL_BLRP_SCHEDULE_DELAY: "200",
        OTEL_BSP_SCHEDULE_DELAY: "200"
      })
      yield* streaming(pg)
      yield* pg.query("INSERT INTO items VALUES (1, 'x')")
      yield* until(() => (ids(a).length >= 1 ? true : undefined), 20_000, "a row")
      yield* until(() => (/slotkeeper_changes_delivered_total/.test(all(c, "/v1/metrics")) && /"asInt":"1"|"asDouble":1\b/.test(all(c, "/v1/metrics")) ? true : undefined), 20_000, "the delivery counter exported")
      a.child.kill("SIGTERM")
      assert.strictEqual(yield* Effect.promise(() => a.exited), 0, a.stderr())
      const metrics = all(c, "/v1/metrics")
      assert.include(metrics, "orders-cdc")
      assert.include(metrics, "slotkeeper_changes_delivered_total")
      assert.include(all(c, "/v1/logs"), "ownership of stream default acquired")
      // the command's span ends with the command: flushed at the stop
      assert.include(all(c, "/v1/traces"), "slotkeeper.run")
    }))
})
