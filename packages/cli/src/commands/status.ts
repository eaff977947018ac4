/**
 * `slotkeeper status`: who owns each stream and since when, its slots with lag, `wal_status` and invalidation, its
 * publication's tables, its backfills' progress, and its durable position — read from slotkeeper's tables and PostgreSQL's catalogs, changing
 * nothing. A human table by default, `--json` for machines.
 *
 * **Details**: an advisory-mode owner is live only while its lock session exists (`holder_pid` with the recorded
 * `backend_start` in `pg_stat_activity`); a lease-mode owner while its lease has not run out. A row whose holder is
 * gone is shown as `none` (the row keeps the last epoch for fencing).
 */
import { FailoverCheck, Health, Lsn, Redact, SlotInspector, StreamId } from "@slotkeeper/core"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "../config/Database.ts"
import * as RunConfig from "../config/RunConfig.ts"
import { ConfigInvalid } from "../config/RunConfig.ts"
import * as RunOptions from "../config/RunOptions.ts"
import { runFlags } from "./run.ts"

interface StreamStatus {
  readonly stream: string
  readonly owner: {
    readonly instance: string
    readonly pid: number | null
    /** The lock session's `application_name` (advisory mode), as `pg_stat_activity` shows it. */
    readonly applicationName: string | null
    readonly epoch: number
    readonly since: string
    readonly mode: string
  } | null
  readonly epoch: number
  /**
   * Each subscription's table as it is now, found by the OID recorded with it: `ok`, `renamed` (still published,
   * under `now`), or `dropped` (its changes stopped; a table under the old name is not it).
   */
  readonly subscriptions: ReadonlyArray<{ readonly id: string; readonly table: string; readonly state: "ok" | "renamed" | "dropped"; readonly now: string | null }>
  readonly slots: ReadonlyArray<{
    readonly slot: string
    readonly state: string
    readonly exists: boolean
    readonly active: boolean
    readonly walStatus: string | null
    readonly retainedBytes: string | null
    readonly lagBytes: string | null
    readonly invalidation: string | null
    /** Since when the slot is inactive (PostgreSQL 17+). */
    readonly inactiveSince: string | null
    /** Seconds before `idle_replication_slot_timeout` lets the server invalidate it (PostgreSQL 18+, when set). */
    readonly idleTimeoutLeftSeconds: number | null
    readonly findings: ReadonlyArray<string>
  }>
  readonly publication: { readonly name: string; readonly tables: ReadonlyArray<string> } | null
  /** Tables of the stream's schemas (`--table 'sales.*'`) left out of the publication, as the owner last recorded them. */
  readonly unpublished: ReadonlyArray<{ readonly table: string; readonly reason: string; readonly message: string }>
  readonly position: string | null
  /** Where the current slot was created: every transaction that commits after it is delivered. */
  readonly captureStart: string | null
  /** The stream's sessions on this server (any instance's), and whether each is encrypted (`pg_stat_ssl`). */
  readonly sessions: ReadonlyArray<{ readonly applicationName: string; readonly pid: number; readonly encrypted: boolean; readonly tls: string | null }>
  /**
   * The stream's backfills (`slotkeeper backfill`, `--snapshot initial`): rows delivered so far, of PostgreSQL's
   * estimate of the table's rows (`pg_class.reltuples`; `null` until the table was first analyzed), and the average
   * rate since it was asked for.
   */
  readonly backfills: ReadonlyArray<{
    readonly id: string
    readonly table: string
    readonly state: string
    readonly rows: number
    readonly chunks: number
    readonly estimatedRows: number | null
    readonly rowsPerSecond: number | null
    readonly etaSeconds: number | null
    readonly where: string | null
    readonly message: string | null
  }>
  /** Per standby given (`--standby-url`, shown without its password): whether its copy of the slot is sync-ready. */
  readonly failover: ReadonlyArray<{ readonly standby: string; readonly ready: boolean; readonly findings: ReadonlyArray<string> }>
}

