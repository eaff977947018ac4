/**
 * PublicationCatalog: reading a publication and the tables it may contain from PostgreSQL's catalogs — what the
 * publication manager plans against and checks for drift. Reads only; every name is a bound parameter.
 *
 * Columns by version: column lists (`prattrs`) and row filters (`prqual`) exist from PostgreSQL 15. A filter is read
 * as PostgreSQL prints it (`pg_get_expr`), which is not the text it was given: compare through `normalize`.
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import type { TableSpec } from "./Desired.ts"

export class PublicationError extends Schema.TaggedError<PublicationError>()("PublicationError", {
  reason: Schema.Literals(["Query", "LockTimeout", "OwnedByOther", "Privilege", "Dropped"]),
  message: Schema.String,
  /** A connection fault that may pass (the owner then competes again instead of failing). */
  retryable: Schema.optional(Schema.Boolean),
  /** The error it comes from (a `SqlError`), kept; `message` already says what it means. */
  cause: Schema.optional(Schema.Defect())
}) {}

export const queryError = (what: string) => (e: SqlError) =>
  new PublicationError({ reason: "Query", message: `${what}: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e), cause: e })

export interface PublicationRow {
  readonly owner: string
  readonly insert: boolean
  readonly update: boolean
  readonly delete: boolean
  readonly truncate: boolean
  /** `publish_via_partition_root` (PostgreSQL 13+; `false` before). */
  readonly viaRoot: boolean
  /** `publish_generated_columns` (PostgreSQL 18+; `none` before). */
  readonly generatedColumns: "none" | "stored"
  readonly allTables: boolean
  readonly tables: ReadonlyArray<PublishedTable>
}

export interface PublishedTable extends TableSpec {
  readonly oid: number
  /**
   * An inheritance child (not a partition) of another table of the publication: PostgreSQL added it when its parent
   * was added (`FOR TABLE parent` publishes the children too), so it is part of the parent's entry, not drift.
   */
  readonly inherited: boolean
}

export const serverVersion = (sql: SqlClient): Effect.Effect<number, PublicationError> =>
  Effect.map(sql.unsafe<{ v: number }>("SELECT current_setting('server_version_num')::int AS v"), (r) => r[0]?.v ?? 0).pipe(
    Effect.mapError(queryError("reading the server version"))
  )

/** The publication as it is, or `undefined` when it does not exist. */
export const read = (sql: SqlClient, publication: string): Effect.Effect<PublicationRow | undefined, PublicationError> =>
  Effect.gen(function*() {
    const version = yield* serverVersion(sql)
    const [pub] = yield* sql.unsafe<{ oid: string; owner: string; pubinsert: boolean; pubupdate: boolean; pubdelete: boolean; pubtruncate: boolean; pubviaroot: boolean; pubgencols: string; puballtables: boolean }>(
      `SELECT oid::text AS oid, pg_get_userbyid(pubowner)::text AS owner, pubinsert, pubupdate, pubdelete, pubtruncate,
              ${version >= 130000 ? "pubviaroot" : "false AS pubviaroot"}, ${version >= 180000 ? "pubgencols::text" : "'n'"} AS pubgencols, puballtables
         FROM pg_publication WHERE pubname = $1`,
      [publication]
    )
    if (pub === undefined) return undefined
    const inherited = `EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_publication_rel pp ON pp.prrelid = i.inhparent AND pp.prpubid = pr.prpubid
                                 WHERE i.inhrelid = pr.prrelid AND NOT c.relispartition) AS inherited`
    const rows = yield* sql.unsafe<{ oid: string; schema: string; name: string; columns: string | null; filter: string | null; inherited: boolean }>(
      version >= 150000
        ? `SELECT c.oid::int8::text AS oid, n.nspname::text AS schema, c.relname::text AS name, ${inherited},
                  CASE WHEN pr.prattrs IS NULL THEN NULL ELSE
                    (SELECT array_to_json(array_agg(a.attname::text))::text FROM pg_attribute a WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs)) END AS columns,
                  pg_get_expr(pr.prqual, pr.prrelid) AS filter
             FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE pr.prpubid = $1::oid`
        : `SELECT c.oid::int8::text AS oid, n.nspname::text AS schema, c.relname::text AS name, ${inherited}, NULL::text AS columns, NULL::text AS filter
             FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE pr.prpubid = $1::oid`,
      [pub.oid]
    )
    const tables = rows.map((r): PublishedTable => ({
      oid: Number(r.oid),
      inherited: r.inherited,
      schema: r.schema,
      name: r.name,
      columns: r.columns === null ? undefined : (JSON.parse(r.columns) as Array<string>).sort(),
      where: r.filter ?? undefined
    }))
    return {
      owner: pub.owner,
      insert: pub.pubinsert,
      update: pub.pubupdate,
      delete: pub.pubdelete,
      truncate: pub.pubtruncate,
      viaRoot: pub.pubviaroot,
      generatedColumns: pub.pubgencols === "s" ? "stored" as const : "none" as const,
      allTables: pub.puballtables,
      tables
    }
  }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError(`reading publication ${publication}`)(e))))

export interface TableInfo {
  readonly oid: number
  readonly kind: string
  /** `d` default (primary key), `i` index, `f` full, `n` nothing. */
  readonly replicaIdentity: string
  /** The columns of the replica identity (default: the primary key; index: its columns; full: all). */
  readonly identityColumns: ReadonlyArray<string>
  readonly columns: ReadonlyArray<string>
  readonly owner: string
  /** The current role owns the table (directly or by membership) or is a superuser. */
  readonly mayPublish: boolean
}

/** A table by exact schema and name, or `undefined` when there is none. */
export const table = (sql: SqlClient, schema: string, name: string): Effect.Effect<TableInfo | undefined, PublicationError> =>
  Effect.gen(function*() {
    const [t] = yield* sql.unsafe<{ oid: string; kind: string; ident: string; owner: string; may: boolean; columns: string; identity: string | null }>(
      `SELECT c.oid::int8::text AS oid, c.relkind::text AS kind, c.relreplident::text AS ident, pg_get_userbyid(c.relowner)::text AS owner,
              (pg_has_role(c.relowner, 'USAGE') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS may,
              (SELECT array_to_json(array_agg(a.attname::text ORDER BY a.attnum))::text FROM pg_attribute a
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
              (SELECT array_to_json(array_agg(a.attname::text ORDER BY a.attnum))::text
                 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                WHERE i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) AS identity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = $2`,
      [schema, name]
    )
    if (t === undefined) return undefined
    const columns = JSON.parse(t.columns ?? "[]") as Array<string>
    return {
      oid: Number(t.oid),
      kind: t.kind,
      replicaIdentity: t.ident,
      identityColumns: t.ident === "f" ? columns : (JSON.parse(t.identity ?? "[]") as Array<string>),
      columns,
      owner: t.owner,
      mayPublish: t.may
    }
  }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(queryError(`reading table ${schema}.${name}`)(e))))
