import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import * as Desired from "../src/publication/Desired.ts"
import * as Subscription from "../src/publication/Subscription.ts"
import * as SchemaTables from "../src/publication/SchemaTables.ts"

const checked = (s: Subscription.Subscription): Subscription.Checked => Result.getOrThrow(Subscription.check(s))

describe("Subscription (pure)", () => {
  it("accepts one balanced expression, with strings and quoted identifiers that contain anything", () => {
    for (const ok of [
      "id > 10",
      "status = 'a;b -- c /* d */ )('",
      "\"weird ) name\" IS NOT NULL",
      "note = 'it''s'",
      "note = E'it\\'s ) ('",
      "(a > 1 AND (b < 2 OR c IN (1, 2)))",
      "amount::numeric > 1.5e3",
      "note = 'a\\'", // standard_conforming_strings (set for every statement slotkeeper runs): a backslash is a character
      "name = 'E' AND note = e'x\\\\'"
    ]) assert.isUndefined(Subscription.filterProblem(ok), ok)
  })
  it("refuses what could change the statement around it", () => {
    const cases: Array<[string, RegExp]> = [
      ["id > 0); DROP TABLE t; --", /closes a parenthesis/],
      ["id > 0) , other_table WHERE (true", /closes a parenthesis/],
      ["true; DELETE FROM t", /';'/],
      ["id > 0 -- rest", /comment/],
      ["note = E'a\\\\') , t WHERE (true", /closes a parenthesis/], // the escaped backslash does not escape the quote
      ["id > 0 /* x */", /comment/],
      ["(id > 0", /open/],
      ["name = 'unterminated", /unterminated string/],
      ["\"unterminated", /unterminated quoted identifier/],
      ["body = $$x$$", /dollar/],
      ["id = $1", /parameter/],
      ["   ", /empty/]
    ]
    for (const [filter, expected] of cases) assert.match(Subscription.filterProblem(filter) ?? "accepted", expected, filter)
  })
  it("checks names and normalizes columns; quotes by PostgreSQL's rules", () => {
    assert.deepStrictEqual(checked({ id: "a", table: { name: "T" }, columns: ["b", "a", "b"] }), {
      id: "a", schema: "public", name: "T", columns: ["a", "b"], where: undefined, replicaIdentityFull: false
    })
    const bad = (s: Subscription.Subscription) => {
      const c = Subscription.check(s)
      return Result.isFailure(c) ? c.failure.reason : "accepted"
    }
    assert.strictEqual(bad({ id: "a", table: { name: "" } }), "Identifier")
    assert.strictEqual(bad({ id: "a", table: { name: "x".repeat(64) } }), "Identifier")
    assert.strictEqual(bad({ id: "a", table: { name: "t" }, columns: [] }), "Identifier")
    assert.strictEqual(bad({ id: "a", table: { name: "t\u0000" } }), "Identifier")
    assert.strictEqual(bad({ id: "a", table: { name: "t" }, where: "1=1; --" }), "Filter")
    assert.strictEqual(Subscription.quoteIdent("we\"ird"), "\"we\"\"ird\"")
    assert.strictEqual(Subscription.qualifiedName("s", "t\"; DROP"), "\"s\".\"t\"\"; DROP\"")
  })
})

