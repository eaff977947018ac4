/**
 * Preflight: can this server carry a slotkeeper stream, as configured? Reads only; each problem comes with the fix.
 * What `slotkeeper check` runs, and what an operator can run before a deploy.
 *
 * Checked: `wal_level`; headroom in `max_replication_slots` (the persistent slot and one temporary copy per
 * connection) and `max_wal_senders`; the role's REPLICATION attribute; the right to create slotkeeper's schema and
 * the publication; each configured table (exists, may be published by this role, has a replica identity when updates
 * and deletes are published); the server version for the lock mode; and, on 17+, failover readiness of the stream's
 * slot (`FailoverCheck.primary`).
 *
 * `admit` is the part of it a stream must pass before it changes anything (`slotkeeper run` calls it before it
 * competes for ownership, so bad input leaves the database exactly as it was):
 *
 * **Details**
 * - The server checks that only a configuration change fixes (standby, version for the lock mode, `wal_level`,
 *   REPLICATION, CREATE) refuse with `PreflightRefused`. Slot and wal sender headroom do not: they depend on other
 *   sessions (a rolling deploy's previous owner holds a temporary slot until it stops) and are only logged.
 * - Every subscription is checked lexically (`Subscription.check`), then by PostgreSQL itself (`Validation`: the
 *   table exists and may be published, the columns exist, the filter means something, the application's UPDATE and
 *   DELETE keep working), in transactions that are always rolled back.
 *
 * **Gotchas**
 * - Admission is a check at one moment: a table dropped after it is still a typed error later (the publication's
 *   own validation runs again inside the owner's guarded transaction).
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "./internal/sqlError.ts"
import * as PublicationCatalog from "./publication/PublicationCatalog.ts"
import * as Subscription from "./publication/Subscription.ts"
import * as Validation from "./publication/Validation.ts"
import * as FailoverCheck from "./slot/FailoverCheck.ts"
import * as Health from "./slot/Health.ts"
import * as SlotInspector from "./slot/SlotInspector.ts"

export interface Check {
  readonly name: string
  readonly level: "ok" | "warn" | "error" | "info"
  /** What was found, and — when it is not ok — what to change. */
  readonly message: string
  /** Depends on other sessions, not on the configuration (slot and wal sender headroom): `admit` only logs it. */
  readonly transient?: boolean
}

export interface PreflightOptions {
  readonly tables: ReadonlyArray<{ readonly schema: string; readonly name: string }>
  readonly lock: "advisory" | "lease"
  /** The stream's current slot, if it exists (for the failover check). */
  readonly slotName: string | undefined
  readonly publication: string
  /** What the publication publishes (default all four): a table needs a replica identity only for update or delete. */
  readonly publishes?: { readonly update: boolean; readonly delete: boolean } | undefined
  /** `publish_generated_columns` as given (`undefined`: stored on PostgreSQL 18+, none before). */
  readonly generatedColumns?: "stored" | "none" | undefined
}

/** Every check; a server that cannot be queried is one failed check, `connect`. */
export const run = (sql: SqlClient, options: PreflightOptions): Effect.Effect<ReadonlyArray<Check>> =>
  inspect(sql, options).pipe(
    Effect.catchTag("SqlError", (e) => Effect.succeed([{ name: "connect", level: "error", message: `cannot query the server: ${SqlErrors.describe(e)}` }] as const))
  )