export const status = Command.make("status", {
  databaseUrl: runFlags.databaseUrl,
  schema: RunOptions.flagWithDefault("schema"),
  standbyUrls: runFlags.standbyUrls,
  json: Flag.Boolean("json").pipe(Flag.withDescription("print the status as JSON"), Flag.withDefault(false))
}, Effect.fn("slotkeeper.status")(function*(flags) {
  const url = yield* Database.requiredUrl(flags.databaseUrl)
  const schema = yield* Effect.fromResult(RunConfig.checkSchema(flags.schema))
  const standbyUrls = yield* Effect.forEach(flags.standbyUrls, (u) => Database.requiredUrl(Option.some(u)).pipe(
    Effect.mapError((e) => new ConfigInvalid({ option: "standby-url", message: e.message.replace(/^--database-url/, "--standby-url") }))
  ))
  const sql = yield* Database.client(url, "slotkeeper:status")
  const standbys = yield* Effect.forEach(standbyUrls, (u) => Effect.map(Database.client(u, "slotkeeper:status"), (client) => ({ url: u, client })))
  const streams = yield* Effect.gen(function*() {
    const [has] = yield* sql.unsafe<{ ok: boolean }>(`SELECT to_regclass('${schema}.ownership') IS NOT NULL AS ok`)
    if (!has?.ok) return [] as Array<StreamStatus>
    const owners = yield* sql.unsafe<{
      stream_id: string; epoch: string; mode: string; holder: string; holder_pid: number | null; acquired_at: string; application_name: string | null; live: boolean
    }>(
      `SELECT o.stream_id, o.epoch::text AS epoch, o.mode, o.holder, o.holder_pid, o.acquired_at::text AS acquired_at, a.application_name,
              CASE WHEN o.mode = 'advisory'
                THEN a.pid IS NOT NULL
                ELSE EXISTS (SELECT 1 FROM ${schema}.leases l WHERE l.stream_id = o.stream_id AND l.epoch = o.epoch AND l.lease_until > clock_timestamp())
              END AS live
         FROM ${schema}.ownership o
         LEFT JOIN pg_stat_activity a ON a.pid = o.holder_pid AND a.backend_start = o.holder_backend_start
        ORDER BY o.stream_id`
    )
    const out: Array<StreamStatus> = []
    for (const o of owners) {
      // consistent_point through to_jsonb: a catalog of an earlier version has no such column
      const slots = yield* sql.unsafe<{ slot_name: string; state: string; consistent_point: string | null }>(
        `SELECT slot_name, state, to_jsonb(s) ->> 'consistent_point' AS consistent_point
           FROM ${schema}.slots s WHERE stream_id = $1 AND to_regclass('${schema}.slots') IS NOT NULL ORDER BY incarnation`, [o.stream_id]
      ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ slot_name: string; state: string; consistent_point: string | null }>))
      const slotStatus: Array<StreamStatus["slots"][number]> = []
      for (const s of slots) {
        const seen = yield* SlotInspector.inspect(sql, s.slot_name).pipe(Effect.orElseSucceed(() => undefined))
        const assessment = seen === undefined ? undefined : Health.assess(s.slot_name, seen.row, seen.currentLsn, { ...Health.defaultThresholds, wantFailover: false })
        slotStatus.push({
          slot: s.slot_name,
          state: s.state,
          exists: seen?.row !== undefined,
          active: seen?.row?.active ?? false,
          walStatus: seen?.row?.walStatus ?? null,
          retainedBytes: assessment?.retainedBytes?.toString() ?? null,
          lagBytes: assessment?.flushLagBytes?.toString() ?? null,
          invalidation: seen?.row?.invalidationReason ?? null,
          inactiveSince: assessment?.inactiveSince ?? null,
          idleTimeoutLeftSeconds: assessment?.idleTimeoutLeftSeconds === undefined ? null : Math.round(assessment.idleTimeoutLeftSeconds),
          findings: assessment?.findings.map((f) => f.message) ?? []
        })
      }
      const publication = StreamId.identity("", o.stream_id).publicationName
      // one row when the publication exists, with its tables (none: an empty list)
      const [published] = yield* sql.unsafe<{ tables: Array<string> }>(
        `SELECT coalesce((SELECT array_agg(t.schemaname || '.' || t.tablename ORDER BY 1) FROM pg_publication_tables t WHERE t.pubname = p.pubname), '{}') AS tables
           FROM pg_publication p WHERE p.pubname = $1`,
        [publication]
      )
      // the OID through to_jsonb: a table of an earlier version has no such column
      const subscriptions = yield* sql.unsafe<{ id: string; schema_name: string; table_name: string; now_schema: string | null; now_name: string | null }>(
        `SELECT s.id, s.schema_name, s.table_name, n.nspname::text AS now_schema, c.relname::text AS now_name
           FROM ${schema}.subscriptions s
           LEFT JOIN pg_class c ON c.oid = coalesce((to_jsonb(s) ->> 'table_oid')::oid, to_regclass(quote_ident(s.schema_name) || '.' || quote_ident(s.table_name)))
           LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE s.stream_id = $1 ORDER BY s.id`, [o.stream_id]
      ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ id: string; schema_name: string; table_name: string; now_schema: string | null; now_name: string | null }>))
      // every session of the stream (lock, guard pool, walsender, admin), with its encryption by the server's account
      const sessions = yield* sql.unsafe<{ application_name: string; pid: number; ssl: boolean; version: string | null }>(
        `SELECT a.application_name, a.pid, COALESCE(s.ssl, false) AS ssl, s.version
           FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s ON s.pid = a.pid
          WHERE starts_with(a.application_name, $1) ORDER BY a.application_name, a.pid`, [`slotkeeper:${o.stream_id}:`]
      )
      type BackfillRow = { id: string; schema_name: string; table_name: string; state: string; rows: string; chunks: string; where_clause: string | null; message: string | null; estimate: string | null; seconds: number | null }
      const backfills = yield* sql.unsafe<BackfillRow>(
        `SELECT b.backfill_id AS id, b.schema_name, b.table_name, b.state, b.rows::text AS rows, b.chunks::text AS chunks, b.where_clause, b.message,
                CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint::text END AS estimate,
                extract(epoch FROM (b.updated_at - b.requested_at))::float8 AS seconds
           FROM ${schema}.backfills b
           LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(b.schema_name) || '.' || quote_ident(b.table_name))
          WHERE b.stream_id = $1 ORDER BY b.requested_at, b.backfill_id`, [o.stream_id]
      ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<BackfillRow>)) // no backfills table: none was ever asked for
      // to_jsonb: a catalog of an earlier version has no such column
      const [left] = yield* sql.unsafe<{ unpublished: string | null }>(
        `SELECT (to_jsonb(p) -> 'unpublished')::text AS unpublished FROM ${schema}.publications p WHERE stream_id = $1 AND to_regclass('${schema}.publications') IS NOT NULL`, [o.stream_id]
      ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ unpublished: string | null }>))
      const unpublished = left?.unpublished == null || left.unpublished === "null" ? [] : JSON.parse(left.unpublished) as StreamStatus["unpublished"]
      const [position] = yield* sql.unsafe<{ lsn: string }>(
        `SELECT lsn::text AS lsn FROM ${schema}.checkpoints WHERE stream_id = $1 AND to_regclass('${schema}.checkpoints') IS NOT NULL`, [o.stream_id]
      ).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<{ lsn: string }>))
      out.push({
        stream: o.stream_id,
        owner: o.live ? { instance: o.holder, pid: o.holder_pid, applicationName: o.application_name, epoch: Number(o.epoch), since: o.acquired_at, mode: o.mode } : null,
        epoch: Number(o.epoch),
        subscriptions: subscriptions.map((r) => {
          const table = `${r.schema_name}.${r.table_name}`
          const now = r.now_name === null ? null : `${r.now_schema}.${r.now_name}`
          return { id: r.id, table, state: now === null ? "dropped" as const : now === table ? "ok" as const : "renamed" as const, now }
        }),
        slots: slotStatus,
        publication: published === undefined ? null : { name: publication, tables: published.tables },
        unpublished,
        position: position === undefined ? null : Lsn.format(Lsn.parseUnsafe(position.lsn)),
        captureStart: slots.filter((sl) => sl.state === "active").at(-1)?.consistent_point ?? null,
        backfills: backfills.map((b) => {
          const rows = Number(b.rows)
          const rate = b.seconds !== null && b.seconds > 0 && rows > 0 ? rows / b.seconds : null
          const estimate = b.estimate === null ? null : Number(b.estimate)
          return {
            id: b.id,
            table: `${b.schema_name}.${b.table_name}`,
            state: b.state,
            rows,
            chunks: Number(b.chunks),
            estimatedRows: estimate,
            rowsPerSecond: rate === null ? null : Math.round(rate),
            etaSeconds: b.state === "running" && rate !== null && estimate !== null ? Math.max(0, Math.round((estimate - rows) / rate)) : null,
            where: b.where_clause,
            message: b.message
          }
        }),
        sessions: sessions.map((x) => ({ applicationName: x.application_name, pid: x.pid, encrypted: x.ssl === true, tls: x.version })),
        failover: yield* Effect.forEach(standbys, (standby) =>
          Effect.gen(function*() {
            const current = slots.filter((sl) => sl.state === "active").at(-1)?.slot_name
            const report = current === undefined ? undefined : yield* FailoverCheck.standby(standby.client, current).pipe(Effect.orElseSucceed(() => undefined))
            return {
              standby: Redact.url(standby.url),
              ready: report !== undefined && report.ok && report.findings.every((f) => f.code !== "SlotNotSyncReady"),
              findings: report === undefined ? ["cannot be read"] : report.findings.map((f) => f.message)
            }
          }))
      })
    }
    return out
  }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(new Error(`reading the status from ${Redact.url(url)}: ${e.message}`, { cause: e }))))
  if (flags.json) return yield* Console.log(JSON.stringify({ streams }, null, 2))
  if (streams.length === 0) return yield* Console.log("no slotkeeper streams in this database")
  for (const s of streams) {
    yield* Console.log(`stream ${s.stream}: ${s.owner === null ? "no owner" : `owned by ${s.owner.instance} (pid ${s.owner.pid ?? "?"}${s.owner.applicationName === null ? "" : ` ${s.owner.applicationName}`}, ${s.owner.mode}, epoch ${s.owner.epoch}) since ${s.owner.since}`}`)
    yield* Console.log(`  position     ${s.position ?? "none yet"}`)
    yield* Console.log(`  capture      ${s.captureStart === null ? "start not recorded" : `since ${s.captureStart}: every transaction committing after it is delivered`}`)
    for (const f of s.failover) {
      yield* Console.log(`  failover     ${f.standby}: ${f.ready ? "ready (a sync-ready copy of the slot)" : `NOT READY: ${f.findings.join("; ")}`}`)
    }
    for (const x of s.sessions) {
      yield* Console.log(`  session      ${x.applicationName} (pid ${x.pid}): ${x.encrypted ? `encrypted (${x.tls ?? "TLS"})` : "NOT encrypted"}`)
    }
    yield* Console.log(`  publication  ${s.publication === null ? "missing" : `${s.publication.name}: ${s.publication.tables.join(", ") || "(no tables)"}`}`)
    for (const t of s.unpublished) yield* Console.log(`  table        ${t.table}: NOT PUBLISHED (${t.reason}): ${t.message}`)
    for (const sub of s.subscriptions.filter((x) => x.state !== "ok")) {
      yield* Console.log(`  table        ${sub.table} (subscription ${sub.id}): ${sub.state === "renamed" ? `RENAMED to ${sub.now}, still published` : "DROPPED: its changes stopped"}`)
    }
    for (const b of s.backfills) {
      const of = b.estimatedRows === null || b.estimatedRows === 0 ? "" : ` of ~${b.estimatedRows.toLocaleString("en")} (${Math.min(100, Math.round((100 * b.rows) / b.estimatedRows))}%)`
      const pace = b.rowsPerSecond === null ? "" : `, ${b.rowsPerSecond.toLocaleString("en")} rows/s on average${b.etaSeconds === null ? "" : `, about ${b.etaSeconds} s left`}`
      yield* Console.log(`  backfill     ${b.id} ${b.table}${b.where === null ? "" : ` where ${b.where}`}: ${b.state}, ${b.rows.toLocaleString("en")} rows${of} in ${b.chunks} chunks${b.state === "running" ? pace : ""}${b.message === null ? "" : ` (${b.message})`}`)
    }
    for (const slot of s.slots) {
      const detail = slot.exists
        ? `${slot.active ? "streaming" : "idle"}, wal_status ${slot.walStatus ?? "?"}, retains ${slot.retainedBytes ?? "?"} bytes, lag ${slot.lagBytes ?? "?"} bytes${slot.invalidation ? `, INVALIDATED (${slot.invalidation})` : ""}` +
          `${slot.idleTimeoutLeftSeconds !== null ? `, inactive since ${slot.inactiveSince}: invalidated by idle_replication_slot_timeout in ${slot.idleTimeoutLeftSeconds} s` : ""}`
        : "does not exist"
      yield* Console.log(`  slot         ${slot.slot} [${slot.state}]: ${detail}`)
    }
  }
}, Effect.scoped)).pipe(
  Command.withDescription("Show who owns each stream, its slots with lag and wal_status, its publication's tables and its position")
)
