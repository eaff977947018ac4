/**
 * PgServer: one real PostgreSQL server process (a postmaster) that the kit started and controls.
 *
 * It is what `PgCluster` (an ephemeral primary), `Standby` (a streaming replica) and the CLI's embedded default
 * are made of. It guarantees that while its scope is open the server is either running or was stopped by an
 * explicit `stop`/`crash` call, and that closing the scope stops the server and, for ephemeral servers, removes
 * every file it wrote — also when the test failed or was interrupted.
 *
 * **Details**
 *
 * - The server runs as the user from `ServerUser`: the current user, or an unprivileged one when this process is
 *   root. Folders are created by the kit and handed to that user.
 * - `port`, `listen_addresses` (127.0.0.1) and `unix_socket_directories` (a folder of its own) are given on the
 *   command line, because they are the server's identity; everything else is in `slotkeeper-kit.conf`, included
 *   from `postgresql.conf`, so `setConfig` (ALTER SYSTEM) can override any of it.
 * - A free port is found by binding port 0; if another process takes it before PostgreSQL binds, the start fails
 *   with "Address already in use" and is retried on a new port (only when the caller did not fix the port).
 * - Readiness is read from `postmaster.pid` (status `ready`, or `standby` for a hot standby), as `pg_ctl` does.
 * - `stop` is a fast shutdown (SIGINT). `crash` freezes the postmaster (SIGSTOP) so it cannot fork, SIGKILLs its
 *   children and itself, waits until every one is gone, and starts the server again: the next start runs crash
 *   recovery from the WAL, as after a power loss of the process tree (the OS page cache survives, as it does when
 *   only processes die).
 * - Admin queries open a short session of their own through `@effect/sql-pg`.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"
import { PgConnection } from "@effect/sql-pg"
import { Effect, Redacted, Schema, type Scope } from "effect"
import { childrenOf, isAlive, signal, stateOf } from "./internal/processes.ts"
import { pollUntil } from "./internal/realtime.ts"
import { sqlErrorText } from "./internal/sqlErrorText.ts"
import type { PgInstall } from "./PgBinaries.ts"
import { type ServerUser, spawnIdentity } from "./ServerUser.ts"

export class PgServerError extends Schema.TaggedError<PgServerError>()("PgServerError", {
  server: Schema.String,
  operation: Schema.String,
  message: Schema.String
}) {}

export type SettingValue = string | number | boolean

export interface PgServerOptions {
  /** Names the server in errors and logs, e.g. "primary" or "standby1". */
  readonly name: string
  readonly install: PgInstall
  readonly user: ServerUser
  /** The server's own folder: `data/`, `sock/` and `postgres.log` live inside. */
  readonly baseDir: string
  /** Remove `baseDir` when the scope closes (ephemeral servers). */
  readonly removeOnClose: boolean
  /** A fixed port; when omitted a free one is chosen at every start attempt until one binds. */
  readonly port?: number | undefined
  /** Password of the `postgres` superuser; when set, TCP connections use scram-sha-256. */
  readonly password?: string | undefined
  /** Settings written to `slotkeeper-kit.conf` at initdb time. */
  readonly settings?: Readonly<Record<string, SettingValue>> | undefined
  /** `pg_hba.conf` lines put before initdb's own at initdb time (the first matching line decides). */
  readonly hba?: ReadonlyArray<string> | undefined
  /**
   * Files written into the data folder at initdb time (name → content), owned by the server user, mode 0600: a TLS
   * certificate and key for `ssl_cert_file`/`ssl_key_file`, a CA for `ssl_ca_file`.
   */
  readonly files?: Readonly<Record<string, string>> | undefined
  /** Run initdb unless the data folder exists (true), or require an existing data folder (false: a copy). */
  readonly initdb: boolean
}

