/**
 * ChunkReader: a published table's existing rows, read in chunks by key — each chunk in a REPEATABLE READ, READ ONLY
 * transaction whose snapshot is returned with it (`ChunkWindow` places the chunk in the stream by that snapshot).
 *
 * **What it guarantees**
 * - A row comes out exactly as the stream would send it: the same columns (the publication's column list), the same
 *   rows (the publication's row filter, then the backfill's own `where`), and every value as PostgreSQL's own output
 *   function prints it, in a session with the same pinned settings as the replication connection (`SessionSettings`),
 *   mapped by the same `Rows` — so a `read` line and a change line of the same row are the same, byte for byte.
 * - Chunks follow the table's key (its primary key, or the replica identity index) in the key's own order, compared by
 *   PostgreSQL (`(k1, k2) > ($1, $2) ORDER BY k1, k2`): every row present for the whole backfill is read once,
 *   whatever the key's types and collations.
 * - Bad input is refused before anything is read, with what to change (`BackfillRefused`): a table that is missing,
 *   not in the stream's publication, or has no usable key (no primary key and no replica identity index over NOT NULL
 *   columns, or a key outside the published columns); a `where` that is not one boolean expression PostgreSQL accepts
 *   on the table (statements, comments, unbalanced parentheses and dollar quoting are refused before PostgreSQL parses
 *   it, so it cannot leave its parentheses).
 *
 * **Details**: the read runs with `statement_timeout` bounded; nothing it runs can write (READ ONLY). A chunk is at
 * most `limit` rows, so memory is bounded by the chunk size.
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type pg from "pg"
import * as SqlErrors from "../internal/sqlError.ts"
import { filterProblem, qualifiedName, quoteIdent } from "../publication/Subscription.ts"
import type { Relation } from "../replication/Pgoutput.ts"
import type { Snapshot } from "./ChunkWindow.ts"

/** The backfill cannot run as asked (see the module comment); the message says what to change. Nothing was read. */
export class BackfillRefused extends Schema.TaggedError<BackfillRefused>()("BackfillRefused", { message: Schema.String }) {}

/** Reading failed (a connection fault, a timeout): `retryable` when it may pass. */
export class BackfillReadError extends Schema.TaggedError<BackfillReadError>()("BackfillReadError", {
  message: Schema.String,
  retryable: Schema.optional(Schema.Boolean)
}) {}

/** What a backfill reads of a table, and how. */
export interface TableShape {
  readonly schema: string
  readonly table: string
  /** The columns the publication publishes, in the table's order, as a Relation message would list them. */
  readonly relation: Relation
  /** Positions in `relation.columns` of the key's columns, in the key's order. */
  readonly key: ReadonlyArray<number>
  /** The publication's row filter (PostgreSQL 15+), as PostgreSQL prints it. */
  readonly rowFilter: string | undefined
  /** The backfill's own predicate. */
  readonly where: string | undefined
  readonly serverVersion: number
}

export interface Chunk {
  readonly snapshot: Snapshot
  /** Each row's texts, in `relation.columns` order (`null` for NULL). */
  readonly rows: ReadonlyArray<ReadonlyArray<string | null>>
}

const refused = (message: string) => new BackfillRefused({ message })
const readFailed = (what: string) => (e: Parameters<typeof SqlErrors.describe>[0]) =>
  new BackfillReadError({ message: `${what}: ${SqlErrors.describe(e)}`, retryable: SqlErrors.isRetryable(e) })

/**
 * Describes `schema.table` as the publication streams it, and checks `where` on it (see the module comment).
 */
