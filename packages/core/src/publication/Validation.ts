/**
 * Validation: a subscription checked against the server before anything is changed — so that a bad one is a typed
 * error that says what to fix, and the publication, the tables and slotkeeper's tables are left as they were.
 *
 * **Checks**
 * - column lists and row filters need PostgreSQL 15+;
 * - the table exists (a table or a partitioned table), and the role may add it to a publication (it must own it);
 * - the named columns exist;
 * - the row filter means something to PostgreSQL: it is checked by PostgreSQL itself, by creating a scratch
 *   publication with it in a transaction that is always rolled back (after `Subscription`'s lexical check made sure
 *   it is one balanced expression). This also yields the filter as PostgreSQL prints it, and the columns it uses;
 * - the application's UPDATE and DELETE still work once the table is published so (`WriteSafety`): proven by
 *   PostgreSQL itself in that same rolled-back transaction — with the opted-in `REPLICA IDENTITY FULL` applied — on
 *   the table and every inheritance child and partition it publishes. PostgreSQL's rules decide, not a copy of them
 *   (a partitioned table without a key of its own whose partitions have keys is accepted, as PostgreSQL accepts it);
 *   a refusal says which table, which columns and what to change. A table that PostgreSQL already refused writes on
 *   before is not slotkeeper's doing and does not count.
 */
import { randomBytes } from "node:crypto"
import { Data, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Desired from "./Desired.ts"
import * as PublicationCatalog from "./PublicationCatalog.ts"
import { type Checked, qualifiedName, SubscriptionInvalid } from "./Subscription.ts"
import * as WriteSafety from "./WriteSafety.ts"

export interface Validated extends Checked {
  /** The filter as PostgreSQL prints it. */
  readonly printedWhere: string | undefined
  /** The table's OID when it was validated: drift repair follows the table, not its name (`undefined`: not known). */
  readonly oid?: number | undefined
}

class Rollback extends Data.TaggedError("Rollback")<{ readonly value: unknown }> {}

/** Runs `effect` in a transaction that is always rolled back, and returns its result. */
export const inRolledBackTransaction = <A, E>(sql: SqlClient, effect: Effect.Effect<A, E>): Effect.Effect<A, E | SqlError> =>
  SqlErrors.transaction(sql, Effect.flatMap(effect, (value) => Effect.fail(new Rollback({ value })))).pipe(
    Effect.catch((e) => (e instanceof Rollback ? Effect.succeed(e.value as A) : Effect.fail(e as E | SqlError)))
  )

export interface ClauseOptions {
  readonly lockTimeoutMs: number
  /** What the scratch publication publishes (as the stream's does). */
  readonly publish: string
  /** `publish_via_partition_root` (as the stream's publication has it): row filters on a partitioned table need it. */
  readonly viaRoot?: boolean | undefined
  /** `publish_generated_columns` (PostgreSQL 18+), as the stream's publication has it. */
  readonly generatedColumns?: "stored" | "none" | undefined
  /** Set the table's replica identity to FULL first (the subscription opts in). */
  readonly replicaIdentityFull: boolean
  /** `server_version_num`: row filters (and their catalog column) exist from 150000. */
  readonly serverVersion: number
}

/**
 * PostgreSQL's own check of a table clause: a scratch publication, rolled back; the printed filter, its columns, and
 * the UPDATE and DELETE that publishing it would make PostgreSQL refuse (`WriteSafety`).
 */
export const tryClause = (sql: SqlClient, spec: Desired.TableSpec & { readonly oid: number }, options: ClauseOptions) =>
  inRolledBackTransaction(sql, Effect.gen(function*() {
    yield* sql.unsafe(`SET LOCAL lock_timeout = ${Math.trunc(options.lockTimeoutMs)}`)
    yield* sql.unsafe("SET LOCAL standard_conforming_strings = on") // the lexical check assumes it
    const before = yield* WriteSafety.probe(sql, [spec.oid])
    if (options.replicaIdentityFull) yield* sql.unsafe(`ALTER TABLE ${qualifiedName(spec.schema, spec.name)} REPLICA IDENTITY FULL`)
    const scratch = `slotkeeper_check_${randomBytes(6).toString("hex")}`
    yield* sql.unsafe(`CREATE PUBLICATION "${scratch}" FOR TABLE ${Desired.clause(spec)} WITH (publish = '${options.publish}'` +
      `${options.viaRoot === true ? ", publish_via_partition_root = true" : ""}` +
      `${options.serverVersion >= 180000 && options.generatedColumns !== undefined ? `, publish_generated_columns = ${options.generatedColumns}` : ""})`)
    // row filters exist from PostgreSQL 15 (before, there is no prqual to read)
    const [row] = options.serverVersion < 150000 ? [undefined] : yield* sql.unsafe<{ filter: string | null; used: string | null }>(
      `SELECT pg_get_expr(pr.prqual, pr.prrelid) AS filter,
              (SELECT array_to_json(array_agg(DISTINCT a.attname::text))::text FROM pg_attribute a
                WHERE a.attrelid = pr.prrelid
                  AND a.attnum IN (SELECT m[1]::int FROM regexp_matches(coalesce(pr.prqual::text, ''), ':varattno (\\d+)', 'g') AS m)) AS used
         FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1 AND pr.prrelid = $2::oid`,
      [scratch, String(spec.oid)]
    )
    const after = yield* WriteSafety.probe(sql, [spec.oid])
    return {
      printedWhere: row?.filter ?? undefined,
      filterColumns: JSON.parse(row?.used ?? "[]") as Array<string>,
      refused: WriteSafety.newlyRefused(before, after)
    }
  }))

/** The table's columns that `filter`'s text names (unquoted names fold to lower case), in the table's order. */
export const namedColumns = (filter: string, columns: ReadonlyArray<string>): ReadonlyArray<string> => {
  const named = new Set<string>()
  const code = filter.replace(/'(?:[^']|'')*'/g, " ") // not inside string literals
  for (const m of code.matchAll(/"((?:[^"]|"")+)"|([A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)/g)) {
    named.add(m[1] !== undefined ? m[1].replaceAll("\"\"", "\"") : m[2]!.toLowerCase())
  }
  return columns.filter((c) => named.has(c))
}

