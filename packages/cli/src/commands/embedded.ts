/**
 * `slotkeeper embedded`: starts the embedded PostgreSQL (npm-shipped binaries, `wal_level=logical`, data kept in a
 * folder that survives restarts), prints how to connect, and keeps it running until SIGINT/SIGTERM, when it is
 * stopped cleanly.
 */
import { Config, Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Embedded from "../config/Embedded.ts"

export const embedded = Command.make("embedded", {
  dataDir: Flag.String("data-dir").pipe(
    Flag.withFallbackConfig(Config.String("SLOTKEEPER_EMBEDDED_DIR")),
    Flag.withDescription(`folder of the embedded server's data and log (env SLOTKEEPER_EMBEDDED_DIR; default ${Embedded.defaultDir}); created on first use`),
    Flag.optional
  ),
  port: Flag.Int("port").pipe(
    Flag.withFallbackConfig(Config.Int("SLOTKEEPER_EMBEDDED_PORT")),
    Flag.filter((port) => port >= 1 && port <= 65535, (port) => `--port ${port} is not a TCP port: use 1..65535`),
    Flag.withDescription("TCP port on 127.0.0.1 (env SLOTKEEPER_EMBEDDED_PORT; default: the embedded package's, printed in DATABASE_URL)"),
    Flag.optional
  )
}, Effect.fn("slotkeeper.embedded")(function*({ dataDir, port }) {
  const pg = yield* Embedded.start("embedded", { dir: Option.getOrUndefined(dataDir), port: Option.getOrUndefined(port) })
  yield* Console.log(`embedded PostgreSQL ${pg.install.version} is running (wal_level=logical)`)
  yield* Console.log(`  data: ${pg.dataDir}`)
  yield* Console.log(`  log:  ${pg.logFile}`)
  yield* Console.log(`DATABASE_URL=${pg.url}`)
  yield* Console.log("Stop it with Ctrl-C (or SIGTERM); the data stays for the next start.")
  return yield* Effect.never
}, Effect.scoped)).pipe(
  Command.withDescription("Start the embedded PostgreSQL (the default database when no --database-url is given) and print its URL")
)
