import { assert, describe, it } from "@effect/vitest"
import * as StreamId from "../src/StreamId.ts"

describe("StreamId", () => {
  it("accepts [a-z0-9_]{1,40}", () => {
    for (const id of ["orders", "a", "orders_v2", "0", "x".repeat(40)]) assert.isUndefined(StreamId.validate(id))
  })

  it("rejects anything else with a message that says what to change", () => {
    for (const id of ["", "Orders", "orders-v2", "orders v2", "x".repeat(41), "ö", "a;drop table x", "a\"b"]) {
      const error = StreamId.validate(id)
      assert.strictEqual(error?._tag, "InvalidStreamId")
      assert.match(error!.message, /use 1 to 40 characters from a-z, 0-9 and _/)
    }
  })

  it("derives names and two-int lock keys from (database, stream)", () => {
    const a = StreamId.identity("app", "orders")
    assert.strictEqual(a.publicationName, "slotkeeper_orders")
    assert.strictEqual(a.slotPrefix, "slotkeeper_orders")
    assert.strictEqual(a.ownershipLock.namespace, StreamId.OWNERSHIP_LOCK_NAMESPACE)
    assert.strictEqual(a.writeLock.namespace, StreamId.WRITE_LOCK_NAMESPACE)
    assert.strictEqual(a.ownershipLock.key, a.writeLock.key)
    assert.notStrictEqual(StreamId.OWNERSHIP_LOCK_NAMESPACE, StreamId.WRITE_LOCK_NAMESPACE)
    // another stream, or the same stream in another database, gets another key
    assert.notStrictEqual(StreamId.identity("app", "invoices").ownershipLock.key, a.ownershipLock.key)
    assert.notStrictEqual(StreamId.identity("other", "orders").ownershipLock.key, a.ownershipLock.key)
    // a slot name of the longest stream id plus an incarnation fits PostgreSQL's 63 bytes
    assert.isAtMost(`${StreamId.identity("app", "x".repeat(40)).slotPrefix}_2147483647`.length, 63)
  })

  it("the lock-key hash is a fixed wire format (FNV-1a 32, signed)", () => {
    // reference values of 32-bit FNV-1a: "" -> 0x811c9dc5, "a" -> 0xe40c292c, "foobar" -> 0xbf9cf968
    assert.strictEqual(StreamId.fnv1a32(""), 0x811c9dc5 | 0)
    assert.strictEqual(StreamId.fnv1a32("a"), 0xe40c292c | 0)
    assert.strictEqual(StreamId.fnv1a32("foobar"), 0xbf9cf968 | 0)
    assert.strictEqual(StreamId.OWNERSHIP_LOCK_NAMESPACE, StreamId.fnv1a32("slotkeeper:ownership"))
    assert.strictEqual(StreamId.asOid(-1), 4294967295)
  })

  it("application_name names slotkeeper, stream, instance and role within 63 bytes", () => {
    assert.strictEqual(StreamId.applicationName("orders", "pod-7f9c", "lock"), "slotkeeper:orders:pod-7f9c:lock")
    const long = StreamId.applicationName("x".repeat(40), "deployment-abcdef-12345", "guard")
    assert.isAtMost(long.length, 63)
    assert.strictEqual(long, `slotkeeper:${"x".repeat(40)}:12345:guard`) // the end of the instance id is kept
  })

  it("instance ids are checked", () => {
    assert.isUndefined(StreamId.validateInstanceId("pod-7f9c.node_1"))
    assert.strictEqual(StreamId.validateInstanceId("has space")?._tag, "InvalidInstanceId")
    assert.strictEqual(StreamId.validateInstanceId("")?._tag, "InvalidInstanceId")
  })
})
