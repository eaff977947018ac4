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
 * - when updates or deletes are published: the table has a replica identity (else PostgreSQL refuses the
 *   *application's* UPDATE and DELETE on it once it is published), the filter uses only replica-identity columns, and
 *   a column list covers the replica identity — unless the subscription opts in to `REPLICA IDENTITY FULL`.
 */
import { randomBytes } from "node:crypto"
import { Data, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import * as Desired from "./Desired.ts"
import * as PublicationCatalog from "./PublicationCatalog.ts"
import { type Checked, SubscriptionInvalid } from "./Subscription.ts"

export interface Validated extends Checked {
  /** The filter as PostgreSQL prints it. */
  readonly printedWhere: string | undefined
}

class Rollback extends Data.TaggedError("Rollback")<{ readonly value: unknown }> {}

/** Runs `effect` in a transaction that is always rolled back, and returns its result. */
export const inRolledBackTransaction = <A, E>(sql: SqlClient, effect: Effect.Effect<A, E>): Effect.Effect<A, E | SqlError> =>
  SqlErrors.transaction(sql, Effect.flatMap(effect, (value) => Effect.fail(new Rollback({ value })))).pipe(
    Effect.catch((e) => (e instanceof Rollback ? Effect.succeed(e.value as A) : Effect.fail(e as E | SqlError)))
  )

/** PostgreSQL's own check of a table clause: a scratch publication, rolled back; the printed filter and its columns. */
export const tryClause = (sql: SqlClient, spec: Desired.TableSpec, lockTimeoutMs: number) =>
  inRolledBackTransaction(sql, Effect.gen(function*() {
    yield* sql.unsafe(`SET LOCAL lock_timeout = ${Math.trunc(lockTimeoutMs)}`)
    yield* sql.unsafe("SET LOCAL standard_conforming_strings = on") // the lexical check assumes it
    const scratch = `slotkeeper_check_${randomBytes(6).toString("hex")}`
    yield* sql.unsafe(`CREATE PUBLICATION "${scratch}" FOR TABLE ${Desired.clause(spec)}`)
    const [row] = yield* sql.unsafe<{ filter: string | null; used: string | null }>(
      `SELECT pg_get_expr(pr.prqual, pr.prrelid) AS filter,
              (SELECT array_to_json(array_agg(DISTINCT a.attname::text))::text FROM pg_attribute a
                WHERE a.attrelid = pr.prrelid
                  AND a.attnum IN (SELECT m[1]::int FROM regexp_matches(coalesce(pr.prqual::text, ''), ':varattno (\\d+)', 'g') AS m)) AS used
         FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1`,
      [scratch]
    )
    return { printedWhere: row?.filter ?? undefined, filterColumns: JSON.parse(row?.used ?? "[]") as Array<string> }
  }))

export interface ValidationOptions {
  /** What the publication publishes; update/delete bring the replica-identity checks. */
  readonly publishes: { readonly update: boolean; readonly delete: boolean }
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

    // a plain table needs no clause check (and before 15 there is nothing else to check)
    const checked = s.where === undefined && s.columns === undefined ? { printedWhere: undefined, filterColumns: [] as Array<string> } : yield* tryClause(sql, { schema: s.schema, name: s.name, columns: s.columns, where: s.where }, options.lockTimeoutMs).pipe(
      Effect.catchTag("SqlError", (e): Effect.Effect<never, SubscriptionInvalid | PublicationCatalog.PublicationError> =>
        SqlErrors.sqlState(e) === "55P03"
          ? Effect.fail(new PublicationCatalog.PublicationError({ reason: "LockTimeout", message: `checking subscription ${s.id}: table ${s.schema}.${s.name} is locked by another transaction; try again` }))
          : Effect.fail(invalid(s.where === undefined ? "ColumnMissing" : "Filter", `PostgreSQL refuses it: ${SqlErrors.describe(e)}`)))
    )

    if (options.publishes.update || options.publishes.delete) {
      const identity = table.replicaIdentity
      const covered = s.replicaIdentityFull || identity === "f"
      const noIdentity = identity === "n" || table.identityColumns.length === 0
      if (!covered && noIdentity) {
        return yield* invalid("ReplicaIdentity", `the table has no replica identity (${identity === "n" ? "REPLICA IDENTITY NOTHING" : "no primary key"}): once it is ` +
          `published, PostgreSQL refuses UPDATE and DELETE on it. Add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX ` +
          `<a unique index>, or opt in to REPLICA IDENTITY FULL for this subscription`)
      }
      if (!covered) {
        const outside = checked.filterColumns.filter((c) => !table.identityColumns.includes(c))
        if (outside.length > 0) {
          return yield* invalid("ReplicaIdentity", `the row filter uses ${outside.join(", ")}, which the replica identity ` +
            `(${table.identityColumns.join(", ")}) does not cover: PostgreSQL would refuse UPDATE and DELETE on the table. Filter on identity ` +
            `columns only, or make the identity cover them (REPLICA IDENTITY USING INDEX on a unique index with them), or opt in to REPLICA IDENTITY FULL`)
        }
        const uncovered = s.columns === undefined ? [] : table.identityColumns.filter((c) => !s.columns!.includes(c))
        if (uncovered.length > 0) {
          return yield* invalid("ReplicaIdentity", `the column list leaves out the replica identity column(s) ${uncovered.join(", ")}: PostgreSQL ` +
            `would refuse UPDATE and DELETE on the table. Add them to the column list, or opt in to REPLICA IDENTITY FULL`)
        }
      }
    }
    const validated: Validated = { ...s, printedWhere: checked.printedWhere }
    return validated
  })
