/**
 * PgBouncer: a real PgBouncer (Debian's `pgbouncer`) in front of a test server — the transaction pooler users put
 * between their applications and PostgreSQL, which cannot carry the replication protocol.
 *
 * **Details**
 * - The binary is `SLOTKEEPER_PGBOUNCER`, else `pgbouncer` on the PATH or in `/usr/sbin`; `.ci/run` installs the
 *   Debian package when it is missing. PgBouncer refuses to run as root: as root it runs as the test servers' user.
 * - Every database of the server, `trust` for the users given (PgBouncer's own check), `pool_mode` as asked
 *   (transaction by default), and `ignore_startup_parameters` for slotkeeper's session settings that PgBouncer does
 *   not track (as a user configures it for any client that sends them).
 * - Stopped, and its folder removed, when the scope closes.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createConnection } from "node:net"
import { Effect, type Scope } from "effect"
import { PgServer, ServerUser } from "@slotkeeper/embedded"

export interface PgBouncer {
  readonly port: number
  /** A URL through the pooler to `database` as `user` (default: postgres). */
  readonly url: (options?: { readonly user?: string; readonly database?: string }) => string
  readonly logTail: () => string
}

/** The pgbouncer binary, or `undefined` when none is installed. */
export const binary = (): string | undefined => {
  const given = process.env.SLOTKEEPER_PGBOUNCER
  if (given !== undefined && given !== "") return given
  for (const candidate of ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"]) if (existsSync(candidate)) return candidate
  try {
    return execFileSync("sh", ["-c", "command -v pgbouncer"], { encoding: "utf8" }).trim() || undefined
  } catch {
    return undefined
  }
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port })
    socket.once("connect", () => (socket.destroy(), resolve(true)))
    socket.once("error", () => resolve(false))
  })

/** Starts PgBouncer in front of `server` (on 127.0.0.1), for `users`. */
export const make = (server: { readonly port: number }, options: { readonly users?: ReadonlyArray<string>; readonly poolMode?: "session" | "transaction" } = {}): Effect.Effect<PgBouncer, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const bin = binary()
    if (bin === undefined) return yield* Effect.fail(new Error("pgbouncer is not installed: apt-get install pgbouncer (or set SLOTKEEPER_PGBOUNCER)"))
    const user = yield* ServerUser.resolve.pipe(Effect.mapError((e) => new Error(e.message)))
    const port = yield* Effect.promise(() => PgServer.freePort())
    const dir = mkdtempSync(join(tmpdir(), "slotkeeper-pgbouncer-"))
    const users = options.users ?? ["postgres"]
    writeFileSync(join(dir, "userlist.txt"), users.map((u) => `"${u}" ""`).join("\n") + "\n")
    writeFileSync(join(dir, "pgbouncer.ini"), [
      "[databases]",
      `* = host=127.0.0.1 port=${server.port}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${join(dir, "userlist.txt")}`,
      `pool_mode = ${options.poolMode ?? "transaction"}`,
      "ignore_startup_parameters = extra_float_digits, intervalstyle, bytea_output, lc_monetary, idle_session_timeout, statement_timeout",
      "max_client_conn = 200",
      "default_pool_size = 20",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      ""
    ].join("\n"))
    if (user.kind === "switched") for (const f of ["", "userlist.txt", "pgbouncer.ini"]) chownSync(join(dir, f), user.uid, user.gid)
    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(bin, [join(dir, "pgbouncer.ini")], { stdio: "ignore", ...ServerUser.spawnIdentity(user) })),
      (c) =>
        Effect.promise(() =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve()
            c.once("exit", () => resolve())
            c.kill("SIGINT")
          })
        ).pipe(Effect.andThen(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
    )
    const logTail = () => {
      try {
        return readFileSync(join(dir, "pgbouncer.log"), "utf8").split("\n").slice(-20).join("\n")
      } catch {
        return "(no log)"
      }
    }
    // ready when it listens (or failed when it exited)
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) return yield* Effect.fail(new Error(`pgbouncer exited with ${child.exitCode}:\n${logTail()}`))
      if (yield* Effect.promise(() => listening(port))) break
      if (i > 200) return yield* Effect.fail(new Error(`pgbouncer did not listen on ${port} within 10 s:\n${logTail()}`))
      yield* Effect.sleep("50 millis")
    }
    return {
      port,
      url: (o = {}) => `postgres://${o.user ?? "postgres"}@127.0.0.1:${port}/${o.database ?? "postgres"}`,
      logTail
    }
  })
