/**
 * The backfill's placement decision (pure): which rows of a chunk are emitted at its high watermark, decided by the
 * read's snapshot — rows changed by a transaction it does not see, delivered before the watermark, are left out; a
 * chunk that cannot be placed exactly is read again.
 */
import { assert, describe, it } from "@effect/vitest"
import { ChunkWindows, sees, type Snapshot } from "../src/backfill/ChunkWindow.ts"
import type { Row } from "../src/replication/Values.ts"

const keyOf = (row: Row) => (row.id === undefined ? undefined : String(row.id))
const rows = (...ids: Array<number>): Array<Row> => ids.map((id) => ({ id, body: `row ${id}` }))
// S sees transactions below 100 and 100..119 except 105 and 110; not 120 and above
const S: Snapshot = { xmin: 100, xmax: 120, xip: [105, 110] }
const change = (xid: number, ids: { new?: number; old?: number }) => ({
  schema: "public",
  table: "items",
  xid,
  new: ids.new === undefined ? undefined : { id: ids.new, body: "changed" },
  old: ids.old === undefined ? undefined : { id: ids.old }
})

describe("ChunkWindow (pure)", () => {
  it("a snapshot sees committed transactions below xmin, and below xmax unless in progress; ids wrap around", () => {
    assert.deepStrictEqual([99, 100, 104, 105, 110, 119, 120, 500].map((x) => sees(S, x)), [true, true, true, false, false, true, false, false])
    // near the wrap: 2^32 - 5 comes before 3
    const wrapped: Snapshot = { xmin: 4294967290, xmax: 5, xip: [4294967295] }
    assert.deepStrictEqual([4294967280, 4294967291, 4294967295, 3, 5, 6].map((x) => sees(wrapped, x)), [true, true, false, true, false, false])
  })

  it("no concurrent change: every row is emitted, in order; changes of other tables and of seen transactions do not count", () => {
    const w = new ChunkWindows()
    w.open("c1", "public", "items", keyOf)
    w.change({ ...change(200, { new: 2 }), table: "other" })
    w.change(change(99, { new: 3 })) // seen by S: the read row includes it
    w.change(change(112, { old: 4 })) // seen by S (below xmax, not in progress)
    w.loaded("c1", S, rows(1, 2, 3, 4, 5))
    assert.deepStrictEqual(w.high("c1"), { _tag: "Emit", rows: rows(1, 2, 3, 4, 5), dropped: 0 })
  })

  it("rows changed by transactions the snapshot does not see are left out: in progress, or begun after it; both keys of a key change", () => {
    const w = new ChunkWindows()
    w.open("c1", "public", "items", keyOf)
    w.change(change(105, { new: 2 })) // in progress at S
    w.change(change(130, { old: 4 })) // began after S: a delete
    w.change(change(110, { new: 9, old: 5 })) // the key changed from 5 to 9
    w.commit(105)
    w.loaded("c1", S, rows(1, 2, 3, 4, 5, 9))
    assert.deepStrictEqual(w.high("c1"), { _tag: "Emit", rows: rows(1, 3), dropped: 4 })
  })

  it("a transaction the snapshot does not see, yet delivered before the window opened: the chunk is read again", () => {
    const w = new ChunkWindows()
    w.commit(98)
    w.commit(105) // delivered: its commit record came first, though S (taken later) does not see it
    w.open("c1", "public", "items", keyOf)
    w.loaded("c1", S, rows(1, 2))
    const answer = w.high("c1")
    assert.strictEqual(answer._tag, "Retry")
    assert.match(answer._tag === "Retry" ? answer.reason : "", /transaction 105 was delivered before the read began/)
    // the same commit after the window opened is a change in the window, as usual
    const v = new ChunkWindows()
    v.open("c2", "public", "items", keyOf)
    v.change(change(105, { new: 1 }))
    v.commit(105)
    v.loaded("c2", S, rows(1, 2))
    assert.deepStrictEqual(v.high("c2"), { _tag: "Emit", rows: rows(2), dropped: 1 })
  })

  it("a change without its key by a transaction the snapshot does not see: read again; by one it sees: no matter", () => {
    const w = new ChunkWindows()
    w.open("c1", "public", "items", keyOf)
    w.change({ schema: "public", table: "items", xid: 50, new: { body: "key not sent" }, old: undefined })
    w.loaded("c1", S, rows(1))
    assert.deepStrictEqual(w.high("c1"), { _tag: "Emit", rows: rows(1), dropped: 0 })
    w.open("c2", "public", "items", keyOf)
    w.change({ schema: "public", table: "items", xid: 105, new: { body: "key not sent" }, old: undefined })
    w.loaded("c2", S, rows(1))
    assert.strictEqual(w.high("c2")._tag, "Retry")
  })

  it("more commits while a chunk was read than it remembers: read again, rather than guess", () => {
    const w = new ChunkWindows(8)
    w.open("c1", "public", "items", keyOf)
    for (let x = 200; x < 205; x++) w.commit(x)
    w.loaded("c1", S, rows(1))
    assert.strictEqual(w.high("c1")._tag, "Retry")
    // within the bound, and with eviction of older commits: placed
    for (let x = 300; x < 320; x++) w.commit(x)
    w.open("c2", "public", "items", keyOf)
    for (let x = 400; x < 403; x++) w.commit(x)
    w.loaded("c2", S, rows(1))
    assert.deepStrictEqual(w.high("c2"), { _tag: "Emit", rows: rows(1), dropped: 0 })
  })

  it("a high watermark of no open window (an earlier owner's, one answered, one not loaded) is Unknown; a closed window is gone", () => {
    const w = new ChunkWindows()
    assert.deepStrictEqual(w.high("earlier"), { _tag: "Unknown" })
    w.open("c1", "public", "items", keyOf)
    assert.deepStrictEqual(w.high("c1"), { _tag: "Unknown" }) // not read yet: its watermark cannot have been written
    w.loaded("c1", S, rows(1))
    assert.strictEqual(w.high("c1")._tag, "Emit")
    assert.deepStrictEqual(w.high("c1"), { _tag: "Unknown" })
    w.open("c2", "public", "items", keyOf)
    w.close("c2")
    w.loaded("c2", S, rows(1))
    assert.deepStrictEqual([w.high("c2"), w.openWindows], [{ _tag: "Unknown" }, 0])
  })
})
