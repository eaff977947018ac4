import { assert, describe, it } from "@effect/vitest"
import { DeliveryCheck } from "../src/index.ts"

describe("DeliveryCheck (pure)", () => {
  it("reports lost changes and duplicates of durably acknowledged ones; counts allowed redeliveries", () => {
    const report = DeliveryCheck.check({
      committed: [1, 2, 3, 4, 5],
      delivered: [
        { key: 1, endLsn: 100n, session: 1 },
        { key: 2, endLsn: 200n, session: 1 },
        { key: 3, endLsn: 300n, session: 1 },
        // session 2 resumed from 200: 3 again is allowed, 2 again is not
        { key: 2, endLsn: 200n, session: 2 },
        { key: 3, endLsn: 300n, session: 2 },
        { key: 4, endLsn: 400n, session: 2 },
        { key: 4, endLsn: 400n, session: 2 }, // twice on one connection: never allowed
        { key: 1, endLsn: 100n, session: 1 }
      ],
      sessionStarts: new Map([[1, 0n], [2, 200n]])
    })
    assert.deepStrictEqual(report, { lost: [5], duplicatedAfterAcknowledgement: [2, 4, 1], redelivered: 1, ok: false })
    assert.isTrue(DeliveryCheck.check({ committed: [1], delivered: [{ key: 1, endLsn: 1n, session: 1 }], sessionStarts: new Map() }).ok)
  })
})
