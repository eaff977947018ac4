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
 * it (another program uses the port); it is never silently replaced, because users and sinks hold the URL.
 *
 * A process that was killed (SIGKILL, OOM) cannot stop its server, and PostgreSQL keeps running without its parent:
 * the next start would find the folder locked. So a server still running *from this folder's data* — its
 * `postmaster.pid` names a live `postgres` process of that data directory — is stopped first (fast shutdown), and
 * that is said in the log. A stale `postmaster.pid` of a dead process PostgreSQL handles by itself.
 */
import { existsSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
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

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Stops a server left running from `dataDir` by a process that died; see the module comment. */
const stopLeftover = (dataDir: string) =>
  Effect.gen(function*() {
    const pidFile = join(dataDir, "postmaster.pid")
    if (!existsSync(pidFile)) return
    const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0])
    if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return
    let cmdline = ""
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\u0000", " ")
    } catch {
      return
    }
    if (!cmdline.includes("postgres") || !cmdline.includes(dataDir)) return // the pid was reused by something else
    yield* Effect.logWarning(`the embedded PostgreSQL of ${dataDir} is still running (pid ${pid}) from a process that ended without stopping it; stopping it first`)
    process.kill(pid, "SIGINT") // fast shutdown
    for (let waited = 0; alive(pid) && waited < 30_000; waited += 50) yield* Effect.sleep("50 millis")
  })

/** Starts (initialising on first use) the embedded server; stops it cleanly when the scope closes. */
export const make = (
  options: EmbeddedPostgresOptions
): Effect.Effect<PgServer.PgServer, PgBinaries.PgBinariesError | PgServer.PgServerError | ServerUser.ServerUserError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* stopLeftover(join(resolve(options.dir), "data"))
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