export interface PgServer {
  readonly name: string
  readonly host: string
  readonly port: number
  readonly user: string
  readonly database: string
  /** `postgres://postgres[:password]@127.0.0.1:<port>/postgres`. */
  readonly url: string
  /** A URL to this server with other parts: another database, role, application_name, or host/port (a proxy). */
  readonly urlWith: (parts: UrlParts) => string
  readonly dataDir: string
  readonly socketDir: string
  readonly logFile: string
  /** The server's major version, e.g. 18. */
  readonly major: number
  /** The server's version as `postgres --version` prints it, e.g. "18.4". */
  readonly version: string
  readonly install: PgInstall
  /** The OS user the server processes run as. */
  readonly osUser: ServerUser
  /** The postmaster's pid; fails when the server is not running. */
  readonly postmasterPid: Effect.Effect<number, PgServerError>
  readonly isRunning: Effect.Effect<boolean>
  /** One query on a short-lived superuser session. Parameters are bound, never spliced into the text. */
  readonly query: <Row = Record<string, unknown>>(
    sql: string,
    params?: ReadonlyArray<unknown>
  ) => Effect.Effect<ReadonlyArray<Row>, PgServerError>
  readonly start: Effect.Effect<void, PgServerError>
  /** Fast shutdown (SIGINT), waiting until the postmaster has exited. */
  readonly stop: Effect.Effect<void, PgServerError>
  /** Fast shutdown, then start on the same port. */
  readonly restart: Effect.Effect<void, PgServerError>
  /** SIGKILL the postmaster and all its children, then start again (crash recovery). */
  readonly crash: Effect.Effect<void, PgServerError>
  /** SIGKILL the postmaster and all its children, and leave it down (a host that died); `start` brings it back. */
  readonly kill: Effect.Effect<void, PgServerError>
  /** `pg_terminate_backend(pid)`, waiting up to 5 s for the backend to exit. True when it was terminated. */
  readonly terminateBackend: (pid: number) => Effect.Effect<boolean, PgServerError>
  /**
   * `ALTER SYSTEM SET name = value` (or `RESET` for null) and a reload, waiting until new sessions see the reloaded
   * configuration. `pendingRestart` is true for settings that only a restart applies.
   */
  readonly setConfig: (name: string, value: SettingValue | null) => Effect.Effect<{ readonly pendingRestart: boolean }, PgServerError>
  /** The last `lines` lines of the server log. */
  readonly logTail: (lines?: number) => string
}

export interface UrlParts {
  readonly database?: string
  readonly user?: string
  readonly password?: string
  readonly host?: string
  readonly port?: number
  readonly applicationName?: string
  /** Extra query parameters, e.g. `{ options: "-c idle_session_timeout=3s" }`. */
  readonly params?: Readonly<Record<string, string>>
}

/** Settings every kit server gets unless the caller overrides them. */
export const defaultSettings: Readonly<Record<string, SettingValue>> = {
  wal_level: "logical",
  max_wal_senders: 20,
  max_replication_slots: 20,
  max_connections: 100,
  hot_standby: "on",
  log_line_prefix: "%m [%p] %q%a ",
  log_connections: "off",
  // Slot synchronization and the walsender need a superuser session for tests; trust auth keeps that simple.
  shared_buffers: "32MB"
}

const formatSetting = (value: SettingValue): string =>
  typeof value === "number" ? String(value) : typeof value === "boolean" ? (value ? "on" : "off") : `'${value.replaceAll("'", "''")}'`

/** Renders a postgresql.conf fragment. Names are checked to be plain GUC names. */
export const renderSettings = (settings: Readonly<Record<string, SettingValue>>): string =>
  Object.entries(settings).map(([name, value]) => {
    if (!/^[a-z_][a-z0-9_.]*$/i.test(name)) throw new Error(`not a configuration parameter name: ${JSON.stringify(name)}`)
    return `${name} = ${formatSetting(value)}\n`
  }).join("")

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const chownTo = (path: string, user: ServerUser) => {
  if (user.kind === "switched") chownSync(path, user.uid, user.gid)
}

const runToEnd = (child: ChildProcess): Promise<number | null> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve(child.exitCode)
    else child.once("exit", (code) => resolve(code))
  })