const inspect = (sql: SqlClient, options: PreflightOptions): Effect.Effect<ReadonlyArray<Check>, SqlError> =>
  Effect.gen(function*() {
    const checks: Array<Check> = []
    const add = (name: string, level: Check["level"], message: string, transient?: boolean) =>
      void checks.push(transient === true ? { name, level, message, transient } : { name, level, message })
    const [s] = yield* sql.unsafe<{
      v: number; wal_level: string; max_slots: number; used_slots: number; max_senders: number; senders: number
      role: string; replication: boolean; superuser: boolean; can_create: boolean; publication_exists: boolean; recovery: boolean
    }>(
      `SELECT current_setting('server_version_num')::int AS v, current_setting('wal_level') AS wal_level,
              current_setting('max_replication_slots')::int AS max_slots, (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
              current_setting('max_wal_senders')::int AS max_senders, (SELECT count(*)::int FROM pg_stat_replication) AS senders,
              current_user::text AS role, r.rolreplication AS replication, r.rolsuper AS superuser,
              has_database_privilege(current_database(), 'CREATE') AS can_create,
              EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS publication_exists, pg_is_in_recovery() AS recovery
         FROM pg_roles r WHERE r.rolname = current_user`,
      [options.publication]
    )
    if (s === undefined) return [{ name: "server", level: "error", message: "could not read the server's settings" }] as const
    if (s.recovery) add("primary", "error", "this server is a standby (in recovery): point the URL at the primary")
    add("version", options.lock === "advisory" && s.v < 140000 ? "error" : "ok",
      options.lock === "advisory" && s.v < 140000 ? `PostgreSQL ${s.v}: advisory mode needs 14+ (idle_session_timeout); upgrade or use --lock lease` : `PostgreSQL ${s.v}`)
    add("wal_level", s.wal_level === "logical" ? "ok" : "error",
      s.wal_level === "logical" ? "logical" : `wal_level is ${s.wal_level}: ALTER SYSTEM SET wal_level = logical, then restart the server`)
    const freeSlots = s.max_slots - s.used_slots
    add("replication slots", freeSlots >= 2 ? "ok" : "error", freeSlots >= 2
      ? `${s.used_slots} of ${s.max_slots} used`
      : `${s.used_slots} of ${s.max_slots} slots used: slotkeeper needs 2 (its slot and a temporary copy per connection); raise max_replication_slots (restart) or drop unused slots`, true)
    const freeSenders = s.max_senders - s.senders
    add("wal senders", freeSenders >= 1 ? "ok" : "error", freeSenders >= 1
      ? `${s.senders} of ${s.max_senders} in use`
      : `all ${s.max_senders} wal senders are in use: raise max_wal_senders (restart)`, true)
    add("role", s.replication || s.superuser ? "ok" : "error", s.replication || s.superuser
      ? `${s.role}${s.superuser ? " (superuser)" : " (REPLICATION)"}`
      : `role ${s.role} lacks REPLICATION: as an administrator, ALTER ROLE "${s.role.replaceAll("\"", "\"\"")}" REPLICATION`)
    add("create", s.can_create || s.publication_exists ? "ok" : "error", s.can_create
      ? "may create slotkeeper's schema and the publication"
      : s.publication_exists ? "may not create in this database, but the publication exists" : `role ${s.role} may not create the publication: GRANT CREATE ON DATABASE to it, or create publication ${options.publication} for it`)
    if (s.v >= 180000) {
      // PostgreSQL 18 invalidates a slot inactive for longer than this: the stream's slot, whenever no instance runs
      const [idle] = yield* sql.unsafe<{ seconds: number | null }>(`SELECT ${SlotInspector.idleTimeoutSecondsSql} AS seconds`)
      const timeout = idle?.seconds ?? null
      if (timeout === null) add("idle slot timeout", "ok", "idle_replication_slot_timeout is off: an inactive slot is kept until it is dropped")
      else {
        add("idle slot timeout", timeout < Health.idleTimeoutSafeSeconds ? "warn" : "info",
          `idle_replication_slot_timeout is ${Health.seconds(timeout)}: the server invalidates the stream's slot when no instance has run for that long, and ` +
            `the changes since are lost to the stream${timeout < Health.idleTimeoutSafeSeconds ? `; set it to at least ${Health.seconds(Health.idleTimeoutSafeSeconds)} (or 0), longer than any outage of the stream` : ""}`)
      }
    }
    if (options.generatedColumns === "stored" && s.v < 180000) {
      add("generated columns", "error", `publish_generated_columns needs PostgreSQL 18+; this server is ${Math.floor(s.v / 10000)}: leave the option out (none)`)
    }
    for (const t of options.tables) {
      const info = yield* PublicationCatalog.table(sql, t.schema, t.name).pipe(Effect.orElseSucceed(() => undefined))
      const name = `table ${t.schema}.${t.name}`
      if (info === undefined) add(name, "error", "does not exist (names are exact: check the schema, the name and its case)")
      else if (!info.mayPublish) add(name, "error", `owned by ${info.owner}: adding it to a publication needs that role (GRANT ${info.owner} TO ${s.role})`)
      else if (info.replicaIdentity === "n" || (info.replicaIdentity !== "f" && info.identityColumns.length === 0)) {
        const { update, delete: del } = options.publishes ?? { update: true, delete: true }
        if (update || del) {
          add(name, "error", `has no replica identity: once published with ${update && del ? "updates and deletes" : update ? "updates" : "deletes"}, PostgreSQL refuses ${update && del ? "UPDATE and DELETE" : update ? "UPDATE" : "DELETE"} on it. Add a primary key, or REPLICA IDENTITY USING INDEX / FULL, or publish neither update nor delete (--publish insert,truncate)`)
        } else add(name, "ok", "no replica identity: fine, neither updates nor deletes are published")
      } else add(name, "ok", `replica identity ${info.replicaIdentity === "f" ? "full" : `(${info.identityColumns.join(", ")})`}`)
      if (info !== undefined && s.v >= 120000) {
        // generated columns: streamed only from PostgreSQL 18 (stored ones, publish_generated_columns), never virtual ones
        const generated = yield* sql.unsafe<{ name: string; kind: string }>(
          "SELECT attname::text AS name, attgenerated::text AS kind FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped AND attgenerated <> '' ORDER BY attnum",
          [String(info.oid)]
        )
        const stored = generated.filter((g) => g.kind === "s").map((g) => g.name)
        const virtual = generated.filter((g) => g.kind === "v").map((g) => g.name)
        const what = `generated columns of ${t.schema}.${t.name}`
        if (stored.length > 0 && s.v < 180000) {
          add(what, "warn", `${stored.join(", ")}: PostgreSQL ${Math.floor(s.v / 10000)} cannot publish generated columns (18+): they are absent from the change lines`)
        } else if (stored.length > 0 && options.generatedColumns === "none") {
          add(what, "info", `${stored.join(", ")}: left out of the change lines (generated columns: none)`)
        } else if (stored.length > 0) add(what, "ok", `${stored.join(", ")}: published (publish_generated_columns = stored)`)
        if (virtual.length > 0) add(what, "warn", `${virtual.join(", ")}: virtual generated columns are never published by PostgreSQL: absent from the change lines`)
      }
    }
    if (s.v >= 170000 && options.slotName !== undefined) {
      const report = yield* FailoverCheck.primary(sql, options.slotName).pipe(Effect.orElseSucceed(() => undefined))
      for (const f of report?.findings ?? []) add("failover", f.level, f.message)
      if (report !== undefined && report.findings.length === 0) add("failover", "ok", `slot ${options.slotName} is a failover slot and the standbys in synchronized_standby_slots are active`)
    } else if (s.v < 170000) add("failover", "info", `PostgreSQL ${s.v} has no failover slots (17+): a standby cannot carry the stream's slot`)
    return checks
  })

