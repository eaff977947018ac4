/**
 * The pure steps of a replication connection (`ReplicationStream`): the command that starts it, and what each
 * received message does to the watermark — the parts `open` runs for every connection and every message.
 */
import { assert, describe, it } from "@effect/vitest"
import { afterMessage, heartbeatPrefix, startReplicationCommand } from "../src/replication/ReplicationStream.ts"
import * as Watermark from "../src/replication/Watermark.ts"

const message = (prefix: string, lsn: bigint, transactional = false) =>
  ({ tag: "message", xid: undefined, transactional, lsn, prefix, content: new Uint8Array() }) as const

describe("ReplicationStream steps (pure)", () => {
  it("startReplicationCommand: protocol 2 with in-progress streaming from 14, protocol 1 before; messages on; the position as PostgreSQL writes it", () => {
    assert.strictEqual(
      startReplicationCommand("slotkeeper_t_ab", 0x16b3748n, "slotkeeper_orders", 180004),
      `START_REPLICATION SLOT "slotkeeper_t_ab" LOGICAL 0/16B3748 (proto_version '2', publication_names '"slotkeeper_orders"', messages 'true', streaming 'on')`
    )
    assert.strictEqual(
      startReplicationCommand("slotkeeper_orders_1", 0n, "slotkeeper_orders", 130015),
      `START_REPLICATION SLOT "slotkeeper_orders_1" LOGICAL 0/0 (proto_version '1', publication_names '"slotkeeper_orders"', messages 'true')`
    )
  })

  it("afterMessage: a transaction opens and commits (its end becomes what a consumer must acknowledge); a streamed one stopped before its commit aborts", () => {
    const w0 = Watermark.initial(100n)
    const begun = afterMessage(w0, { tag: "begin", finalLsn: 200n, commitTime: "", xid: 7 })
    assert.isTrue(begun.watermark.open)
    const committed = afterMessage(begun.watermark, { tag: "commit", commitLsn: 200n, endLsn: 210n, commitTime: "" })
    assert.deepInclude(committed.watermark, { open: false, received: 210n, durable: 100n })
    assert.isUndefined(committed.idle)
    const streamed = afterMessage(w0, { tag: "streamStart", xid: 8, first: true })
    assert.isTrue(streamed.watermark.open)
    assert.isFalse(afterMessage(streamed.watermark, { tag: "streamStop" }).watermark.open)
  })

  it("afterMessage: a non-transactional message is a position to acknowledge; slotkeeper's heartbeat is idle progress instead; a transactional one changes nothing", () => {
    const w0 = Watermark.initial(100n)
    assert.strictEqual(afterMessage(w0, message("app:event", 300n)).watermark.received, Watermark.message(w0, 300n).received)
    const heartbeat = afterMessage(w0, message(`${heartbeatPrefix}default`, 400n))
    assert.strictEqual(heartbeat.watermark, w0)
    assert.strictEqual(heartbeat.idle, 401n)
    assert.strictEqual(afterMessage(w0, message("app:event", 500n, true)).watermark, w0)
    assert.strictEqual(afterMessage(w0, { tag: "origin", originLsn: 1n, name: "x" }).watermark, w0)
  })
})