describe("Desired (pure)", () => {
  it("reference-counts tables; columns are the union or all; filters the OR, or none if any has none", () => {
    const d = Desired.desired([
      checked({ id: "1", table: { name: "b" }, columns: ["x"] }),
      checked({ id: "2", table: { name: "b" }, columns: ["y", "x"] }),
      checked({ id: "3", table: { name: "a" }, where: "v > 1" }),
      checked({ id: "4", table: { name: "a" }, where: "w < 2" }),
      checked({ id: "5", table: { name: "c" }, where: "v > 1", columns: ["k"] }),
      checked({ id: "6", table: { name: "c" } })
    ])
    assert.deepStrictEqual(d, [
      { schema: "public", name: "a", columns: undefined, where: "(v > 1) OR (w < 2)" },
      { schema: "public", name: "b", columns: ["x", "y"], where: undefined },
      { schema: "public", name: "c", columns: undefined, where: undefined }
    ])
    assert.deepStrictEqual(Desired.desired([]), [])
  })
  it("plans only what differs, locks every touched table first in sorted order, drops before adds", () => {
    const actual: Desired.Actual = {
      tables: [
        { schema: "public", name: "keep", columns: undefined, where: "(id > 1)" },
        { schema: "public", name: "gone", columns: undefined, where: undefined },
        { schema: "public", name: "cols", columns: ["a"], where: undefined }
      ]
    }
    const wanted: ReadonlyArray<Desired.TableSpec> = [
      { schema: "public", name: "cols", columns: ["a", "b"], where: undefined },
      { schema: "public", name: "keep", columns: undefined, where: "id > 1" },
      { schema: "public", name: "new", columns: undefined, where: undefined }
    ]
    const normalize = (w: string) => (w === "id > 1" ? "(id > 1)" : undefined)
    const plan = Desired.plan(actual, wanted, normalize)
    assert.deepStrictEqual(plan.drop.map((t) => t.name), ["gone"])
    assert.deepStrictEqual(plan.change.map((t) => t.name), ["cols"])
    assert.deepStrictEqual(plan.add.map((t) => t.name), ["new"])
    assert.deepStrictEqual(Desired.statements("slotkeeper_orders", plan), [
      "LOCK TABLE \"public\".\"cols\", \"public\".\"gone\", \"public\".\"new\" IN SHARE UPDATE EXCLUSIVE MODE",
      "ALTER PUBLICATION \"slotkeeper_orders\" DROP TABLE \"public\".\"cols\", \"public\".\"gone\"",
      "ALTER PUBLICATION \"slotkeeper_orders\" ADD TABLE \"public\".\"cols\" (\"a\", \"b\"), \"public\".\"new\""
    ])
    assert.isTrue(Desired.isEmpty(Desired.plan({ tables: wanted }, wanted, (w) => w)))
    // a filter the server printed differently but that is not known to be the same is applied again (never assumed equal)
    assert.deepStrictEqual(Desired.plan(actual, [actual.tables[0]!].map((t) => ({ ...t, where: "id > 1" })), () => undefined).change.map((t) => t.name), ["keep"])
  })
})

describe("SchemaTables.expand (pure)", () => {
  const t = (name: string, hasIdentity = true, mayPublish = true): SchemaTables.CatalogTable => ({ schema: "sales", name, hasIdentity, mayPublish, owner: "app" })
  const all = { update: true, delete: true }

  it("every table with a replica identity, sorted; one without is left out while updates or deletes are published, and said why", () => {
    const e = SchemaTables.expand([t("orders"), t("log", false), t("audit")], { publishes: all, explicit: new Set() })
    assert.deepStrictEqual(e.subscriptions, [{ id: "sales.audit", table: { schema: "sales", name: "audit" } }, { id: "sales.orders", table: { schema: "sales", name: "orders" } }])
    assert.deepStrictEqual(e.skipped.map((s) => [s.name, s.reason]), [["log", "NoReplicaIdentity"]])
    assert.match(e.skipped[0]!.message, /sales\.log has no replica identity: published, PostgreSQL would refuse its UPDATE and DELETE/)
    // inserts and truncates only: no identity needed
    assert.deepStrictEqual(SchemaTables.expand([t("log", false)], { publishes: { update: false, delete: false }, explicit: new Set() }).subscriptions.map((s) => s.id), ["sales.log"])
    // deletes alone need it too
    assert.deepStrictEqual(SchemaTables.expand([t("log", false)], { publishes: { update: false, delete: true }, explicit: new Set() }).skipped.length, 1)
  })

  it("an unlogged table is left out: PostgreSQL cannot publish it, whatever is published", () => {
    const e = SchemaTables.expand([{ ...t("scratch"), unlogged: true }, t("orders")], { publishes: { update: false, delete: false }, explicit: new Set() })
    assert.deepStrictEqual(e.subscriptions.map((s) => s.id), ["sales.orders"])
    assert.deepStrictEqual(e.skipped.map((s) => [s.name, s.reason]), [["scratch", "Unlogged"]])
    assert.match(e.skipped[0]!.message, /UNLOGGED.*ALTER TABLE sales\.scratch SET LOGGED/)
  })

  it("another role's table is left out (only its owner may publish it); a table given on its own keeps its own subscription", () => {
    const e = SchemaTables.expand([t("orders"), t("theirs", true, false)], { publishes: all, explicit: new Set(["sales.orders"]) })
    assert.deepStrictEqual(e.subscriptions, [])
    assert.deepStrictEqual(e.skipped.map((s) => [s.name, s.reason]), [["theirs", "Privilege"]])
    assert.match(e.skipped[0]!.message, /owned by app/)
  })
})
