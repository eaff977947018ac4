/**
 * EmbeddedPostgres: a PostgreSQL server from the npm-shipped binaries whose data survives restarts — the default
 * database of `slotkeeper` when no `--database-url` is given, so a newcomer needs no database of their own.
 *
 * Unlike `PgCluster` it keeps its folder when its scope closes (the server is stopped cleanly), listens on a fixed
 * port so its URL stays the same from one start to the next, and runs `initdb` only the first time. It has the
 * same `wal_level=logical` setup, and runs as an unprivileged user when started as root.
 *
 * **Details**
 *
 * The folder holds `data/` (the cluster), `sock/` and `postgres.log`. A port already in use is an error that names
 * it (another embedded server of the same folder is still running, or another program uses the port); it is never
 * silently replaced, because users and sinks hold the URL.
 */
import { resolve } from "node:path"
import { Effect, type Scope } from "effect"
import * as PgBinaries from "./PgBinaries.ts"
import * as PgServer from "./PgServer.ts"
import * as ServerUser from "./ServerUser.ts"

export interface EmbeddedPostgresOptions {
  /** The folder of the server (created if missing). */
  readonly dir: string
  readonly port: number
  readonly major?: number
}

export const defaultPort = 54329

/** Starts (initialising on first use) the embedded server; stops it cleanly when the scope closes. */
export const make = (
  options: EmbeddedPostgresOptions
): Effect.Effect<PgServer.PgServer, PgBinaries.PgBinariesError | PgServer.PgServerError | ServerUser.ServerUserError, Scope.Scope> =>
  Effect.gen(function*() {
    const user = yield* ServerUser.resolve
    const install = yield* PgBinaries.find(options.major ?? 18).pipe(Effect.flatMap((found) => PgBinaries.reachableFor(found, user)))
    return yield* PgServer.make({
      name: "embedded",
      install,
      user,
      baseDir: resolve(options.dir),
      removeOnClose: false,
      port: options.port,
      initdb: true
    })
  })
