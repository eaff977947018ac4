/**
 * WriteSafety: the proof, made by PostgreSQL itself, that the application's UPDATE and DELETE still work on every
 * table a publication or replica-identity change touches — because PostgreSQL refuses UPDATE and DELETE on a
 * published table whose replica identity does not cover what the publication needs (no identity at all, a column list
 * or a row filter beyond it, on PostgreSQL 18 unpublished generated columns in it), and slotkeeper must never be the
 * reason an application's write fails.
 *
 * **How**
 * - `probe` asks PostgreSQL to plan `UPDATE ONLY t SET c = c WHERE false` and `DELETE FROM ONLY t WHERE false` for
 *   each table, with `EXPLAIN`: the executor's start-up runs the very check that would refuse the application's
 *   statement (`CheckCmdReplicaIdentity`), and nothing is executed — no row is touched, no trigger fires. Each probe
 *   runs under a savepoint, so a refusal is recorded and the transaction goes on.
 * - `prove` probes the tables before a change and after it, inside the change's own transaction (so it sees the
 *   publication and identities as they would be committed): a probe that passed before and fails after is a
 *   `WritesWouldBreak`, and the caller's transaction is rolled back — nothing changes. A table that was refused
 *   before is the application's own state, not slotkeeper's doing, and is reported, not blamed.
 * - The tables are the ones named and all their inheritance children and partitions (`pg_inherits`, recursively):
 *   publishing a parent publishes its children, whose writes PostgreSQL checks on their own.
 *
 * **Assumes** the session may plan an UPDATE and a DELETE on the tables: adding a table to a publication or changing
 * its replica identity requires owning it, and an owner has those privileges.
 */
import { Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as SqlErrors from "../internal/sqlError.ts"
import { qualifiedName, quoteIdent } from "./Subscription.ts"

export interface Refused {
  readonly oid: number
  readonly schema: string
  readonly table: string
  readonly operation: "UPDATE" | "DELETE"
  /** PostgreSQL's message and detail. */
  readonly reason: string
}

/** A change would make PostgreSQL refuse the application's UPDATE or DELETE: it was not made. */
export class WritesWouldBreak extends Schema.TaggedError<WritesWouldBreak>()("WritesWouldBreak", {
  message: Schema.String
}) {}

/** What to do about a refusal, by PostgreSQL's detail. */
export const fix = (reason: string): string =>
  /does not have a replica identity/.test(reason)
    ? "give the table a primary key or REPLICA IDENTITY USING INDEX <a unique index>, or leave it out of the stream"
    : /Column list .* does not cover the replica identity/.test(reason)
    ? "add the replica identity's columns to the column list (all columns, with REPLICA IDENTITY FULL), or subscribe without a column list"
    : /WHERE expression is not part of the replica identity/.test(reason)
    ? "filter only on replica-identity columns, or make the replica identity cover the filter's columns (REPLICA IDENTITY USING INDEX on a unique index with them)"
    : /generated columns/.test(reason)
    ? "use a replica identity without generated columns, or publish the generated columns"
    : "change the subscription so that PostgreSQL accepts UPDATE and DELETE on the table"

export const describe = (refused: ReadonlyArray<Refused>): string =>
  refused.map((r) => `${r.operation} on ${r.schema}.${r.table} (${r.reason}): ${fix(r.reason)}`).join("; ")

/** The tables `oids` name, with all their inheritance children and partitions: oid, schema, name, first column, kind. */
export const withDescendants = (sql: SqlClient, oids: ReadonlyArray<number>) =>
  oids.length === 0 ? Effect.succeed([]) : sql.unsafe<{ oid: string; schema: string; name: string; first: string | null; kind: string }>(
    `WITH RECURSIVE tree(oid) AS (
       SELECT unnest($1::oid[])
       UNION SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid)
     SELECT c.oid::int8::text AS oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
            (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attgenerated = '' ORDER BY a.attnum LIMIT 1) AS first
       FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p')
      ORDER BY c.oid`,
    [oids.map(String)]
  )

/** Probes UPDATE and DELETE on each table (and its descendants); the refusals. Inside a transaction only. */
export const probe = (sql: SqlClient, oids: ReadonlyArray<number>): Effect.Effect<ReadonlyArray<Refused>, SqlError> =>
  Effect.gen(function*() {
    const tables = yield* withDescendants(sql, oids)
    const refused: Array<Refused> = []
    for (const t of tables) {
      const name = qualifiedName(t.schema, t.name)
      const only = t.kind === "p" ? "" : "ONLY " // leaves are probed on their own
      const statements: Array<["UPDATE" | "DELETE", string]> = [["DELETE", `EXPLAIN DELETE FROM ${only}${name} WHERE false`]]
      if (t.first !== null) statements.unshift(["UPDATE", `EXPLAIN UPDATE ${only}${name} SET ${quoteIdent(t.first)} = ${quoteIdent(t.first)} WHERE false`])
      for (const [operation, statement] of statements) {
        yield* sql.unsafe("SAVEPOINT slotkeeper_probe")
        const result = yield* Effect.result(sql.unsafe(statement))
        if (result._tag === "Failure") {
          const e = result.failure
          // only PostgreSQL's refusal of the write is an answer; anything else (a lost connection) fails the proof
          if (SqlErrors.sqlState(e) !== "42P10" && SqlErrors.sqlState(e) !== "55000") return yield* Effect.fail(e)
          yield* sql.unsafe("ROLLBACK TO SAVEPOINT slotkeeper_probe")
          refused.push({ oid: Number(t.oid), schema: t.schema, table: t.name, operation, reason: SqlErrors.serverText(e) })
        }
        yield* sql.unsafe("RELEASE SAVEPOINT slotkeeper_probe")
      }
    }
    return refused
  })

const key = (r: Refused) => `${r.oid}:${r.operation}`

/** The refusals of `after` that `before` did not have: what a change would break. */
export const newlyRefused = (before: ReadonlyArray<Refused>, after: ReadonlyArray<Refused>): ReadonlyArray<Refused> => {
  const was = new Set(before.map(key))
  return after.filter((r) => !was.has(key(r)))
}
