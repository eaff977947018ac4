/**
 * `slotkeeper run`'s options (pure): the table syntax, the `--config` file and its precedence, durations, and the
 * ownership timing rules, each refusal naming its option.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as RunConfig from "../src/config/RunConfig.ts"

const ok = (input: RunConfig.RunInput) => Result.getOrThrow(RunConfig.make({ instanceId: "i", ...input }))
const refused = (input: RunConfig.RunInput) => {
  const c = RunConfig.make({ instanceId: "i", ...input })
  if (Result.isSuccess(c)) throw new Error(`accepted: ${JSON.stringify(input)}`)
  return c.failure
}

describe("RunConfig (pure)", () => {
  it("tables: names by PostgreSQL's rules, a column list and a row filter as in CREATE PUBLICATION", () => {
    assert.deepStrictEqual(ok({ tables: ["Orders"] }).tables, [{ schema: "public", name: "orders" }])
    assert.deepStrictEqual(ok({ tables: ['"Sales"."Or.ders"'] }).tables, [{ schema: "Sales", name: "Or.ders" }])
    assert.deepStrictEqual(ok({ tables: [`shop.orders (id, "Status" ,total) WHERE status <> 'draft' AND total > 0`] }).tables, [
      { schema: "shop", name: "orders", columns: ["id", "Status", "total"], where: "status <> 'draft' AND total > 0" }
    ])
    assert.deepStrictEqual(ok({ tables: ["orders where (id % 2) = 0"] }).tables, [{ schema: "public", name: "orders", where: "(id % 2) = 0" }])
    const cases: Array<[string, RegExp]> = [
      ["orders (id, status", /column list is not closed/],
      ["orders ()", /column list has an empty name/],
      ["orders (1d)", /"1d", which is not a name/],
      ["orders LIMIT 5", /has "LIMIT 5" after the name/],
      ["orders WHERE id > 0; DROP TABLE orders", /contains ';'/],
      ["orders WHERE (id > 0", /leaves a parenthesis open/],
      ["orders WHERE id > 0 -- x", /contains a comment/]
    ]
    for (const [text, message] of cases) {
      const e = refused({ tables: [text] })
      assert.strictEqual(e.option, "table", text)
      assert.match(e.message, message, text)
      assert.match(e.message, /^--table: /)
    }
    assert.match(refused({ tables: ["orders (id)", "public.orders"] }).message, /public\.orders is given twice with different/)
    // the message writes the one entry that gives both
    assert.match(refused({ tables: ["orders (id) WHERE id > 10", "orders (id, total) WHERE total > 100"] }).message,
      /give it once; for the rows and columns of both, "public"\."orders" \("id", "total"\) WHERE \(id > 10\) OR \(total > 100\)$/)
    assert.match(refused({ tables: ["orders (id) WHERE id > 10", "orders"] }).message, /for the rows and columns of both, "public"\."orders"$/)
    assert.strictEqual(ok({ tables: ["orders", "public.orders"] }).tables.length, 1)
  })

  it("SLOTKEEPER_TABLES: commas separate tables, but not inside a column list or quotes", () => {
    assert.deepStrictEqual(RunConfig.splitTables(` public.a, b (id, "x,y") WHERE id > 1 AND note <> 'a,b' , "c,d"`), [
      "public.a",
      `b (id, "x,y") WHERE id > 1 AND note <> 'a,b'`,
      `"c,d"`
    ])
    assert.deepStrictEqual(RunConfig.splitTables(""), [])
    assert.deepStrictEqual(ok({ tables: RunConfig.splitTables(`b (id, "x,y") WHERE note <> 'a,b'`) }).tables, [
      { schema: "public", name: "b", columns: ["id", "x,y"], where: "note <> 'a,b'" }
    ])
  })

  it("durations and the ownership timing rules, checked before anything connects, in the flags' names", () => {
    assert.deepStrictEqual(ok({ heartbeatInterval: "200ms", lossDeadline: "1s", serverReleaseBound: "3 seconds" }).ownership, {
      heartbeatInterval: 200, lossDeadline: 1000, serverReleaseBound: 3000, onLoss: "wait"
    })
    assert.strictEqual(ok({ walHeartbeatInterval: "2m" }).walHeartbeatIntervalMs, 120_000)
    const e = refused({ lossDeadline: "soon" })
    assert.deepStrictEqual([e.option, e.message], ["loss-deadline", '--loss-deadline: "soon" is not a positive duration: write e.g. 500ms, 5s or 2m'])
    const order = refused({ lossDeadline: "9s" })
    assert.strictEqual(order.option, "server-release-bound")
    assert.match(order.message, /--loss-deadline 9s\) plus the safety margin .* must not exceed .*--server-release-bound 4s/)
    const lease = refused({ lock: "lease", renewInterval: "6s" })
    assert.strictEqual(lease.option, "renew-interval")
    assert.match(lease.message, /--renew-interval \(6s\) must be less than half of --lease-duration/)
    assert.deepStrictEqual([refused({ onLoss: "panic" }).message, refused({ onSinkRejected: "retry" }).message, refused({ onSlotLost: "ignore" }).message], [
      '--on-loss: "panic": use wait or exit',
      '--on-sink-rejected: "retry": use fail or skip',
      '--on-slot-lost: "ignore": use fail or recreate'
    ])
  })

  it("--config: JSON with the flags' names; flags and environment win, tables are added; unknown keys refused", () => {
    const file = RunConfig.fromFile("c.json", JSON.stringify({
      streamId: "orders",
      lock: "lease",
      lossDeadline: 1500,
      tables: ["public.a", { table: "public.b", columns: ["id", "Name"], where: "id > 0", replicaIdentityFull: true }]
    }))
    const c = ok(RunConfig.merge({ lock: "advisory", tables: ["public.c"] }, Result.getOrThrow(file)))
    assert.strictEqual(c.streamId, "orders")
    assert.strictEqual(c.lock, "advisory")
    assert.strictEqual(c.ownership.lossDeadline, 1500)
    assert.deepStrictEqual(c.tables, [
      { schema: "public", name: "c" },
      { schema: "public", name: "a" },
      { schema: "public", name: "b", columns: ["id", "Name"], where: "id > 0", replicaIdentityFull: true }
    ])
    const bad: Array<[string, RegExp]> = [
      ["{", /--config: c\.json: is not JSON/],
      ["[]", /must be a JSON object of options/],
      ['{"stream": "x"}', /unknown option "stream"; the options are databaseUrl, replicationUrl, startupTimeout, tables, publish, publishViaPartitionRoot, publishGeneratedColumns, streamId/],
      ['{"httpPort": "80"}', /"httpPort" must be a number/],
      ['{"tables": "public.a"}', /"tables" must be a list/],
      ['{"chunkSize": "500"}', /"chunkSize" must be a number/]
    ]
    for (const [text, message] of bad) {
      const e = RunConfig.fromFile("c.json", text)
      assert.isTrue(Result.isFailure(e) && e.failure.option === "config", text)
      assert.match(Result.isFailure(e) ? e.failure.message : "", message)
    }
    const table = (t: unknown) => refused(RunConfig.merge({}, { tables: [t as RunConfig.TableInput] }))
    assert.match(table({ table: "a", cols: ["id"] }).message, /--config: tables: .* unknown key "cols"/)
    assert.match(table({ table: "a (id)" }).message, /use "columns" and "where"/)
    assert.match(table({ table: "a", where: "1; drop" }).message, /contains ';'/)
    assert.match(table(42).message, /neither a string nor an object/)
  })

  it("--chunk-size: a whole number of rows, 1..1000000; 10000 by default", () => {
    assert.strictEqual(ok({}).chunkSize, 10_000)
    assert.strictEqual(ok({ chunkSize: 500 }).chunkSize, 500)
    for (const bad of [0, -1, 2.5, 1_000_001, Number.NaN]) {
      const e = refused({ chunkSize: bad })
      assert.strictEqual(e.option, "chunk-size")
      assert.match(e.message, /is not a chunk size: use a whole number of rows, 1\.\.1000000/)
    }
  })

  it("a whole schema: schema.* by PostgreSQL's identifier rules, no column list or filter; a table given as well stays a table", () => {
    const c = ok({ tables: ["sales.*", "\"Big Sales\".*", "sales.*", "sales.orders (id) WHERE id > 1", "public.other"] })
    assert.deepStrictEqual(c.schemas, ["sales", "Big Sales"])
    assert.deepStrictEqual(c.tables.map((t) => `${t.schema}.${t.name}`), ["sales.orders", "public.other"])
    assert.deepStrictEqual(ok({ tables: ["SALES.*"] }).schemas, ["sales"]) // unquoted: folded to lower case
    for (const [bad, said] of [["sales.* (id)", /has something after \.\*/], ["sales.*.x", /has something after \.\*/], ["\"sales.*", /write schema\.\* for every table of a schema/]] as const) {
      const e = refused({ tables: [bad] })
      assert.strictEqual(e.option, "table")
      assert.match(e.message, said)
    }
  })

  it("--publish: some of insert, update, delete, truncate, as PostgreSQL reads its publish option; all four by default", () => {
    const all = { insert: true, update: true, delete: true, truncate: true }
    assert.deepStrictEqual(ok({}).publishes, all)
    assert.deepStrictEqual(ok({ publish: "insert" }).publishes, { insert: true, update: false, delete: false, truncate: false })
    // case and spaces do not matter, a repeat is harmless (PostgreSQL: publish = 'Insert, truncate, insert')
    assert.deepStrictEqual(ok({ publish: " Insert, TRUNCATE ,insert" }).publishes, { insert: true, update: false, delete: false, truncate: true })
    assert.deepStrictEqual(ok({ publish: "insert,update,delete,truncate" }).publishes, all)
    assert.strictEqual(RunConfig.publishText(ok({ publish: "truncate,insert" }).publishes), "insert, truncate")
    for (const [bad, said] of [["", /an empty item/], ["insert,", /an empty item/], ["upsert", /"upsert" is not an operation/], ["insert;update", /"insert;update" is not an operation/]] as const) {
      const e = refused({ publish: bad })
      assert.strictEqual(e.option, "publish")
      assert.match(e.message, said)
      assert.match(e.message, /give some of insert, update, delete, truncate, comma-separated/)
    }
  })

  it("a timing flag of the other lock mode is refused, not ignored; standby URLs must be PostgreSQL URLs", () => {
    for (const [input, option, message] of [
      [{ lock: "lease", heartbeatInterval: "1s" }, "heartbeat-interval", /applies to --lock advisory only/],
      [{ lock: "lease", lossDeadline: "4s" }, "loss-deadline", /in lease mode the timing is --lease-duration and --renew-interval/],
      [{ lock: "lease", serverReleaseBound: "20s" }, "server-release-bound", /applies to --lock advisory only/],
      [{ leaseDuration: "20s" }, "lease-duration", /applies to --lock lease only/],
      [{ renewInterval: "2s" }, "renew-interval", /in advisory mode the timing is --heartbeat-interval/],
      [{ standbyUrls: ["http://standby"] }, "standby-url", /^--standby-url: must be a postgres:\/\/ or postgresql:\/\/ URL/]
    ] as const) {
      const e = refused({ tables: ["t"], ...input })
      assert.strictEqual(e.option, option, JSON.stringify(input))
      assert.match(e.message, message)
    }
    assert.deepStrictEqual(ok({ tables: ["t"], lock: "lease", leaseDuration: "20s", renewInterval: "5s" }).ownership.leaseDuration, 20_000)
    assert.deepStrictEqual(ok({ tables: ["t"], standbyUrls: ["postgres://standby/db"] }).standbyUrls, ["postgres://standby/db"])
  })
})

