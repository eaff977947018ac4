/**
 * SlotCleanup: a stream's own leftover slots — earlier incarnations that still exist — listed, and dropped by the
 * stream's owner. A slot left behind pins WAL forever.
 *
 * A slot is a candidate only if it is named `<prefix>_<incarnation>` of this stream, is not the stream's current
 * slot (the catalog's `active` row), is neither active nor temporary, and — where the server can tell (17+:
 * `inactive_since`) — has been inactive for longer than `olderThanMs`. Before 17 the age is unknown, so only
 * incarnations the catalog has retired or abandoned qualify. Slots of other programs, other streams, and the
 * per-connection temporary copies (which vanish with their session) are never touched.
 *
 * Dropping runs under `guarded` (a drop is not transactional, so it is the only statement), and marks the catalog
 * row `retired`.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import * as SqlErrors from "../internal/sqlError.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import type { Ownership, OwnershipLost } from "../ownership/Ownership.ts"
import { catalogTable, retire, SlotError } from "./PersistentSlot.ts"

export interface Candidate {
  readonly slotName: string
  readonly incarnation: number
  /** Milliseconds since the slot became inactive, where the server reports it (17+). */
  readonly inactiveMs: number | undefined
  readonly catalogState: string | undefined
}

export interface SlotListing {
  readonly slotName: string
  readonly active: boolean
  readonly temporary: boolean
  readonly current: boolean
  readonly candidate: boolean
}

const escapeLike = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`)

export const list = (
  sql: SqlClient,
  options: { readonly streamId: string; readonly slotPrefix: string; readonly schema: string; readonly olderThanMs: number }
): Effect.Effect<{ readonly slots: ReadonlyArray<SlotListing>; readonly candidates: ReadonlyArray<Candidate> }, SlotError> =>
  Effect.gen(function*() {
    const [server] = yield* sql.unsafe<{ v: number }>("SELECT current_setting('server_version_num')::int AS v")
    const v17 = (server?.v ?? 0) >= 170000
    const rows = yield* sql.unsafe<{ slot_name: string; active: boolean; temporary: boolean; inactive_ms: number | null; state: string | null; incarnation: number | null }>(
      `SELECT s.slot_name, s.active, s.temporary,
              ${v17 ? "(extract(epoch FROM (now() - s.inactive_since)) * 1000)::float8" : "NULL::float8"} AS inactive_ms,
              c.state, c.incarnation
         FROM pg_replication_slots s
         LEFT JOIN ${catalogTable(options.schema)} c ON c.slot_name = s.slot_name AND c.stream_id = $1
        WHERE s.slot_name LIKE $2 ESCAPE '\\' ORDER BY s.slot_name`,
      [options.streamId, `${escapeLike(options.slotPrefix)}\\_%`]
    )
    const own = rows.filter((r) => new RegExp(`^${options.slotPrefix}_(\\d+)$`).test(r.slot_name))
    const listing: Array<SlotListing> = []
    const candidates: Array<Candidate> = []
    for (const r of own) {
      const incarnation = Number(/_(\d+)$/.exec(r.slot_name)![1])
      const current = r.state === "active"
      const inactiveMs = r.inactive_ms === null ? undefined : Number(r.inactive_ms)
      const oldEnough = inactiveMs !== undefined ? inactiveMs > options.olderThanMs : r.state === "retired" || r.state === "abandoned"
      const candidate = !current && !r.active && !r.temporary && oldEnough
      listing.push({ slotName: r.slot_name, active: r.active, temporary: r.temporary, current, candidate })
      if (candidate) candidates.push({ slotName: r.slot_name, incarnation, inactiveMs, catalogState: r.state ?? undefined })
    }
    return { slots: listing, candidates }
  }).pipe(Effect.mapError((e) => new SlotError({ reason: "Query", message: `listing slots: ${SqlErrors.describe(e)}` })))

/** Drops the candidates as the stream's owner; returns the names dropped. */
export const drop = (
  own: Ownership["Service"],
  sql: SqlClient,
  schema: string,
  candidates: ReadonlyArray<Candidate>
): Effect.Effect<ReadonlyArray<string>, SlotError | OwnershipLost | LockBackendError> =>
  Effect.forEach(candidates, (c) =>
    own.guarded(sql.unsafe("SELECT pg_drop_replication_slot($1)::text", [c.slotName])).pipe(
      Effect.catchTag("SqlError", (e) => Effect.fail(new SlotError({ reason: "Query", slotName: c.slotName, message: `dropping ${c.slotName}: ${SqlErrors.describe(e)}` }))),
      Effect.andThen(retire(own, sql, schema, c.slotName)),
      Effect.as(c.slotName)
    ))
