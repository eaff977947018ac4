/**
 * Helpers for the delivery fault tests: a consumer that records every delivered row with its transaction's end and
 * its session (replication connection) and where each session resumed; a writer that keeps committing rows through
 * faults; the check of both against the table (`DeliveryCheck`); and a stream whose standby is a safe failover target.
 */
import { PgClient } from "@effect/sql-pg"
import { DeliveryCheck, FaultProxy, PgCluster, Standby } from "@slotkeeper/testkit"
import { Context, type Duration, Effect, type Fiber, Layer, Redacted, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { Ownership } from "../src/ownership/Ownership.ts"
import * as PgPublication from "../src/publication/PgPublication.ts"
import * as PublicationManager from "../src/publication/PublicationManager.ts"
import type * as OwnershipConfig from "../src/ownership/OwnershipConfig.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import * as FailoverCheck from "../src/slot/FailoverCheck.ts"
import type * as SlotManager from "../src/slot/SlotManager.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

type Server = { readonly query: <A = Record<string, unknown>>(sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<A>, unknown> }

/** A delivered row, with the ownership epoch it was delivered under. */
export interface RecordedDelivery extends DeliveryCheck.Delivered<number> {
  readonly epoch: number
}

export interface Recording {
  readonly delivered: Array<RecordedDelivery>
  readonly sessionStarts: Map<number, bigint>
  readonly ownership: StreamOwnership.StreamOwnership["Service"]
  /** The publication managers of each holding period (with `publicationDrift`). */
  readonly managers: Array<PublicationManager.PublicationManager>
  readonly fiber: Fiber.Fiber<void, unknown>
}

/** A consumer of stream "orders" on `url` that acknowledges every commit and records what it got. */
export const recordingConsumer = (
  name: string,
  url: string,
  options: {
    /** Sessions are numbered from here (to check several consumers' deliveries together). */
    readonly firstSession?: number
    readonly delivery?: Partial<Delivery.DeliveryOptions>
    readonly ownership?: Partial<OwnershipConfig.OwnershipOptions>
    /** Run the publication manager too (subscribed to `items`), with this drift interval. */
    readonly publicationDrift?: Duration.Input
    /** Where the slot's state goes (a fresh one by default). */
    readonly slotState?: SlotManager.SlotManagerState
  } = {}
) =>
  Effect.gen(function*() {
    const redacted = Redacted.make(url)
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: name, url: redacted, ...fastTiming.advisory, ...options.ownership })
    const delivered: Array<RecordedDelivery> = []
    const sessionStarts = new Map<number, bigint>()
    let sessions = (options.firstSession ?? 1) - 1
    const managers: Array<PublicationManager.PublicationManager> = []
    const delivery = Delivery.run({ ...deliveryOptions, url: redacted, instanceId: name, sql: ownership.sql, ...options.delivery }, (connection) => Effect.gen(function*() {
      const { epoch } = yield* Ownership
      const session = ++sessions
      sessionStarts.set(session, connection.startedAt)
      let ids: Array<number> = []
      return yield* Stream.runForEach(connection.events, (event) => {
        if (event._tag === "Begin") ids = []
        else if (event._tag === "Change" && event.op === "insert" && event.table === "items") ids.push(Number(event.new!.id))
        else if (event._tag === "Commit") {
          for (const key of ids) delivered.push({ key, endLsn: event.endLsn, session, epoch })
          return connection.acknowledge(event.endLsn)
        }
        return Effect.void
      })
    }), options.slotState)
    const owned = options.publicationDrift === undefined ? delivery : Effect.gen(function*() {
      const own = yield* Ownership
      const manager = yield* PublicationManager.make(yield* PgPublication.make(own, ownership.sql, { publication: "slotkeeper_orders", schema: "slotkeeper" }), {
        debounce: "10 millis",
        ...(options.publicationDrift === undefined ? {} : { driftInterval: options.publicationDrift })
      })
      managers.push(manager)
      yield* manager.add({ id: "items", table: { name: "items" } })
      return yield* delivery
    })
    const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
    return { delivered, sessionStarts, ownership, managers, fiber } satisfies Recording
  })

