/**
 * Standby: a streaming physical standby of a kit server, built without `pg_basebackup` (the npm-shipped binaries
 * do not have it), with logical failover-slot synchronization on PostgreSQL 17+.
 *
 * **How it is built** (a cold copy; see shared/docs/postgres-replication-facts.md §5.1)
 * 1. A physical slot for the standby is created on the primary first, so the primary keeps the WAL the standby
 *    will ask for. On 17+ the primary's `synchronized_standby_slots` gets that slot (unless disabled): logical
 *    walsenders then never send a change the standby has not received, which is what makes failover lossless.
 * 2. The primary is stopped cleanly (fast shutdown), its data folder copied, and the primary started again on the
 *    same port. Connections to the primary are cut by this; build standbys before the code under test connects.
 * 3. In the copy, `pg_replslot/` is emptied — copied slots would collide by name with the synchronized ones and stop
 *    slot sync ("same name slot already exists on the standby") — and `synchronized_standby_slots` is cleared: a
 *    promoted copy that inherited it waits for a standby that does not exist and stalls logical decoding forever.
 * 4. `primary_conninfo` (with `dbname`, which slot sync needs), `primary_slot_name`, `hot_standby_feedback=on` (else
 *    the primary removes catalog rows the synced slots need) and, on 17+, `sync_replication_slots` are appended to
 *    `postgresql.auto.conf`; `standby.signal` makes it a standby.
 *
 * **Slot sync modes** (17+): `worker` runs the slotsync worker (`sync_replication_slots=on`; it naps up to 30 s, so
 * poll); `manual` turns the worker off and `syncSlots` runs `pg_sync_replication_slots()` on demand, for
 * deterministic tests; `off` does neither. Before 17 only `off` exists.
 *
 * A synced slot becomes usable on the standby (`temporary = false`) only once the consumer has advanced the slot on
 * the primary past the point where the standby started: a freshly attached standby is not yet a safe failover
 * target.
 *
 * Closing the scope stops the standby, removes its folder, and — if the primary still runs — takes the slot out of
 * the primary's `synchronized_standby_slots` and drops the physical slot, so the primary does not stall.
 */
