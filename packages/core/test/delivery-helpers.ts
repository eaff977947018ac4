/**
 * Helpers for the real-PostgreSQL delivery tests: an instance that owns stream "orders" and consumes its changes
 * with `Delivery.run`, recording every delivered transaction and acknowledging the ones a rule accepts.
 */
import { Effect, Fiber, Redacted, Stream, SubscriptionRef } from "effect"
import * as Lsn from "../src/Lsn.ts"
import type * as OwnershipConfig from "../src/ownership/OwnershipConfig.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import * as SlotManager from "../src/slot/SlotManager.ts"
import { fastTiming } from "./ownership-helpers.ts"

export interface Delivered {
  readonly xid: number
  readonly ids: ReadonlyArray<number>
  readonly commitLsn: Lsn.Lsn
  readonly endLsn: Lsn.Lsn
  readonly acknowledged: boolean
}

export interface Consumer {
  readonly name: string
  readonly delivered: Array<Delivered>
  readonly state: SlotManager.SlotManagerState
  readonly fiber: Fiber.Fiber<unknown, unknown>
  readonly ownership: StreamOwnership.StreamOwnership["Service"]
  /** Ids of all delivered inserts, in delivery order. */
  readonly ids: () => Array<number>
}

export const deliveryOptions = {
  streamId: "orders",
  slotPrefix: "slotkeeper_orders",
  schema: "slotkeeper",
  publication: "slotkeeper_orders",
  advanceInterval: "100 millis",
  healthInterval: "500 millis",
  saveInterval: "100 millis",
  statusInterval: "1 second"
} as const

/** Starts an instance consuming stream "orders" on `url`; runs until its scope closes. */
export const startConsumer = (
  name: string,
  url: string,
  options: {
    readonly acknowledge?: (ids: ReadonlyArray<number>) => boolean
    readonly delivery?: Partial<Delivery.DeliveryOptions>
    readonly ownership?: Partial<OwnershipConfig.OwnershipOptions>
  } = {}
) =>
  Effect.gen(function*() {
    const redacted = Redacted.make(url)
    const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: name, url: redacted, ...fastTiming.advisory, ...options.ownership })
    const delivered: Array<Delivered> = []
    const state = yield* SlotManager.makeState
    const accept = options.acknowledge ?? (() => true)
    const owned = Delivery.run({ ...deliveryOptions, url: redacted, instanceId: name, sql: ownership.sql, ...options.delivery }, (stream) => {
      let ids: Array<number> = []
      return Stream.runForEach(stream.events, (event) =>
        Effect.gen(function*() {
          if (event._tag === "Begin") ids = []
          else if (event._tag === "Change" && event.op === "insert") ids.push(Number(event.new!.id))
          else if (event._tag === "Commit") {
            const acknowledged = accept(ids)
            delivered.push({ xid: event.xid, ids, commitLsn: event.commitLsn, endLsn: event.endLsn, acknowledged })
            if (acknowledged) yield* stream.acknowledge(event.endLsn)
          }
        }))
    }, state)
    const fiber = yield* Effect.forkScoped(ownership.supervisor.run(owned))
    return { name, delivered, state, fiber, ownership, ids: () => delivered.flatMap((d) => d.ids) } satisfies Consumer
  })

/** The slot's row, read directly. */
export const slotRow = (pg: { query: <A>(sql: string) => Effect.Effect<ReadonlyArray<A>, unknown> }, slotName: string) =>
  Effect.map(
    pg.query<{ confirmed: string | null; restart: string | null; active: boolean }>(
      `SELECT confirmed_flush_lsn::text AS confirmed, restart_lsn::text AS restart, active FROM pg_replication_slots WHERE slot_name = '${slotName}'`
    ),
    (rows) => rows[0] === undefined ? undefined : {
      confirmed: rows[0].confirmed === null ? undefined : Lsn.parseUnsafe(rows[0].confirmed),
      restart: rows[0].restart === null ? undefined : Lsn.parseUnsafe(rows[0].restart),
      active: rows[0].active
    }
  )

export const slotOf = (consumer: Consumer) => SubscriptionRef.get(consumer.state.slot)
