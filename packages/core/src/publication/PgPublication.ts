/**
 * PgPublication: the publication manager's backend on a real server — the stream's publication
 * (`slotkeeper_<stream>` by default), and its subscriptions saved in slotkeeper's `subscriptions` table.
 *
 * **What it guarantees**
 * - `apply` is one `guarded` transaction: the publication is created if missing (and recorded, so that a later
 *   disappearance is recognised as a drop behind slotkeeper's back), what it publishes is set, the minimal
 *   `Desired.plan` is run (every touched table locked first, in sorted order), opted-in replica identities are set
 *   to FULL, and the subscription change is saved. Either all of it happens, or none (the guard's proof fails with
 *   `OwnershipLost`, a statement fails, or the transaction is rolled back).
 * - It never hangs and never deadlocks with application DDL: `lock_timeout` bounds every lock wait, the tables are
 *   locked in one sorted order, and a lock timeout is retried with a backoff a few times before it is a
 *   `PublicationError` (`LockTimeout`) that says the tables are busy.
 * - A publication that is not slotkeeper's to change — owned by another role (and we are not a superuser), or
 *   `FOR ALL TABLES` — is an error (`OwnedByOther`), never altered.
 * - It never makes the application's UPDATE or DELETE fail: inside the transaction, before committing, PostgreSQL
 *   itself is asked whether it would still accept them on every table the publication covers (and every table the
 *   change touched, with their inheritance children and partitions); one it accepted before and would refuse after is
 *   a `WritesWouldBreak`, and the transaction is rolled back (`WriteSafety`).
 *
 * **Details**
 *
 * Filters are compared as PostgreSQL prints them. The printed form of each desired filter is learnt from the
 * server: from validation for a subscription's own filter, and by reading the publication back after each apply for
 * a combined one. A filter whose printed form is not known yet is applied again (dropped and added in the same
 * transaction, which a walsender sees as one change), never assumed equal.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { ensureColumns, ensureTable, qualified } from "../internal/schemaSetup.ts"
import * as SqlErrors from "../internal/sqlError.ts"
import type { Ownership } from "../ownership/Ownership.ts"
import * as Desired from "./Desired.ts"
import * as PublicationCatalog from "./PublicationCatalog.ts"
import { PublicationError } from "./PublicationCatalog.ts"
import type { Drift, PublicationBackend } from "./PublicationManager.ts"
import { qualifiedName, quoteIdent } from "./Subscription.ts"
import * as Validation from "./Validation.ts"
import * as WriteSafety from "./WriteSafety.ts"
import * as Retry from "../internal/retry.ts"

export interface Publishes {
  readonly insert: boolean
  readonly update: boolean
  readonly delete: boolean
  readonly truncate: boolean
}

export interface PgPublicationOptions {
  readonly publication: string
  readonly schema: string
  /** What the publication publishes (default: insert, update, delete, truncate). */
  readonly publishes?: Publishes
  /**
   * `publish_via_partition_root` (PostgreSQL 13+, default `false`): a partitioned table's changes are published under
   * its own name and shape rather than its partitions'.
   */
  readonly viaRoot?: boolean
  /**
   * `publish_generated_columns` (PostgreSQL 18+): whether stored generated columns are published. Default `stored` on
   * 18+ (the whole row), `none` before, where `stored` is an error.
   */
  readonly generatedColumns?: "stored" | "none" | undefined
  /** `lock_timeout` of a reconcile (default 2 s); a timeout is retried `lockRetries` times (default 4). */
  readonly lockTimeoutMs?: number
  readonly lockRetries?: number
}

/** The operations of PostgreSQL's `publish` option, in its order. */
export const operations = ["insert", "update", "delete", "truncate"] as const

/** The `publish` option's text for `p` (`insert, truncate`), as PostgreSQL writes it. */
export const publishList = (p: Publishes): string => operations.filter((k) => p[k]).join(", ")

