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
 *
 * Started as root, the server runs as an unprivileged user (`ServerUser`), who must reach the folder: a folder under
 * a private one (a clone in a `mktemp -d` folder, a home folder of mode 0700) cannot be handed over without opening
 * what is above it. Then the server's folder is kept under `/var/tmp` instead, named after the folder asked for (so
 * the data is the same at the next start), and the log says where.
 */
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
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

/** Whether `user` can reach `dir` (search permission on every folder down to its nearest existing ancestor). */
const reachable = (dir: string, user: ServerUser.ServerUser): boolean => {
  if (user.kind === "self") return true
  let at = dir
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at)
  // `test -x` as that user: resolving the path needs search permission on each folder above it, too
  return spawnSync("test", ["-x", at], { uid: user.uid, gid: user.gid, stdio: "ignore" }).status === 0
}

/** The folder the server uses for `dir`: `dir`, or one `user` can reach (see the module comment). */
export const folderFor = (dir: string, user: ServerUser.ServerUser): string =>
  reachable(dirname(resolve(dir)), user)
    ? resolve(dir)
    : join("/var/tmp", `slotkeeper-embedded-${createHash("sha256").update(resolve(dir)).digest("hex").slice(0, 16)}`)

/** Starts (initialising on first use) the embedded server; stops it cleanly when the scope closes. */
export const make = (
  options: EmbeddedPostgresOptions
): Effect.Effect<PgServer.PgServer, PgBinaries.PgBinariesError | PgServer.PgServerError | ServerUser.ServerUserError, Scope.Scope> =>
  Effect.gen(function*() {
    const user = yield* ServerUser.resolve
    const baseDir = folderFor(options.dir, user)
    if (baseDir !== resolve(options.dir)) {
      yield* Effect.logWarning(`running as root: ${user.name}, who runs PostgreSQL, cannot reach ${resolve(options.dir)} (a folder above it is private); ` +
        `the embedded server's data is kept in ${baseDir} instead`)
    }
    yield* stopLeftover(join(baseDir, "data"))
    const install = yield* PgBinaries.find(options.major ?? 18).pipe(Effect.flatMap((found) => PgBinaries.reachableFor(found, user)))
    return yield* PgServer.make({
      name: "embedded",
      install,
      user,
      baseDir,
      removeOnClose: false,
      port: options.port,
      initdb: true
    })
  })