export const describe = (
  sql: SqlClient,
  options: { readonly publication: string; readonly schema: string; readonly table: string; readonly where?: string | undefined; readonly serverVersion: number }
): Effect.Effect<TableShape, BackfillRefused | BackfillReadError> =>
  Effect.gen(function*() {
    const name = qualifiedName(options.schema, options.table)
    const shown = `${options.schema}.${options.table}`
    const [found] = yield* sql.unsafe<{ oid: string | null }>("SELECT to_regclass($1)::oid::int8::text AS oid", [name]).pipe(
      Effect.mapError(readFailed(`looking up ${shown}`))
    )
    if (found?.oid === null || found === undefined) return yield* refused(`table ${shown} does not exist (names are case-sensitive: as PostgreSQL lists it in \\dt)`)
    const oid = found.oid
    const v15 = options.serverVersion >= 150000
    const [published] = yield* sql.unsafe<{ attnames: ReadonlyArray<string> | null; rowfilter: string | null }>(
      `SELECT ${v15 ? "attnames" : "NULL::name[]"} AS attnames, ${v15 ? "rowfilter" : "NULL::text"} AS rowfilter
         FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3`,
      [options.publication, options.schema, options.table]
    ).pipe(Effect.mapError(readFailed(`reading publication ${options.publication}`)))
    if (published === undefined) {
      return yield* refused(`table ${shown} is not in the stream's publication ${options.publication}: add it to the stream's tables first (a backfill reads only what the stream publishes)`)
    }
    const columns = yield* sql.unsafe<{ name: string; type_oid: string; type_mod: number; not_null: boolean }>(
      `SELECT attname::text AS name, atttypid::int8::text AS type_oid, atttypmod AS type_mod, attnotnull AS not_null
         FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped
          AND ($2::text[] IS NULL OR attname::text = ANY($2::text[]))
          ${options.serverVersion >= 120000 ? "AND (attgenerated = '' OR $2::text[] IS NOT NULL)" : ""}
         ORDER BY attnum`,
      [oid, published.attnames === null ? null : [...published.attnames]]
    ).pipe(Effect.mapError(readFailed(`reading the columns of ${shown}`)))
    // the key: the primary key, else the replica identity index (unique, its columns NOT NULL)
    const keys = yield* sql.unsafe<{ names: ReadonlyArray<string>; primary: boolean }>(
      `SELECT array_agg(a.attname::text ORDER BY k.ord) AS names, i.indisprimary AS primary
         FROM pg_index i
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = $1::oid AND (i.indisprimary OR i.indisreplident) AND i.indisvalid AND i.indexprs IS NULL AND i.indpred IS NULL
        GROUP BY i.indexrelid, i.indisprimary
        ORDER BY i.indisprimary DESC`,
      [oid]
    ).pipe(Effect.mapError(readFailed(`reading the keys of ${shown}`)))
    const key = keys[0]
    if (key === undefined) {
      return yield* refused(`table ${shown} has no primary key and no replica identity index: a backfill reads by key. ` +
        `Add a primary key, or ALTER TABLE ${name} REPLICA IDENTITY USING INDEX <a unique index on NOT NULL columns>`)
    }
    const positions = key.names.map((k) => columns.findIndex((c) => c.name === k))
    const missing = key.names.filter((_, i) => positions[i]! < 0)
    if (missing.length > 0) {
      return yield* refused(`the key of ${shown} (${key.names.join(", ")}) is not all published: the publication's column list leaves out ${missing.join(", ")}; publish the key's columns`)
    }
    if (!key.primary && positions.some((p) => !columns[p]!.not_null)) {
      return yield* refused(`the replica identity index of ${shown} has nullable columns: a backfill needs a key whose columns are NOT NULL`)
    }
    const relation: Relation = {
      oid: Number(oid),
      schema: options.schema,
      name: options.table,
      replicaIdentity: "default",
      columns: columns.map((c, i) => ({ name: c.name, typeOid: Number(c.type_oid), typeMod: c.type_mod, key: positions.includes(i) }))
    }
    const where = options.where?.trim()
    if (where !== undefined) {
      const problem = filterProblem(where, "the backfill's where")
      if (problem !== undefined) return yield* refused(`${problem} (where: ${JSON.stringify(where)})`)
      // PostgreSQL parses and types it on the table (one statement, planned, not run)
      yield* sql.unsafe(`EXPLAIN SELECT 1 FROM ONLY ${name} WHERE (${where})`).pipe(
        Effect.catchTag("SqlError", (e): Effect.Effect<never, BackfillRefused | BackfillReadError> =>
          SqlErrors.isRetryable(e)
            ? Effect.fail(readFailed(`checking the backfill's where on ${shown}`)(e))
            : Effect.fail(refused(`PostgreSQL refuses the backfill's where on ${shown}: ${SqlErrors.describe(e)} (where: ${JSON.stringify(where)})`)))
      )
    }
    return { schema: options.schema, table: options.table, relation, key: positions, rowFilter: published.rowfilter ?? undefined, where, serverVersion: options.serverVersion }
  })