/** Starts and controls one server. Closing the scope stops it (and removes its folder when ephemeral). */
export const make = (options: PgServerOptions): Effect.Effect<PgServer, PgServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { install, name, user } = options
    const dataDir = join(options.baseDir, "data")
    const socketDir = join(options.baseDir, "sock")
    const logFile = join(options.baseDir, "postgres.log")
    const fail = (operation: string, message: string) => new PgServerError({ server: name, operation, message })

    let child: ChildProcess | undefined
    let port = options.port ?? 0

    const logTail = (lines = 30): string => {
      try {
        return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n")
      } catch {
        return "(no log)"
      }
    }

    // ---- folders and initdb -------------------------------------------------------------------------------
    const prepare = Effect.tryPromise({
      try: async () => {
        // The server's own folder belongs to the server user, whoever created it (a root-owned 0700 mkdtemp folder
        // would keep initdb out). Its parents only need to be traversable.
        mkdirSync(options.baseDir, { recursive: true, mode: 0o755 })
        chownTo(options.baseDir, user)
        mkdirSync(socketDir, { recursive: true, mode: 0o700 })
        chownTo(socketDir, user)
        if (!existsSync(join(dataDir, "PG_VERSION"))) {
          if (!options.initdb) throw new Error(`${dataDir} holds no PostgreSQL data folder`)
          await initdb()
        }
      },
      catch: (e) => fail("initdb", e instanceof Error ? e.message : String(e))
    })

    const initdb = async () => {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 })
      chownTo(dataDir, user)
      const args = ["-D", dataDir, "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"]
      if (options.password !== undefined) {
        const pwfile = join(options.baseDir, "pwfile")
        writeFileSync(pwfile, `${options.password}\n`, { mode: 0o600 })
        chownTo(pwfile, user)
        args.push("--auth-local=trust", "--auth-host=scram-sha-256", `--pwfile=${pwfile}`)
      } else {
        args.push("--auth=trust")
      }
      const logFd = openSync(logFile, "a")
      const proc = spawn(join(install.binDir, "initdb"), args, {
        stdio: ["ignore", logFd, logFd],
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C", TZ: "UTC" },
        ...spawnIdentity(user)
      })
      closeSync(logFd)
      const code = await runToEnd(proc)
      rmSync(join(options.baseDir, "pwfile"), { force: true })
      if (code !== 0) throw new Error(`initdb exited with ${code}:\n${logTail(20)}`)
      const kitConf = join(dataDir, "slotkeeper-kit.conf")
      writeFileSync(kitConf, `# written by @slotkeeper/testkit\n${renderSettings({ ...defaultSettings, ...options.settings })}`)
      chownTo(kitConf, user)
      writeFileSync(join(dataDir, "postgresql.conf"), `${readFileSync(join(dataDir, "postgresql.conf"), "utf8")}\ninclude 'slotkeeper-kit.conf'\n`)
      if (options.hba !== undefined && options.hba.length > 0) {
        const hba = join(dataDir, "pg_hba.conf")
        writeFileSync(hba, `# written by @slotkeeper/testkit\n${options.hba.join("\n")}\n${readFileSync(hba, "utf8")}`)
      }
      for (const [name, content] of Object.entries(options.files ?? {})) {
        if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`not a plain file name: ${JSON.stringify(name)}`)
        const file = join(dataDir, name)
        writeFileSync(file, content, { mode: 0o600 })
        chownTo(file, user)
      }
    }

    // ---- process control -----------------------------------------------------------------------------------
    const readPidFileStatus = (): { pid: number; status: string } | undefined => {
      try {
        const lines = readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")
        return { pid: Number(lines[0]), status: (lines[7] ?? "").trim() }
      } catch {
        return undefined
      }
    }

    const startOnce = (attemptPort: number) =>
      Effect.gen(function*() {
        const logFd = openSync(logFile, "a")
        const proc = spawn(join(install.binDir, "postgres"), [
          "-D", dataDir, "-p", String(attemptPort), "-h", "127.0.0.1", "-k", socketDir
        ], {
          stdio: ["ignore", logFd, logFd],
          env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C", TZ: "UTC" },
          ...spawnIdentity(user)
        })
        closeSync(logFd)
        let spawnError: Error | undefined
        proc.on("error", (e) => { spawnError = e }) // e.g. EACCES: the binary cannot be executed by the server user
        const outcome = yield* pollUntil(
          Effect.sync(() => {
            if (spawnError !== undefined) return "exited" as const
            if (proc.exitCode !== null || proc.signalCode !== null) return "exited" as const
            const status = readPidFileStatus()
            if (status !== undefined && status.pid === proc.pid && (status.status === "ready" || status.status === "standby")) {
              return "ready" as const
            }
            return undefined
          }),
          { timeoutMs: 120_000, intervalMs: 20, onTimeout: () => fail("start", `not ready after 120 s:\n${logTail()}`) }
        ).pipe(Effect.onInterrupt(() => Effect.sync(() => proc.kill("SIGKILL"))))
        return { proc, outcome, spawnError }
      })

    const start: Effect.Effect<void, PgServerError> = Effect.gen(function*() {
      if (child !== undefined && child.exitCode === null && child.signalCode === null) return
      // Once the server has started, its port is part of its identity (standbys' primary_conninfo, clients' URLs):
      // later starts use it or fail. Only the very first start may move on to another free port.
      const fixedPort = options.port ?? (port !== 0 ? port : undefined)
      for (let attempt = 1; ; attempt++) {
        const attemptPort = fixedPort ?? (yield* Effect.promise(freePort))
        const { outcome, proc, spawnError } = yield* startOnce(attemptPort)
        if (outcome === "ready") {
          child = proc
          port = attemptPort
          return
        }
        if (spawnError !== undefined) {
          return yield* fail("start", `cannot run ${join(install.binDir, "postgres")} as ${user.name}: ${spawnError.message}`)
        }
        const log = logTail(15)
        const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(log)
        if (portTaken && fixedPort === undefined && attempt < 5) continue
        return yield* fail("start", `postgres exited during startup (port ${attemptPort}):\n${log}`)
      }
    })

    const waitGone = (pids: ReadonlyArray<number>, operation: string) =>
      pollUntil(Effect.sync(() => (pids.every((p) => !isAlive(p)) ? true : undefined)), {
        timeoutMs: 30_000,
        intervalMs: 10,
        onTimeout: () => fail(operation, `processes ${pids.join(", ")} still alive after 30 s`)
      })

    const stop: Effect.Effect<void, PgServerError> = Effect.gen(function*() {
      const proc = child
      if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
      const done = runToEnd(proc)
      const exitedWithin = (ms: number) =>
        Effect.promise(() =>
          new Promise<boolean>((resolve) => {
            // the timer is cleared when the process exits first: a pending timer would keep Node's event loop alive
            const timer = setTimeout(() => resolve(false), ms)
            void done.then(() => {
              clearTimeout(timer)
              resolve(true)
            })
          })
        )
      proc.kill("SIGINT") // fast shutdown: roll back open transactions, checkpoint, exit
      if (!(yield* exitedWithin(60_000))) {
        proc.kill("SIGQUIT") // immediate shutdown
        if (!(yield* exitedWithin(10_000))) proc.kill("SIGKILL")
      }
      yield* Effect.promise(() => done)
      child = undefined
    }).pipe(Effect.uninterruptible)

    const kill: Effect.Effect<void, PgServerError> = Effect.gen(function*() {
      const proc = child
      if (proc?.pid === undefined || proc.exitCode !== null) return yield* fail("crash", "the server is not running")
      const pid = proc.pid
      // Freeze it first, so it can neither fork a child we would miss nor react to their deaths. A signal is delivered
      // asynchronously: list the children only once the postmaster is really stopped.
      signal(pid, "SIGSTOP")
      yield* pollUntil(Effect.sync(() => (stateOf(pid) === "T" ? true : undefined)), {
        timeoutMs: 5_000,
        intervalMs: 1,
        onTimeout: () => fail("crash", `postmaster ${pid} did not stop within 5 s of SIGSTOP`)
      })
      const children = childrenOf(pid)
      for (const c of children) signal(c, "SIGKILL")
      signal(pid, "SIGKILL")
      yield* Effect.promise(() => runToEnd(proc))
      child = undefined
      yield* waitGone(children, "crash")
    }).pipe(Effect.uninterruptible)

    const crash: Effect.Effect<void, PgServerError> = Effect.andThen(kill, start).pipe(Effect.uninterruptible)

    const postmasterPid = Effect.suspend(() =>
      child?.pid !== undefined && child.exitCode === null && child.signalCode === null
        ? Effect.succeed(child.pid)
        : Effect.fail(fail("postmasterPid", "the server is not running"))
    )

    const urlWith = (parts: UrlParts): string => {
      const u = new URL("postgres://127.0.0.1")
      u.hostname = parts.host ?? "127.0.0.1"
      u.port = String(parts.port ?? port)
      u.username = parts.user ?? "postgres"
      const password = parts.password ?? (parts.user === undefined ? options.password : undefined)
      if (password !== undefined) u.password = password
      u.pathname = `/${encodeURIComponent(parts.database ?? "postgres")}`
      if (parts.applicationName !== undefined) u.searchParams.set("application_name", parts.applicationName)
      for (const [k, v] of Object.entries(parts.params ?? {})) u.searchParams.set(k, v)
      return u.toString()
    }

    const query = <Row = Record<string, unknown>>(sql: string, params?: ReadonlyArray<unknown>) =>
      Effect.scoped(Effect.gen(function*() {
        const conn = yield* PgConnection.make({
          url: Redacted.make(urlWith({})),
          applicationName: "slotkeeper-testkit",
          connectTimeout: "10 seconds"
        })
        return (yield* conn.query(sql, params ?? [])).rows as unknown as ReadonlyArray<Row>
      })).pipe(Effect.mapError((e) => fail("query", `${sqlErrorText(e)} (query: ${sql})`)))

    const setConfig = (setting: string, value: SettingValue | null) =>
      Effect.gen(function*() {
        const [before] = yield* query<{ t: string }>("SELECT pg_conf_load_time()::text AS t")
        // format(%I, %L) quotes by PostgreSQL's own rules; ALTER SYSTEM cannot take bind parameters.
        const [stmt] = value === null
          ? yield* query<{ s: string }>("SELECT format('ALTER SYSTEM RESET %I', $1::text) AS s", [setting])
          : yield* query<{ s: string }>("SELECT format('ALTER SYSTEM SET %I = %L', $1::text, $2::text) AS s", [
            setting,
            typeof value === "boolean" ? (value ? "on" : "off") : String(value)
          ])
        yield* query(stmt!.s)
        yield* query("SELECT pg_reload_conf()")
        // pg_conf_load_time() in a new session is the postmaster's last load time: wait until it moved.
        yield* pollUntil(
          Effect.map(query<{ moved: boolean }>("SELECT pg_conf_load_time() > $1::timestamptz AS moved", [before!.t]),
            (rows) => (rows[0]?.moved ? true : undefined)),
          { timeoutMs: 10_000, intervalMs: 20, onTimeout: () => fail("setConfig", `configuration was not reloaded within 10 s`) }
        )
        const [state] = yield* query<{ pending_restart: boolean }>(
          "SELECT pending_restart FROM pg_settings WHERE name = lower($1::text)", [setting])
        return { pendingRestart: state?.pending_restart === true }
      })

    const terminateBackend = (pid: number) =>
      Effect.map(query<{ ok: boolean }>("SELECT pg_terminate_backend($1::int, 5000) AS ok", [pid]), (rows) => rows[0]?.ok === true)

    yield* Effect.acquireRelease(
      Effect.andThen(prepare, start),
      () =>
        stop.pipe(
          Effect.catch(() => Effect.void),
          Effect.andThen(Effect.sync(() => {
            if (options.removeOnClose) rmSync(options.baseDir, { recursive: true, force: true })
          }))
        )
    )

    const server: PgServer = {
      name,
      host: "127.0.0.1",
      get port() {
        return port
      },
      user: "postgres",
      database: "postgres",
      get url() {
        return urlWith({})
      },
      urlWith,
      dataDir,
      socketDir,
      logFile,
      major: install.major,
      version: install.version,
      install,
      osUser: user,
      postmasterPid,
      isRunning: Effect.sync(() => child !== undefined && child.exitCode === null && child.signalCode === null),
      query,
      start,
      stop,
      restart: Effect.andThen(stop, start),
      crash,
      kill,
      terminateBackend,
      setConfig,
      logTail
    }
    return server
  })
