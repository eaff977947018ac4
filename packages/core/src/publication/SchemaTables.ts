/**
 * SchemaTables: a whole schema as subscriptions (`sales.*`) — every table in it, including tables created later, except
 * those PostgreSQL could not publish without refusing the application's writes.
 *
 * **Why not `FOR TABLES IN SCHEMA`**: PostgreSQL 15's schema publication publishes every table of the schema, present
 * and future, whatever its replica identity — and a published table without one has its UPDATE and DELETE refused
 * (while updates or deletes are published). slotkeeper never makes the application's writes fail, so a schema is
 * expanded here into one subscription per table it may publish, and watched: a table created later is added at the next
 * look (`watchInterval`, 10 s by default), from the commit of that change on (rows written to it before are not
 * changes of the stream; an initial snapshot reads them).
 *
 * **Details**
 * - The tables: ordinary and partitioned tables of the schema, not partitions (a partitioned table publishes its
 *   partitions, or itself with `publish_via_partition_root`), not temporary ones.
 * - Left out, and said (`skipped`): a table without a replica identity (no primary key, `REPLICA IDENTITY NOTHING`, or
 *   an index identity that is gone) while updates or deletes are published; a table the role may not publish (owned by
 *   another role); an `UNLOGGED` table (PostgreSQL cannot publish it: its changes are not in the WAL). A table left out is looked at again at every round: given a primary key, it is added.
 * - A partitioned table counts as having an identity only through its own key (which its partitions then have too).
 *   One without a key whose partitions have keys is left out, although PostgreSQL accepts it named on its own: a
 *   partition attached later without a key would have its UPDATE refused until the next look removed the table.
 * - A table named on its own as well keeps its own subscription (its columns and filter); the schema's is not added.
 * - `expand` is pure; `list` reads the catalog.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import type { Subscription } from "./Subscription.ts"

/** A table of a watched schema, as the catalog says. */
export interface CatalogTable {
  readonly schema: string
  readonly name: string
  /** It has a replica identity PostgreSQL can use: a primary key, a valid identity index, or FULL. */
  readonly hasIdentity: boolean
  /** The role may add it to a publication (owns it, by membership, or is a superuser). */
  readonly mayPublish: boolean
  /** `UNLOGGED`: PostgreSQL cannot publish it (its changes are not in the WAL). */
  readonly unlogged?: boolean | undefined
  readonly owner: string
}

export interface Skipped {
  readonly schema: string
  readonly name: string
  readonly reason: "NoReplicaIdentity" | "Privilege" | "Unlogged"
  readonly message: string
}

export interface Expansion {
  readonly subscriptions: ReadonlyArray<Subscription>
  readonly skipped: ReadonlyArray<Skipped>
}

/** The subscription id of a table a schema brings in (`sales.*` → `sales.orders`), as `run` names a table's. */
export const idOf = (schema: string, name: string): string => `${schema}.${name}`

/**
 * The subscriptions for `schemas`, given their tables and what is published; `explicit` are the ids of subscriptions
 * given on their own (never replaced by a schema's). Sorted, so that equal inputs give equal outputs.
 */
export const expand = (
  tables: ReadonlyArray<CatalogTable>,
  options: { readonly publishes: { readonly update: boolean; readonly delete: boolean }; readonly explicit: ReadonlySet<string> }
): Expansion => {
  const subscriptions: Array<Subscription> = []
  const skipped: Array<Skipped> = []
  const needsIdentity = options.publishes.update || options.publishes.delete
  for (const t of [...tables].sort((a, b) => (idOf(a.schema, a.name) < idOf(b.schema, b.name) ? -1 : 1))) {
    const id = idOf(t.schema, t.name)
    if (options.explicit.has(id)) continue
    if (t.unlogged === true) {
      skipped.push({ schema: t.schema, name: t.name, reason: "Unlogged", message: `${id} is UNLOGGED: its changes are not written to the WAL, so PostgreSQL cannot publish it (ALTER TABLE ${id} SET LOGGED to stream it)` })
    } else if (!t.mayPublish) {
      skipped.push({ schema: t.schema, name: t.name, reason: "Privilege", message: `${id} is owned by ${t.owner}: only its owner may add it to a publication (GRANT ${t.owner} TO the role slotkeeper uses)` })
    } else if (needsIdentity && !t.hasIdentity) {
      skipped.push({
        schema: t.schema,
        name: t.name,
        reason: "NoReplicaIdentity",
        message: `${id} has no replica identity: published, PostgreSQL would refuse its UPDATE and DELETE. Add a primary key (or REPLICA IDENTITY USING INDEX / FULL) and it is added; or publish neither update nor delete`
      })
    } else subscriptions.push({ id, table: { schema: t.schema, name: t.name } })
  }
  return { subscriptions, skipped }
}

/** The tables of `schemas` (see the module comment), and which of the schemas exist. */
export const list = (sql: SqlClient, schemas: ReadonlyArray<string>): Effect.Effect<{ readonly tables: ReadonlyArray<CatalogTable>; readonly existing: ReadonlyArray<string> }, SqlError> =>
  Effect.gen(function*() {
    const existing = yield* sql.unsafe<{ name: string }>("SELECT nspname::text AS name FROM pg_namespace WHERE nspname = ANY($1::text[])", [[...schemas]])
    const rows = yield* sql.unsafe<{ schema: string; name: string; identity: boolean; may: boolean; owner: string; unlogged: boolean }>(
      `SELECT n.nspname::text AS schema, c.relname::text AS name, pg_get_userbyid(c.relowner)::text AS owner, c.relpersistence = 'u' AS unlogged,
              (pg_has_role(c.relowner, 'USAGE') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)) AS may,
              (c.relreplident = 'f'
                OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid))) AS identity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence <> 't'
        ORDER BY 1, 2`,
      [[...schemas]]
    )
    return {
      tables: rows.map((r) => ({ schema: r.schema, name: r.name, hasIdentity: r.identity, mayPublish: r.may, owner: r.owner, unlogged: r.unlogged })),
      existing: existing.map((r) => r.name)
    }
  })
