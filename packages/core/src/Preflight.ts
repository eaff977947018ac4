/**
 * Preflight: can this server carry a slotkeeper stream, as configured? Reads only; each problem comes with the fix.
 * What `slotkeeper check` runs, and what an operator can run before a deploy.
 *
 * Checked: `wal_level`; headroom in `max_replication_slots` (the persistent slot and one temporary copy per
 * connection) and `max_wal_senders`; the role's REPLICATION attribute; the right to create slotkeeper's schema and
 * the publication; each configured table (exists, may be published by this role, has a replica identity when updates
 * and deletes are published); the server version for the lock mode; and, on 17+, failover readiness of the stream's
 * slot (`FailoverCheck.primary`).
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as SqlErrors from "./internal/sqlError.ts"
import * as PublicationCatalog from "./publication/PublicationCatalog.ts"
import * as FailoverCheck from "./slot/FailoverCheck.ts"

export interface Check {
  readonly name: string
  readonly level: "ok" | "warn" | "error" | "info"
  /** What was found, and — when it is not ok — what to change. */
  readonly message: string
}

export interface PreflightOptions {
  readonly tables: ReadonlyArray<{ readonly schema: string; readonly name: string }>
  readonly lock: "advisory" | "lease"
  /** The stream's current slot, if it exists (for the failover check). */
  readonly slotName: string | undefined
  readonly publication: string
}

export const run = (sql: SqlClient, options: PreflightOptions): Effect.Effect<ReadonlyArray<Check>> =>
  Effect.gen(function*() {
    const checks: Array<Check> = []
    const add = (name: string, level: Check["level"], message: string) => void checks.push({ name, level, message })
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
      : `${s.used_slots} of ${s.max_slots} slots used: slotkeeper needs 2 (its slot and a temporary copy per connection); raise max_replication_slots (restart) or drop unused slots`)
    const freeSenders = s.max_senders - s.senders
    add("wal senders", freeSenders >= 1 ? "ok" : "error", freeSenders >= 1
      ? `${s.senders} of ${s.max_senders} in use`
      : `all ${s.max_senders} wal senders are in use: raise max_wal_senders (restart)`)
    add("role", s.replication || s.superuser ? "ok" : "error", s.replication || s.superuser
      ? `${s.role}${s.superuser ? " (superuser)" : " (REPLICATION)"}`
      : `role ${s.role} lacks REPLICATION: as an administrator, ALTER ROLE "${s.role.replaceAll("\"", "\"\"")}" REPLICATION`)
    add("create", s.can_create || s.publication_exists ? "ok" : "error", s.can_create
      ? "may create slotkeeper's schema and the publication"
      : s.publication_exists ? "may not create in this database, but the publication exists" : `role ${s.role} may not create the publication: GRANT CREATE ON DATABASE to it, or create publication ${options.publication} for it`)
    for (const t of options.tables) {
      const info = yield* PublicationCatalog.table(sql, t.schema, t.name).pipe(Effect.orElseSucceed(() => undefined))
      const name = `table ${t.schema}.${t.name}`
      if (info === undefined) add(name, "error", "does not exist (names are exact: check the schema, the name and its case)")
      else if (!info.mayPublish) add(name, "error", `owned by ${info.owner}: adding it to a publication needs that role (GRANT ${info.owner} TO ${s.role})`)
      else if (info.replicaIdentity === "n" || (info.replicaIdentity !== "f" && info.identityColumns.length === 0)) {
        add(name, "error", "has no replica identity: once published, PostgreSQL refuses UPDATE and DELETE on it. Add a primary key, or REPLICA IDENTITY USING INDEX / FULL")
      } else add(name, "ok", `replica identity ${info.replicaIdentity === "f" ? "full" : `(${info.identityColumns.join(", ")})`}`)
    }
    if (s.v >= 170000 && options.slotName !== undefined) {
      const report = yield* FailoverCheck.primary(sql, options.slotName).pipe(Effect.orElseSucceed(() => undefined))
      for (const f of report?.findings ?? []) add("failover", f.level, f.message)
      if (report !== undefined && report.findings.length === 0) add("failover", "ok", `slot ${options.slotName} is a failover slot and the standbys in synchronized_standby_slots are active`)
    } else if (s.v < 170000) add("failover", "info", `PostgreSQL ${s.v} has no failover slots (17+): a standby cannot carry the stream's slot`)
    return checks
  }).pipe(
    Effect.catchTag("SqlError", (e) => Effect.succeed([{ name: "connect", level: "error", message: `cannot query the server: ${SqlErrors.describe(e)}` }] as const))
  )