/** Commits rows 1, 2, ... one per transaction, through every fault (a failed insert is retried), until interrupted. */
export const startWriter = (server: Server) =>
  Effect.gen(function*() {
    const state = { next: 1 }
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const id = state.next
      const ok = yield* server.query(`INSERT INTO items VALUES (${id}, 'row ${id}') ON CONFLICT DO NOTHING`).pipe(
        Effect.as(true),
        Effect.catch(() => Effect.as(Effect.sleep("50 millis"), false))
      )
      if (ok) state.next++
      yield* Effect.sleep("5 millis")
    })))
    return state
  })

export const deliveredCount = (r: Recording) => new Set(r.delivered.map((d) => d.key)).size

/** Waits until `r` delivered at least `n` distinct rows. */
export const deliveredAtLeast = (r: Recording, n: number, timeoutMs = 30_000) =>
  eventually(Effect.sync(() => (deliveredCount(r) >= n ? true : undefined)), timeoutMs, `${n} rows delivered`)

/** The committed rows (read from the table, the truth), checked against what was delivered, once all arrived. */
export const checkAll = (server: Server, r: Recording, timeoutMs = 30_000) =>
  Effect.gen(function*() {
    const rows = yield* server.query<{ id: number }>("SELECT id FROM items ORDER BY id")
    const committed = rows.map((row) => row.id)
    yield* eventually(Effect.sync(() => (DeliveryCheck.check({ committed, delivered: r.delivered, sessionStarts: r.sessionStarts }).lost.length === 0 ? true : undefined)),
      timeoutMs, "every committed row delivered").pipe(Effect.exit)
    return { committed, report: DeliveryCheck.check({ committed, delivered: r.delivered, sessionStarts: r.sessionStarts }) }
  })

/**
 * A primary streaming stream "orders" to consumer "a" while a writer commits, and a standby whose copy of the
 * failover slot the slot-sync worker has made sync-ready (a safe failover target), with "a" past `delivered` rows.
 */
export const streamingWithSyncedStandby = (
  delivered: number,
  options: {
    /** "a" connects through a `FaultProxy` (returned as `proxy`), an address that can fail or move; default: directly. */
    readonly throughProxy?: boolean
    readonly ownership?: Partial<OwnershipConfig.OwnershipOptions>
  } = {}
) =>
  Effect.gen(function*() {
    const primary = yield* PgCluster.make({ major: 18 })
    yield* primary.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
    yield* primary.query("CREATE PUBLICATION slotkeeper_orders FOR TABLE items")
    // The slotsync worker, as in production. (pg_sync_replication_slots() on demand cannot catch up on a busy primary:
    // each call drops its not-yet-safe copy again, and every checkpoint save takes a new xid past the slot's catalog_xmin.)
    const standby = yield* Standby.make(primary)
    const proxy = options.throughProxy === true ? yield* FaultProxy.make({ targetPort: primary.port }) : undefined
    const a = yield* recordingConsumer("a", proxy === undefined ? primary.url : primary.urlWith({ port: proxy.port }), {
      delivery: { heartbeatInterval: "300 millis" },
      ...(options.ownership === undefined ? {} : { ownership: options.ownership })
    })
    yield* eventually(Effect.map(primary.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary AND failover"), (r) => (r.length > 0 ? true : undefined)), 20_000, "the failover slot")
    const writing = yield* Effect.forkScoped(startWriter(primary).pipe(Effect.andThen(Effect.never)))
    yield* deliveredAtLeast(a, 20)
    const s = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(standby.url) })), SqlClient.SqlClient)
    // A freshly attached standby is a safe target only once the slot's restart_lsn moved past a running-transactions
    // snapshot the standby has seen. The background writer logs one every 15 s; this logs them itself.
    const synced = Effect.gen(function*() {
      yield* Effect.sleep("200 millis")
      yield* primary.query("SELECT pg_log_standby_snapshot()::text")
      return yield* FailoverCheck.standby(s, "slotkeeper_orders_1")
    })
    yield* eventually(Effect.map(synced, (r) => (r.ok && r.findings.length === 0 ? true : undefined)), 90_000, "the standby's copy of the slot to be sync-ready")
    yield* deliveredAtLeast(a, delivered)
    return { primary, standby, a, writing, proxy }
  })
