import { assert, describe, it } from "@effect/vitest"
import * as Watermark from "../src/replication/Watermark.ts"

const must = (w: Watermark.Watermark | Watermark.AckAhead): Watermark.Watermark => {
  if ("_tag" in w) throw new Error(w.message)
  return w
}

describe("Watermark (pure)", () => {
  it("acknowledges only what was received, and saves before it reports", () => {
    let w = Watermark.initial(100n)
    w = Watermark.commit(Watermark.begin(w), 200n)
    w = Watermark.commit(Watermark.begin(w), 300n)
    w = must(Watermark.ack(w, 200n))
    assert.deepStrictEqual(Watermark.toSave(w), { lsn: 200n, inside: undefined })
    assert.strictEqual(w.durable, 100n) // reported: only what was saved
    w = Watermark.saved(w, { lsn: 200n, inside: undefined })
    assert.strictEqual(w.durable, 200n)
    assert.isUndefined(Watermark.toSave(w))
  })

  it("refuses an acknowledgement past anything received", () => {
    const w = Watermark.commit(Watermark.begin(Watermark.initial(100n)), 200n)
    const r = Watermark.ack(w, 201n)
    assert.strictEqual("_tag" in r ? r._tag : "accepted", "AckAhead")
  })

  it("takes a keepalive position only when nothing received is in flight", () => {
    let w = Watermark.initial(100n)
    w = Watermark.begin(w)
    assert.strictEqual(Watermark.keepalive(w, 500n).acknowledged, 100n) // a transaction is open
    w = Watermark.commit(w, 200n)
    assert.strictEqual(Watermark.keepalive(w, 500n).acknowledged, 100n) // received, not acknowledged
    w = must(Watermark.ack(w, 200n))
    w = Watermark.keepalive(w, 500n)
    assert.strictEqual(w.acknowledged, 500n) // all received was acknowledged: everything below wal_end was consumed
    assert.strictEqual(Watermark.keepalive(w, 400n).acknowledged, 500n) // never backwards
  })

  it("a message for the consumer must be acknowledged one past its position; a heartbeat acts as a keepalive", () => {
    let w = Watermark.message(Watermark.initial(100n), 150n)
    assert.strictEqual(Watermark.keepalive(w, 300n).acknowledged, 100n)
    w = must(Watermark.ack(w, 151n))
    assert.strictEqual(Watermark.keepalive(w, 300n).acknowledged, 300n)
  })

  it("an aborted streamed transaction leaves nothing to acknowledge", () => {
    const w = Watermark.abort(Watermark.begin(Watermark.initial(100n)))
    assert.strictEqual(Watermark.keepalive(w, 300n).acknowledged, 300n)
  })

  it("never reports a position above an unacknowledged transaction, over random sequences", () => {
    let seed = 7
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
    for (let run = 0; run < 200; run++) {
      let w = Watermark.initial(0n)
      let lsn = 0n
      const received: Array<bigint> = [] // commit ends, in order
      let acked = 0n
      for (let step = 0; step < 50; step++) {
        const r = random()
        lsn += BigInt(1 + Math.floor(random() * 100))
        if (r < 0.3) {
          w = Watermark.commit(Watermark.begin(w), lsn)
          received.push(lsn)
        } else if (r < 0.5 && received.length > 0) {
          const pick = received[Math.floor(random() * received.length)]!
          w = must(Watermark.ack(w, pick))
          if (pick > acked) acked = pick
        } else if (r < 0.7) {
          w = Watermark.keepalive(w, lsn)
        } else if (r < 0.85) {
          const s = Watermark.toSave(w)
          if (s !== undefined) w = Watermark.saved(w, s)
        } else {
          w = Watermark.begin(w)
          lsn += 10n
          w = Watermark.commit(w, lsn)
          received.push(lsn)
        }
        // the first received transaction not acknowledged bounds every position that may be saved or reported
        const firstUnacked = received.find((end) => end > acked)
        if (firstUnacked !== undefined) {
          assert.isTrue(w.acknowledged < firstUnacked, `acknowledged ${w.acknowledged} >= unacknowledged commit end ${firstUnacked}`)
          assert.isTrue(w.durable < firstUnacked)
        }
        assert.isTrue(w.durable <= w.acknowledged)
      }
    }
  })

  it("a partly consumed transaction: its position is saved without moving the whole position, and cleared when it is acknowledged whole", () => {
    let w = Watermark.begin(Watermark.initial(100n))
    w = Watermark.ackInside(w, { commitLsn: 150n, seq: 4 })
    assert.deepStrictEqual(Watermark.toSave(w), { lsn: 100n, inside: { commitLsn: 150n, seq: 4 } })
    w = Watermark.saved(w, Watermark.toSave(w)!)
    assert.strictEqual(w.durable, 100n) // what the server is told does not move
    assert.deepStrictEqual(w.durableInside, { commitLsn: 150n, seq: 4 })
    assert.strictEqual(Watermark.ackInside(w, { commitLsn: 150n, seq: 3 }), w) // never backwards
    w = Watermark.commit(w, 200n)
    w = must(Watermark.ack(w, 200n))
    assert.deepStrictEqual(Watermark.toSave(w), { lsn: 200n, inside: undefined })
  })
})