/** A server that cannot carry the stream as configured: `check` names the check, `message` what to change. */
export class PreflightRefused extends Schema.TaggedError<PreflightRefused>()("PreflightRefused", {
  check: Schema.String,
  message: Schema.String
}) {}

export interface AdmitOptions {
  readonly subscriptions: ReadonlyArray<Subscription.Subscription>
  readonly lock: "advisory" | "lease"
  readonly publication: string
  /** What the publication will publish (default: insert, update, delete, truncate), for the replica-identity checks. */
  readonly publishes?: Validation.ValidationOptions["publishes"]
  /** `publish_via_partition_root` (PostgreSQL 13+), as the publication will have it. */
  readonly viaRoot?: boolean | undefined
  /** `publish_generated_columns` (PostgreSQL 18+; `stored` before 18 is refused). */
  readonly generatedColumns?: "stored" | "none" | undefined
  readonly lockTimeoutMs?: number
}

/**
 * Everything a stream needs from the server and its tables, checked before anything is changed; the subscriptions as
 * PostgreSQL validated them. See the module's summary.
 */
export const admit = (sql: SqlClient, options: AdmitOptions): Effect.Effect<
  ReadonlyArray<Validation.Validated>,
  PreflightRefused | Subscription.SubscriptionInvalid | PublicationCatalog.PublicationError | SqlError
> =>
  Effect.gen(function*() {
    const checks = yield* inspect(sql, { tables: [], lock: options.lock, slotName: undefined, publication: options.publication })
    const refused = checks.find((c) => c.level === "error" && c.transient !== true)
    if (refused !== undefined) return yield* new PreflightRefused({ check: refused.name, message: refused.message })
    for (const c of checks) if (c.level === "error") yield* Effect.logWarning(`preflight: ${c.name}: ${c.message}`)
    const version = yield* PublicationCatalog.serverVersion(sql)
    if (options.viaRoot === true && version < 130000) {
      return yield* new PreflightRefused({ check: "partition root", message: `publishing a partitioned table's changes under its own name (publish_via_partition_root) needs PostgreSQL 13+; this server is ${version}` })
    }
    if (options.generatedColumns === "stored" && version < 180000) {
      return yield* new PreflightRefused({ check: "generated columns", message: `publishing generated columns (publish_generated_columns = stored) needs PostgreSQL 18+; this server is ${version}: leave the option out (none)` })
    }
    const validated: Array<Validation.Validated> = []
    for (const s of options.subscriptions) {
      const checked = yield* Effect.fromResult(Subscription.check(s))
      validated.push(yield* Validation.validate(sql, checked, {
        publishes: options.publishes ?? { insert: true, update: true, delete: true, truncate: true },
        viaRoot: options.viaRoot,
        generatedColumns: options.generatedColumns ?? (version >= 180000 ? "stored" : undefined),
        lockTimeoutMs: options.lockTimeoutMs ?? 2000
      }))
    }
    return validated
  })
