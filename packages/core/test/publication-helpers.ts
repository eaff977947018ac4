/**
 * Helpers for the real-PostgreSQL publication tests: an instance that owns stream "orders" and runs the publication
 * manager (and, optionally, the delivery of its changes) inside the owned scope.
 */
import { Deferred, Effect, Redacted } from "effect"
import { Ownership } from "../src/ownership/Ownership.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as PgPublication from "../src/publication/PgPublication.ts"
import * as PublicationManager from "../src/publication/PublicationManager.ts"
import { fastTiming } from "./ownership-helpers.ts"

export const publicationOptions = { publication: "slotkeeper_orders", schema: "slotkeeper" } as const

export const startManager = (
  name: string,
  url: string,
  options: {
    readonly manager?: PublicationManager.PublicationManagerOptions
    readonly publication?: Partial<PgPublication.PgPublicationOptions>
    /** More owned work, started once the manager is ready (e.g. the delivery of the stream's changes). */
    readonly alongside?: (ownership: StreamOwnership.StreamOwnership["Service"]) => Effect.Effect<unknown, unknown, Ownership>
  } = {}
) =>
  Effect.gen(function*() {
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: name, url: Redacted.make(url), ...fastTiming.advisory })
    const ready = yield* Deferred.make<{ readonly manager: PublicationManager.PublicationManager; readonly own: Ownership["Service"] }, unknown>()
    const owned = Effect.gen(function*() {
      const own = yield* Ownership
      const backend = yield* PgPublication.make(own, ownership.sql, { ...publicationOptions, ...options.publication })
      const manager = yield* PublicationManager.make(backend, { debounce: "20 millis", ...options.manager })
      yield* Deferred.succeed(ready, { manager, own })
      return yield* (options.alongside?.(ownership) ?? Effect.never)
    }).pipe(Effect.tapCause((cause) => Deferred.failCause(ready, cause)))
    const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
    const { manager, own } = yield* Deferred.await(ready)
    return { ownership, manager, own, fiber }
  })

/** The publication's tables as `schema.table [columns] where` lines, sorted. */
export const publicationTables = (pg: { query: <A>(sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, unknown> }, publication = "slotkeeper_orders") =>
  Effect.map(
    pg.query<{ line: string }>(
      `SELECT n.nspname || '.' || c.relname ||
              coalesce(' [' || (SELECT string_agg(a.attname, ',' ORDER BY a.attname) FROM pg_attribute a WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs)) || ']', '') ||
              coalesce(' WHERE ' || pg_get_expr(pr.prqual, pr.prrelid), '') AS line
         FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE p.pubname = $1 ORDER BY 1`,
      [publication]
    ),
    (rows) => rows.map((r) => r.line)
  )
