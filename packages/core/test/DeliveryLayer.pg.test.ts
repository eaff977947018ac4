import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted, Stream } from "effect"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { fastTiming } from "./ownership-helpers.ts"

describe("Delivery.layer (real PostgreSQL 18)", () => {
  it.live("composed as layers: ownership, the publication for the subscriptions, and the consumer", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query("CREATE TABLE other (id int PRIMARY KEY)")
      const url = Redacted.make(pg.url)
      const ownershipLayer = StreamOwnership.layer({ streamId: "orders", instanceId: "a", url, ...fastTiming.advisory })
      const got: Array<number> = []
      // a writer that starts once the stream's slot exists
      yield* Effect.forkScoped(Effect.gen(function*() {
        while ((yield* pg.query("SELECT 1 FROM pg_replication_slots WHERE NOT temporary")).length === 0) yield* Effect.sleep("50 millis")
        yield* pg.query("INSERT INTO other VALUES (1)") // not subscribed
        for (let id = 1; id <= 3; id++) yield* pg.query(`INSERT INTO items VALUES (${id}, 'x')`)
      }))
      const app = Layer.unwrap(Effect.gen(function*() {
        const stream = yield* StreamOwnership.StreamOwnership
        return Delivery.layer({ ...deliveryOptions, url, instanceId: "a", sql: stream.sql, subscriptions: [{ id: "items", table: { name: "items" } }] }, (connection) =>
          connection.events.pipe(
            Stream.tap((event) => (event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void)),
            Stream.filter((event) => event._tag === "Change"),
            Stream.take(3),
            Stream.runForEach((event) => Effect.sync(() => void got.push(event._tag === "Change" ? Number(event.new!.id) : 0)))
          ))
      })).pipe(Layer.provideMerge(ownershipLayer))
      yield* Effect.scoped(Layer.build(app)) // returns when the consumer returns
      assert.deepStrictEqual(got, [1, 2, 3])
      assert.deepStrictEqual(yield* pg.query("SELECT tablename FROM pg_publication_tables WHERE pubname = 'slotkeeper_orders'"), [{ tablename: "items" }])
    }))
})