export interface ValidationOptions {
  /** What the publication publishes; update/delete bring the replica-identity checks. */
  readonly publishes: { readonly insert?: boolean; readonly update: boolean; readonly delete: boolean; readonly truncate?: boolean }
  /** `publish_via_partition_root`, as the stream's publication will have it. */
  readonly viaRoot?: boolean | undefined
  /** `publish_generated_columns` (PostgreSQL 18+), as the stream's publication will have it. */
  readonly generatedColumns?: "stored" | "none" | undefined
  readonly lockTimeoutMs: number
}

export const validate = (sql: SqlClient, s: Checked, options: ValidationOptions): Effect.Effect<Validated, SubscriptionInvalid | PublicationCatalog.PublicationError> =>
  Effect.gen(function*() {
    const invalid = (reason: SubscriptionInvalid["reason"], message: string) =>
      new SubscriptionInvalid({ id: s.id, reason, message: `subscription ${JSON.stringify(s.id)} (table ${s.schema}.${s.name}): ${message}` })
    const version = yield* PublicationCatalog.serverVersion(sql)
    if (version < 150000 && (s.columns !== undefined || s.where !== undefined)) {
      return yield* invalid("VersionTooOld", `column lists and row filters need PostgreSQL 15+, this server is ${version}: subscribe to the whole table, or upgrade`)
    }
    const table = yield* PublicationCatalog.table(sql, s.schema, s.name)
    if (table === undefined || !["r", "p"].includes(table.kind)) {
      return yield* invalid("TableMissing", table === undefined
        ? "no such table (names are exact: check the schema, the table name and its case)"
        : "not a table (only tables and partitioned tables can be published)")
    }
    if (!table.mayPublish) {
      return yield* invalid("Privilege", `the table is owned by ${table.owner}; adding a table to a publication requires owning it. ` +
        `Run slotkeeper as that role, or have an administrator GRANT ${table.owner} TO the role slotkeeper uses`)
    }
    const missing = (s.columns ?? []).filter((c) => !table.columns.includes(c))
    if (missing.length > 0) return yield* invalid("ColumnMissing", `no column ${missing.map((c) => JSON.stringify(c)).join(", ")} (it has ${table.columns.join(", ")})`)

    const publish = (["insert", "update", "delete", "truncate"] as const).filter((k) => options.publishes[k] ?? true).join(", ")
    const checked = yield* tryClause(sql, { schema: s.schema, name: s.name, columns: s.columns, where: s.where, oid: table.oid }, {
      lockTimeoutMs: options.lockTimeoutMs,
      publish,
      viaRoot: options.viaRoot,
      generatedColumns: options.generatedColumns,
      replicaIdentityFull: s.replicaIdentityFull && table.replicaIdentity !== "f",
      serverVersion: version
    }).pipe(
      Effect.catchTag("SqlError", (e): Effect.Effect<never, SubscriptionInvalid | PublicationCatalog.PublicationError> =>
        SqlErrors.sqlState(e) === "55P03"
          ? Effect.fail(new PublicationCatalog.PublicationError({ reason: "LockTimeout", message: `checking subscription ${s.id}: table ${s.schema}.${s.name} is locked by another transaction; try again` }))
          : SqlErrors.isRetryable(e)
          ? Effect.fail(PublicationCatalog.queryError(`checking subscription ${s.id}`)(e))
          : Effect.fail(invalid(s.where === undefined ? "ColumnMissing" : "Filter", `PostgreSQL refuses it: ${SqlErrors.describe(e)}` +
            // a partitioned table's row filter or column list is the partitions' unless its changes are published as its own
            (table.kind === "p" && options.viaRoot !== true ? "; a partitioned table's row filter or column list needs its changes published under its own name (publish_via_partition_root)" : ""))))
    )

    if (checked.refused.length > 0) {
      // PostgreSQL would refuse the application's writes: say where, why, and what to change
      const identity = s.replicaIdentityFull ? table.columns : table.identityColumns
      const own = checked.refused.filter((r) => r.oid === table.oid)
      const reason = (own[0] ?? checked.refused[0]!).reason
      let why: string
      if (own.length === 0) {
        why = `publishing it publishes its inheritance children and partitions too, and PostgreSQL would refuse ${WriteSafety.describe(checked.refused)}`
      } else if (/does not have a replica identity/.test(reason)) {
        why = `the table has no replica identity (${table.replicaIdentity === "n" ? "REPLICA IDENTITY NOTHING" : "no primary key"}): once it is ` +
          `published, PostgreSQL refuses UPDATE and DELETE on it. Add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX ` +
          `<a unique index>, or opt in to REPLICA IDENTITY FULL for this subscription, or publish neither updates nor deletes ` +
          `(publish = 'insert, truncate')`
      } else if (/WHERE expression/.test(reason) && s.where !== undefined) {
        const named = namedColumns(s.where, table.columns).filter((c) => !identity.includes(c))
        const outside = named.length > 0 ? named : checked.filterColumns.filter((c) => !identity.includes(c))
        why = `the row filter uses ${outside.length > 0 ? outside.join(", ") : "columns"}, which the replica identity ` +
          `(${identity.join(", ") || "none"}) does not cover: PostgreSQL would refuse UPDATE and DELETE on the table. Filter on identity ` +
          `columns only, or make the identity cover them (REPLICA IDENTITY USING INDEX on a unique index with them), or opt in to REPLICA IDENTITY FULL`
      } else if (/Column list/.test(reason) && s.columns !== undefined) {
        const uncovered = identity.filter((c) => !s.columns!.includes(c))
        why = `the column list leaves out the replica identity column(s) ${uncovered.join(", ") || "(generated)"}${s.replicaIdentityFull || table.replicaIdentity === "f" ? " (with REPLICA IDENTITY FULL the identity is every column)" : ""}: ` +
          `PostgreSQL would refuse UPDATE and DELETE on the table. Add them to the column list${s.replicaIdentityFull ? ", or do not opt in to REPLICA IDENTITY FULL" : ", or subscribe without a column list"}`
      } else {
        why = `PostgreSQL would refuse ${WriteSafety.describe(checked.refused)}`
      }
      return yield* invalid("ReplicaIdentity", why)
    }
    const validated: Validated = { ...s, printedWhere: checked.printedWhere, oid: table.oid }
    return validated
  })