/** The SELECT of a chunk after `after` (the key's texts of the last row read; `undefined`: from the start). */
export const chunkQuery = (shape: TableShape, after: ReadonlyArray<string> | undefined, limit: number): { readonly text: string; readonly values: ReadonlyArray<string> } => {
  const keyNames = shape.key.map((p) => quoteIdent(shape.relation.columns[p]!.name))
  const conditions = [
    ...(after === undefined ? [] : [`(${keyNames.join(", ")}) > (${after.map((_, i) => `$${i + 1}`).join(", ")})`]),
    ...(shape.rowFilter === undefined ? [] : [`(${shape.rowFilter})`]),
    ...(shape.where === undefined ? [] : [`(${shape.where})`])
  ]
  return {
    text: `SELECT ${shape.relation.columns.map((c) => quoteIdent(c.name)).join(", ")} FROM ONLY ${qualifiedName(shape.schema, shape.table)}` +
      `${conditions.length === 0 ? "" : ` WHERE ${conditions.join(" AND ")}`} ORDER BY ${keyNames.join(", ")} LIMIT ${Math.max(1, Math.trunc(limit))}`,
    values: after ?? []
  }
}

/** `pg_current_snapshot()`'s (or, before 13, `txid_current_snapshot()`'s) text (`xmin:xmax:xip,…`, 64-bit ids) as the stream's 32-bit ids. */
export const parseSnapshot = (text: string): Snapshot => {
  const [xmin, xmax, xip] = text.split(":")
  const low = (s: string) => Number(BigInt(s) & 0xffffffffn)
  return { xmin: low(xmin!), xmax: low(xmax!), xip: xip === undefined || xip === "" ? [] : xip.split(",").map(low) }
}

// every value as the server's output function printed it: no parsing
const rawTypes = { getTypeParser: () => (value: string) => value }

/**
 * Reads the chunk after `after`, on `client` (a session of its own with slotkeeper's pinned settings: see
 * `Connector.nodePg`), in one REPEATABLE READ, READ ONLY transaction whose snapshot comes back with the rows.
 */
export const read = (
  client: pg.Client,
  shape: TableShape,
  after: ReadonlyArray<string> | undefined,
  limit: number,
  timeoutMs: number
): Effect.Effect<Chunk, BackfillReadError> =>
  Effect.tryPromise({
    try: async () => {
      await client.query(`BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`)
      try {
        await client.query(`SET LOCAL statement_timeout = ${Math.max(1, Math.trunc(timeoutMs))}`)
        // the transaction's snapshot is taken by its first query: this one, and the chunk's read sees the same
        const snap = await client.query<{ s: string }>(`SELECT ${shape.serverVersion >= 130000 ? "pg_current_snapshot" : "txid_current_snapshot"}()::text AS s`)
        const q = chunkQuery(shape, after, limit)
        const result = await client.query<Array<string | null>>({ text: q.text, values: [...q.values], rowMode: "array", types: rawTypes })
        await client.query("COMMIT")
        return { snapshot: parseSnapshot(snap.rows[0]!.s), rows: result.rows }
      } catch (e) {
        await client.query("ROLLBACK").catch(() => undefined)
        throw e
      }
    },
    catch: (e) =>
      new BackfillReadError({
        message: `reading a chunk of ${shape.schema}.${shape.table}: ${e instanceof Error ? e.message : String(e)}`,
        retryable: !(e instanceof Error && "code" in e && typeof e.code === "string" && /^(42|22|0A)/.test(e.code))
      })
  })

/** The key's texts of a chunk's row (to resume after it). */
export const keyOf = (shape: TableShape, row: ReadonlyArray<string | null>): ReadonlyArray<string> => shape.key.map((p) => row[p] ?? "")
