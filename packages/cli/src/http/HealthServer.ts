/**
 * HealthServer: `--http-port` — core's `HttpRoutes` (`GET /health`, `/health/owner`, `/metrics`) served on a port
 * by `@effect/platform-node`'s HTTP server, for as long as the command's scope lasts.
 *
 * A port that cannot be listened on (in use, not permitted) is bad input: `ConfigInvalid` for `--http-port`.
 */
import { createServer } from "node:http"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { HttpRoutes, StreamStatus } from "@slotkeeper/core"
import { Effect, Layer, type Scope } from "effect"
import { HttpRouter } from "effect/http"
import { ConfigInvalid } from "../config/RunConfig.ts"

/** Serves the routes on `port` (all interfaces) until the scope closes. */
export const serve = (port: number, snapshot: Effect.Effect<StreamStatus.Snapshot>): Effect.Effect<void, ConfigInvalid, Scope.Scope> =>
  Layer.build(
    HttpRouter.serve(HttpRoutes.layer, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provide(Layer.succeed(StreamStatus.StreamStatus)({ snapshot })),
      Layer.provide(NodeHttpServer.layer(createServer, { port, gracefulShutdownTimeout: "1 second" }))
    )
  ).pipe(
    Effect.asVoid,
    Effect.catchTag("ServeError", (e) => {
      const code = (e.cause as { code?: string } | undefined)?.code
      return Effect.fail(new ConfigInvalid({
        option: "http-port",
        message: `--http-port ${port}: cannot listen${code === undefined ? "" : ` (${code})`}: ${code === "EADDRINUSE" ? "another process uses the port; choose another" : "choose another port"}`
      }))
    })
  )