/**
 * The stream's publication in PostgreSQL, as the backend `PublicationManager` reconciles through: every change is
 * a guarded transaction of the owner `own`, on `sql`.
 *
 * **Details**
 * - The publication is created on first use and then changed as a whole: the minimal plan (`Desired`) applied in
 *   one transaction, with the subscriptions recorded in slotkeeper's `subscriptions` table (each table's OID with
 *   it) in that same transaction.
 * - Each apply proves in PostgreSQL, inside the transaction, that the application's UPDATE and DELETE keep working
 *   (`WriteSafety`), and rolls back otherwise.
 * - `inspect` reports drift: tables added or removed behind slotkeeper's back, renamed or dropped tables (followed
 *   by OID), publish options changed, the publication dropped (re-created by the next repair, with a warning that
 *   consumers need a resync).
 *
 * **Gotchas**
 * - A table locked by another transaction: `lock_timeout` (default 2 s), `lockRetries` retries, then
 *   `PublicationError` `LockTimeout`.
 * - A publication of the same name that is `FOR ALL TABLES` or owned by another role is `OwnedByOther`, never
 *   altered.
 */
export const make = (own: Ownership["Service"], sql: SqlClient, options: PgPublicationOptions): Effect.Effect<PublicationBackend, PublicationError> =>
  Effect.gen(function*() {
    const publishes = options.publishes ?? { insert: true, update: true, delete: true, truncate: true }
    const viaRoot = options.viaRoot ?? false
    const version = yield* PublicationCatalog.serverVersion(sql)
    const generatedColumns = options.generatedColumns ?? (version >= 180000 ? "stored" : "none")
    if (generatedColumns === "stored" && version < 180000) {
      return yield* new PublicationError({ reason: "Query", message: `publishing generated columns (publish_generated_columns = stored) needs PostgreSQL 18+; this server is ${version}` })
    }
    // the options of CREATE PUBLICATION ... WITH (...)
    const withOptions = [
      `publish = '${publishList(publishes)}'`,
      ...(viaRoot ? ["publish_via_partition_root = true"] : []),
      ...(version >= 180000 ? [`publish_generated_columns = ${generatedColumns}`] : [])
    ].join(", ")
    const lockTimeoutMs = options.lockTimeoutMs ?? 2000
    const setupError = (message: string, retryable: boolean) => new PublicationError({ reason: "Query", message, retryable })
    yield* ensureTable(sql, options.schema, "subscriptions", `
      stream_id             text NOT NULL,
      id                    text NOT NULL,
      schema_name           text NOT NULL,
      table_name            text NOT NULL,
      columns               text,
      filter                text,
      printed_filter        text,
      replica_identity_full boolean NOT NULL,
      created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
      table_oid             bigint,
      PRIMARY KEY (stream_id, id)`, setupError)
    // the table's OID: subscriptions follow tables, not names (a column added after the first versions)
    yield* ensureColumns(sql, options.schema, "subscriptions", [["table_oid", "bigint"]], setupError)
    // with the configuration the set was last made to follow (see Configuration)
    yield* ensureTable(sql, options.schema, "publications", `
      stream_id   text PRIMARY KEY,
      publication text NOT NULL,
      created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
      config_hash text,
      configured_by text,
      configured_started_at text,
      configured_epoch bigint`, setupError)
    yield* ensureColumns(sql, options.schema, "publications",
      [["config_hash", "text"], ["configured_by", "text"], ["configured_started_at", "text"], ["configured_epoch", "bigint"], ["unpublished", "jsonb"]], setupError)
    const subscriptionsTable = qualified(options.schema, "subscriptions")
    const publicationsTable = qualified(options.schema, "publications")
    const pub = quoteIdent(options.publication)

    // desired filter (per table) -> as PostgreSQL printed it
    const printed = new Map<string, string>()
    const printedKey = (schema: string, name: string, where: string) => `${schema}\u0000${name}\u0000${where}`
    const learn = (all: ReadonlyArray<Validation.Validated>) => {
      for (const s of all) if (s.where !== undefined && s.printedWhere !== undefined) printed.set(printedKey(s.schema, s.name, s.where), s.printedWhere)
    }
    // an inheritance child PostgreSQL added with its parent is part of the parent's entry, not a table to drop
    const planFor = (actual: ReadonlyArray<PublicationCatalog.PublishedTable>, wanted: ReadonlyArray<Desired.TableSpec>) =>
      Desired.plan(
        { tables: actual.filter((t) => !t.inherited || wanted.some((w) => w.schema === t.schema && w.name === t.name)) },
        wanted,
        (where, t) => printed.get(printedKey(t.schema, t.name, where))
      )

    const [me] = yield* sql.unsafe<{ role: string; superuser: boolean }>(
      "SELECT current_user::text AS role, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser"
    ).pipe(Effect.mapError(PublicationCatalog.queryError("reading the current role")))

    const notOurs = (row: PublicationCatalog.PublicationRow): PublicationError | undefined => {
      if (row.allTables) {
        return new PublicationError({ reason: "OwnedByOther", message: `publication ${options.publication} is FOR ALL TABLES: it is not one slotkeeper manages. Choose another publication name, or drop it` })
      }
      if (row.owner !== me?.role && !me?.superuser) {
        return new PublicationError({
          reason: "OwnedByOther",
          message: `publication ${options.publication} is owned by ${row.owner}, not by ${me?.role}: only its owner may change it. Run slotkeeper as ${row.owner}, ` +
            `or have an administrator run ALTER PUBLICATION ${pub} OWNER TO ${quoteIdent(me?.role ?? "")}`
        })
      }
      return undefined
    }

    /** The OIDs of the tables named (those that exist). */
    const tableOids = (tables: ReadonlyArray<Desired.TableSpec>) =>
      Effect.map(
        sql.unsafe<{ oid: string }>(
          `SELECT to_regclass(quote_ident(s) || '.' || quote_ident(n))::oid::int8::text AS oid FROM unnest($1::text[], $2::text[]) AS t(s, n)`,
          [tables.map((t) => t.schema), tables.map((t) => t.name)]
        ),
        (rows) => rows.filter((r) => r.oid !== null).map((r) => Number(r.oid))
      )

    const applyOnce = (change: Parameters<PublicationBackend["apply"]>[0]) =>
      own.guarded(Effect.gen(function*() {
        yield* sql.unsafe(`SET LOCAL lock_timeout = ${Math.trunc(lockTimeoutMs)}`)
        yield* sql.unsafe("SET LOCAL standard_conforming_strings = on") // the filters' lexical check assumes it
        let row = yield* PublicationCatalog.read(sql, options.publication)
        if (row === undefined) {
          yield* sql.unsafe(`CREATE PUBLICATION ${pub} WITH (${withOptions})`)
          yield* sql.unsafe(
            `INSERT INTO ${publicationsTable} (stream_id, publication) VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE SET publication = excluded.publication`,
            [own.streamId, options.publication]
          )
          row = (yield* PublicationCatalog.read(sql, options.publication))!
        }
        const refused = notOurs(row)
        if (refused !== undefined) return yield* refused
        if (row.insert !== publishes.insert || row.update !== publishes.update || row.delete !== publishes.delete || row.truncate !== publishes.truncate) {
          yield* sql.unsafe(`ALTER PUBLICATION ${pub} SET (publish = '${publishList(publishes)}')`)
        }
        // on before the plan (a partitioned table's filter needs it), off after it (PostgreSQL refuses turning it off
        // while a partitioned table has a filter or a column list)
        if (viaRoot && !row.viaRoot) yield* sql.unsafe(`ALTER PUBLICATION ${pub} SET (publish_via_partition_root = true)`)
        if (row.generatedColumns !== generatedColumns) yield* sql.unsafe(`ALTER PUBLICATION ${pub} SET (publish_generated_columns = ${generatedColumns})`)
        learn(change.all)
        const wanted = Desired.desired(change.all)
        const plan = planFor(row.tables, wanted)
        // the tables this change may affect (published now, or wanted), and which of them PostgreSQL refuses writes on now
        const touched = [...new Set([...row.tables.map((t) => t.oid), ...(yield* tableOids(wanted))])]
        const before = yield* WriteSafety.probe(sql, touched)
        // opted-in replica identities first: the tables are locked by the plan's first statement anyway
        const full = change.added.filter((s) => s.replicaIdentityFull)
        const statements = Desired.statements(options.publication, plan)
        if (statements.length > 0) yield* sql.unsafe(statements[0]!)
        for (const s of full) {
          const info = yield* PublicationCatalog.table(sql, s.schema, s.name)
          if (info !== undefined && info.replicaIdentity !== "f") yield* sql.unsafe(`ALTER TABLE ${qualifiedName(s.schema, s.name)} REPLICA IDENTITY FULL`)
        }
        for (const statement of statements.slice(1)) yield* sql.unsafe(statement)
        if (!viaRoot && row.viaRoot) yield* sql.unsafe(`ALTER PUBLICATION ${pub} SET (publish_via_partition_root = false)`)
        // ... and after (the publication read once more: its tables now, and how the server printed the combined filters):
        // nothing that worked may now be refused
        const after = yield* PublicationCatalog.read(sql, options.publication)
        const refusedAfter = yield* WriteSafety.probe(sql, [...new Set([...touched, ...(after?.tables ?? []).map((t) => t.oid)])])
        const broken = WriteSafety.newlyRefused(before, refusedAfter)
        if (broken.length > 0) {
          return yield* new WriteSafety.WritesWouldBreak({
            message: `publication ${options.publication}: not changed, because PostgreSQL would then refuse the application's ${WriteSafety.describe(broken)}`
          })
        }
        if (change.removed.length > 0) {
          yield* sql.unsafe(`DELETE FROM ${subscriptionsTable} WHERE stream_id = $1 AND id = ANY($2::text[])`, [own.streamId, change.removed])
        }
        if (change.configured !== undefined) {
          yield* sql.unsafe(
            `INSERT INTO ${publicationsTable} AS p (stream_id, publication, config_hash, configured_by, configured_started_at, configured_epoch)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (stream_id) DO UPDATE SET publication = excluded.publication, config_hash = excluded.config_hash,
               configured_by = excluded.configured_by, configured_started_at = excluded.configured_started_at, configured_epoch = excluded.configured_epoch`,
            [own.streamId, options.publication, change.configured.hash, change.configured.instanceId, change.configured.startedAt, own.epoch]
          )
        }
        for (const s of change.added) {
          yield* sql.unsafe(
            `INSERT INTO ${subscriptionsTable} (stream_id, id, schema_name, table_name, columns, filter, printed_filter, replica_identity_full, table_oid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (stream_id, id) DO UPDATE SET schema_name = excluded.schema_name, table_name = excluded.table_name, columns = excluded.columns,
               filter = excluded.filter, printed_filter = excluded.printed_filter, replica_identity_full = excluded.replica_identity_full,
               table_oid = excluded.table_oid`,
            [own.streamId, s.id, s.schema, s.name, s.columns === undefined ? null : JSON.stringify(s.columns), s.where ?? null, s.printedWhere ?? null, s.replicaIdentityFull, s.oid === undefined ? null : String(s.oid)]
          )
        }
        for (const w of wanted) {
          const got = after?.tables.find((t) => t.schema === w.schema && t.name === w.name)
          if (w.where !== undefined && got?.where !== undefined) printed.set(printedKey(w.schema, w.name, w.where), got.where)
        }
      })).pipe(
        Effect.catchTag("SqlError", (e: SqlError) =>
          Effect.fail(
            SqlErrors.sqlState(e) === "55P03"
              ? new PublicationError({ reason: "LockTimeout", message: `publication ${options.publication}: a table is locked by another transaction (lock_timeout ${lockTimeoutMs} ms)` })
              : SqlErrors.sqlState(e) === "42501"
              ? new PublicationError({ reason: "Privilege", message: `publication ${options.publication}: ${SqlErrors.describe(e)}` })
              : PublicationCatalog.queryError(`publication ${options.publication}`)(e)
          ))
      )

    const isLockTimeout = (e: { readonly _tag: string }): e is PublicationError => e instanceof PublicationError && e.reason === "LockTimeout"
    /** A lock timeout is retried with a backoff a few times, then is an error that says the tables are busy. */
    const retryLocked = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | PublicationError> =>
      effect.pipe(
        Effect.retry({ while: isLockTimeout, schedule: Retry.lockTimeout, times: options.lockRetries ?? 4 }),
        Effect.mapError((e): E | PublicationError =>
          isLockTimeout(e)
            ? new PublicationError({ reason: "LockTimeout", message: `${e.message}; gave up after ${(options.lockRetries ?? 4) + 1} attempts: a long transaction or DDL holds the tables` })
            : e
        )
      )

    const apply: PublicationBackend["apply"] = (change) => retryLocked(applyOnce(change))

    const load = sql.unsafe<{ id: string; schema_name: string; table_name: string; columns: string | null; filter: string | null; printed_filter: string | null; replica_identity_full: boolean; table_oid: string | null }>(
      `SELECT id, schema_name, table_name, columns, filter, printed_filter, replica_identity_full, table_oid::text AS table_oid FROM ${subscriptionsTable} WHERE stream_id = $1 ORDER BY id`,
      [own.streamId]
    ).pipe(
      Effect.map((rows) =>
        rows.map((r): Validation.Validated => ({
          id: r.id,
          schema: r.schema_name,
          name: r.table_name,
          columns: r.columns === null ? undefined : (JSON.parse(r.columns) as Array<string>),
          where: r.filter ?? undefined,
          printedWhere: r.printed_filter ?? undefined,
          replicaIdentityFull: r.replica_identity_full,
          oid: r.table_oid === null ? undefined : Number(r.table_oid)
        }))
      ),
      Effect.mapError(PublicationCatalog.queryError("loading the subscriptions"))
    )

    const inspect: PublicationBackend["inspect"] = (all) =>
      Effect.gen(function*() {
        const row = yield* PublicationCatalog.read(sql, options.publication)
        if (row === undefined) {
          const [recorded] = yield* sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${publicationsTable} WHERE stream_id = $1`, [own.streamId])
            .pipe(Effect.mapError(PublicationCatalog.queryError("reading slotkeeper's publications")))
          return (recorded?.n ?? 0) > 0
            ? [{
              code: "PublicationDropped",
              message: `publication ${options.publication} was dropped behind slotkeeper's back: changes made since were not decoded for this stream ` +
                `(recent PostgreSQL versions skip a missing publication silently) and consumers need a resync; slotkeeper re-creates it when it repairs drift`
            } satisfies Drift]
            : [{ code: "PublicationMissing", message: `publication ${options.publication} does not exist yet` } satisfies Drift]
        }
        const drift: Array<Drift> = []
        const refused = notOurs(row)
        if (refused !== undefined) drift.push({ code: "Owner", message: refused.message })
        if (row.insert !== publishes.insert || row.update !== publishes.update || row.delete !== publishes.delete || row.truncate !== publishes.truncate) {
          drift.push({ code: "PublishOptions", message: `publication ${options.publication} publishes ${publishList(row)}, slotkeeper wants ${publishList(publishes)}` })
        }
        if (row.viaRoot !== viaRoot) {
          drift.push({ code: "PublishOptions", message: `publication ${options.publication} has publish_via_partition_root = ${row.viaRoot}, slotkeeper wants ${viaRoot}` })
        }
        if (row.generatedColumns !== generatedColumns) {
          drift.push({ code: "PublishOptions", message: `publication ${options.publication} has publish_generated_columns = ${row.generatedColumns}, slotkeeper wants ${generatedColumns}` })
        }
        learn(all)
        const plan = planFor(row.tables, Desired.desired(all))
        if (!Desired.isEmpty(plan)) {
          const names = (ts: ReadonlyArray<Desired.TableSpec>) => ts.map((t) => `${t.schema}.${t.name}`).join(", ")
          drift.push({
            code: "TablesDiffer",
            message: `publication ${options.publication} differs from its subscriptions:` +
              `${plan.add.length > 0 ? ` missing ${names(plan.add)};` : ""}${plan.drop.length > 0 ? ` not needed ${names(plan.drop)};` : ""}` +
              `${plan.change.length > 0 ? ` other columns or filter on ${names(plan.change)};` : ""}`.replace(/;$/, "")
          })
        }
        return drift
      })

    const follow: PublicationBackend["follow"] = (all) =>
      all.length === 0 ? Effect.succeed({ renamed: [], dropped: [], identified: [] }) : Effect.map(
        // each subscription's table now: by its OID when one is recorded (else by name, once, to record it)
        sql.unsafe<{ id: string; oid: string | null; schema: string | null; name: string | null }>(
          `SELECT s.id, c.oid::int8::text AS oid, n.nspname::text AS schema, c.relname::text AS name
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS s(id, schema_name, table_name, table_oid)
             LEFT JOIN pg_class c ON c.relkind IN ('r', 'p') AND c.oid = coalesce(s.table_oid::oid, to_regclass(quote_ident(s.schema_name) || '.' || quote_ident(s.table_name)))
             LEFT JOIN pg_namespace n ON n.oid = c.relnamespace`,
          [all.map((s) => s.id), all.map((s) => s.schema), all.map((s) => s.name), all.map((s) => (s.oid === undefined ? null : String(s.oid)))]
        ),
        (rows) => {
          const byId = new Map(all.map((s) => [s.id, s]))
          const renamed: Array<{ before: Validation.Validated; after: Validation.Validated }> = []
          const dropped: Array<Validation.Validated> = []
          const identified: Array<Validation.Validated> = []
          for (const r of rows) {
            const s = byId.get(r.id)!
            if (r.oid === null || r.schema === null || r.name === null) dropped.push(s)
            else if (r.schema !== s.schema || r.name !== s.name) renamed.push({ before: s, after: { ...s, schema: r.schema, name: r.name, oid: Number(r.oid) } })
            else if (s.oid === undefined) identified.push({ ...s, oid: Number(r.oid) })
          }
          return { renamed, dropped, identified }
        }
      ).pipe(Effect.mapError(PublicationCatalog.queryError("looking up the subscriptions' tables")))

    const configured: PublicationBackend["configured"] = Effect.map(
      sql.unsafe<{ hash: string | null; instance: string | null; started_at: string | null; epoch: string | null }>(
        `SELECT config_hash AS hash, configured_by AS instance, configured_started_at AS started_at, configured_epoch::text AS epoch
           FROM ${publicationsTable} WHERE stream_id = $1`,
        [own.streamId]
      ),
      ([row]) =>
        row?.hash == null || row.instance === null || row.started_at === null
          ? undefined
          : { hash: row.hash, instanceId: row.instance, startedAt: row.started_at, epoch: Number(row.epoch ?? 0) }
    ).pipe(Effect.mapError(PublicationCatalog.queryError("reading the publication's configuration")))

    return {
      validate: (s) => retryLocked(Validation.validate(sql, s, { publishes, viaRoot, generatedColumns: version >= 180000 ? generatedColumns : undefined, lockTimeoutMs })),
      load,
      apply,
      inspect,
      follow,
      configured
    } satisfies PublicationBackend
  })