import { execFile } from "node:child_process"
import { appendFileSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { promisify } from "node:util"
import { Effect, type Scope } from "effect"
import { pollUntil } from "@slotkeeper/embedded/internal"
import { newServerDir } from "./Leftovers.ts"
import { PgServer } from "@slotkeeper/embedded"

export type SlotSync = "worker" | "manual" | "off"

export interface StandbyOptions {
  /** Names the standby: its `application_name` on the primary and its physical slot (`<name>_slot`). */
  readonly name?: string
  /** Default: `worker` on PostgreSQL 17+, `off` before. */
  readonly slotSync?: SlotSync
  /** Add the standby's slot to the primary's `synchronized_standby_slots` (17+). Default: on unless slotSync is off. */
  readonly synchronizedStandbySlots?: boolean
  /** Extra settings for the standby (appended to its postgresql.auto.conf). */
  readonly settings?: Readonly<Record<string, PgServer.SettingValue>>
  /** Reach the primary through this port on 127.0.0.1 (a `FaultProxy`, to freeze or cut the standby's link) instead of its own. */
  readonly primaryPort?: number
}

export interface Standby extends PgServer.PgServer {
  readonly primary: PgServer.PgServer
  /** The physical slot on the primary that this standby streams through. */
  readonly physicalSlot: string
  readonly slotSync: SlotSync
  /** One round of `pg_sync_replication_slots()` (slotSync `manual`). */
  readonly syncSlots: Effect.Effect<void, PgServer.PgServerError>
  /** Waits until the standby has replayed the primary's WAL up to the primary's current insert position. */
  readonly waitForReplay: Effect.Effect<string, PgServer.PgServerError>
  /** `pg_promote(wait => true)`: the standby becomes a primary on a new timeline and accepts writes. */
  readonly promote: Effect.Effect<void, PgServer.PgServerError>
}

const run = promisify(execFile)

const conninfoValue = (value: string) => `'${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`

/** Builds and starts a standby of `primary`; see the module comment for what it changes on the primary. */
export const make = (
  primary: PgServer.PgServer,
  options: StandbyOptions = {}
): Effect.Effect<Standby, PgServer.PgServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const major = primary.install.major
    const name = options.name ?? "standby1"
    if (!/^[a-z_][a-z0-9_]{0,50}$/.test(name)) {
      return yield* new PgServer.PgServerError({ server: name, operation: "standby", message: `standby name ${JSON.stringify(name)} must match [a-z_][a-z0-9_]{0,50}` })
    }
    const slotSync: SlotSync = options.slotSync ?? (major >= 17 ? "worker" : "off")
    if (slotSync !== "off" && major < 17) {
      return yield* new PgServer.PgServerError({ server: name, operation: "standby", message: `slot synchronization needs PostgreSQL 17+, the primary runs ${primary.install.version}` })
    }
    const guardSlots = major >= 17 && (options.synchronizedStandbySlots ?? slotSync !== "off")
    const physicalSlot = `${name}_slot`

    // 1. the physical slot (reserving WAL now) and the primary's synchronized_standby_slots
    yield* primary.query("SELECT slot_name FROM pg_create_physical_replication_slot($1::name, true)", [physicalSlot])
    if (guardSlots) {
      const [current] = yield* primary.query<{ v: string }>("SELECT current_setting('synchronized_standby_slots') AS v")
      const slots = (current?.v ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0)
      yield* primary.setConfig("synchronized_standby_slots", [...slots, physicalSlot].join(","))
    }
    // Undo on the primary when the standby goes (registered first, so it runs after the standby has stopped).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (!(yield* primary.isRunning)) return
        if (guardSlots) {
          const [current] = yield* primary.query<{ v: string }>("SELECT current_setting('synchronized_standby_slots') AS v")
          const rest = (current?.v ?? "").split(",").map((s) => s.trim()).filter((s) => s.length > 0 && s !== physicalSlot)
          yield* primary.setConfig("synchronized_standby_slots", rest.length > 0 ? rest.join(",") : null)
        }
        yield* primary.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [physicalSlot])
      }).pipe(Effect.ignore)
    )

    // 2. cold copy of the stopped primary
    const baseDir = newServerDir(name)
    const dataDir = join(baseDir, "data")
    yield* primary.stop
    yield* Effect.tryPromise({
      try: async () => {
        await run("mkdir", ["-p", "-m", "755", baseDir])
        await run("cp", ["-a", primary.dataDir, dataDir]) // -a keeps the server user's ownership and modes
      },
      catch: (e) => new PgServer.PgServerError({ server: name, operation: "standby", message: `copying the data folder failed: ${String(e)}` })
    }).pipe(Effect.ensuring(Effect.ignore(primary.start)))
    yield* primary.start

    // 3. + 4. turn the copy into a standby
    for (const entry of readdirSync(join(dataDir, "pg_replslot"))) rmSync(join(dataDir, "pg_replslot", entry), { recursive: true, force: true })
    rmSync(join(dataDir, "postmaster.pid"), { force: true })
    rmSync(join(dataDir, "postmaster.opts"), { force: true })
    const conninfo = [
      "host=127.0.0.1",
      `port=${options.primaryPort ?? primary.port}`,
      "user=postgres",
      "dbname=postgres",
      `application_name=${name}`,
      ...(new URL(primary.url).password ? [`password=${conninfoValue(decodeURIComponent(new URL(primary.url).password))}`] : [])
    ].join(" ")
    const standbySettings: Record<string, PgServer.SettingValue> = {
      primary_conninfo: conninfo,
      primary_slot_name: physicalSlot,
      hot_standby_feedback: "on",
      ...(major >= 17 ? { sync_replication_slots: slotSync === "worker" ? "on" : "off", synchronized_standby_slots: "" } : {}),
      ...options.settings
    }
    appendFileSync(join(dataDir, "postgresql.auto.conf"), `# standby settings written by @slotkeeper/testkit\n${PgServer.renderSettings(standbySettings)}`)
    writeFileSync(join(dataDir, "standby.signal"), "")
    // the files written here (as root) must belong to the server user; postgres rewrites auto.conf on ALTER SYSTEM
    if (primary.osUser.kind === "switched") {
      yield* Effect.tryPromise({
        try: () => run("chown", ["-R", `${primary.osUser.uid}:${primary.osUser.gid}`, dataDir]),
        catch: (e) => new PgServer.PgServerError({ server: name, operation: "standby", message: `could not give ${dataDir} to ${primary.osUser.name}: ${String(e)}` })
      })
    }

    const server = yield* PgServer.make({
      name,
      install: primary.install,
      user: primary.osUser,
      baseDir,
      removeOnClose: true,
      initdb: false,
      password: new URL(primary.url).password || undefined
    })

    const waitStreaming = pollUntil(
      Effect.map(server.query<{ status: string }>("SELECT status FROM pg_stat_wal_receiver"), (rows) => (rows[0]?.status === "streaming" ? true : undefined)),
      { timeoutMs: 60_000, intervalMs: 25, onTimeout: () => new PgServer.PgServerError({ server: name, operation: "standby", message: `not streaming from the primary after 60 s:\n${server.logTail()}` }) }
    )
    yield* waitStreaming

    const waitForReplay = Effect.gen(function*() {
      const [target] = yield* primary.query<{ lsn: string }>("SELECT pg_current_wal_insert_lsn()::text AS lsn")
      const lsn = target!.lsn
      yield* pollUntil(
        Effect.map(server.query<{ ok: boolean }>("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok", [lsn]), (rows) => (rows[0]?.ok ? true : undefined)),
        { timeoutMs: 60_000, intervalMs: 10, onTimeout: () => new PgServer.PgServerError({ server: name, operation: "waitForReplay", message: `did not replay up to ${lsn} within 60 s:\n${server.logTail()}` }) }
      )
      return lsn
    })

    const standby: Standby = Object.assign(Object.create(null), server, {
      primary,
      physicalSlot,
      slotSync,
      syncSlots: slotSync === "manual"
        ? Effect.asVoid(server.query("SELECT pg_sync_replication_slots()::text"))
        : Effect.fail(new PgServer.PgServerError({ server: name, operation: "syncSlots", message: `syncSlots needs slotSync "manual" (this standby: "${slotSync}")` })),
      waitForReplay,
      promote: Effect.gen(function*() {
        const [r] = yield* server.query<{ ok: boolean }>("SELECT pg_promote(true, 60) AS ok")
        if (r?.ok !== true) return yield* new PgServer.PgServerError({ server: name, operation: "promote", message: `not promoted within 60 s:\n${server.logTail()}` })
      })
    })
    // port and url are getters on the server object: keep them live
    Object.defineProperty(standby, "port", { get: () => server.port })
    Object.defineProperty(standby, "url", { get: () => server.url })
    return standby
  })
