/**
 * DeliveryCheck: what a consumer received, judged against what was committed — the lost changes, and the
 * duplicates that at-least-once delivery does not allow.
 *
 * At-least-once allows a change to come again only while it was not durably acknowledged. So each delivery is
 * recorded with the end position of its transaction and the *session* (replication connection) it came in; each
 * session starts at a durable position (the checkpoint it resumed from). A change that a session delivers although
 * an earlier delivery of it ended at or below that session's start was acknowledged durably and delivered again: a
 * violation. Redeliveries above the start are the allowed kind and are only counted.
 */

export interface Delivered<K> {
  readonly key: K
  /** The end LSN of the transaction it was delivered in. */
  readonly endLsn: bigint
  readonly session: number
}

export interface Report<K> {
  /** Committed, never delivered. */
  readonly lost: ReadonlyArray<K>
  /** Delivered again after a session resumed from a durable position past an earlier delivery of it. */
  readonly duplicatedAfterAcknowledgement: ReadonlyArray<K>
  /** Delivered again, allowed (never durably acknowledged before). */
  readonly redelivered: number
  readonly ok: boolean
}

export const check = <K>(input: {
  readonly committed: Iterable<K>
  readonly delivered: ReadonlyArray<Delivered<K>>
  /** Where each session resumed: its durable start position. */
  readonly sessionStarts: ReadonlyMap<number, bigint>
}): Report<K> => {
  const first = new Map<K, Delivered<K>>()
  const bySession = new Map<number, Set<K>>()
  const duplicated: Array<K> = []
  let redelivered = 0
  for (const d of input.delivered) {
    const inSession = bySession.get(d.session) ?? new Set<K>()
    bySession.set(d.session, inSession)
    if (inSession.has(d.key)) {
      duplicated.push(d.key) // one connection never sends a change twice
      continue
    }
    inSession.add(d.key)
    const earlier = first.get(d.key)
    if (earlier === undefined) {
      first.set(d.key, d)
      continue
    }
    const start = input.sessionStarts.get(d.session)
    if (start !== undefined && earlier.endLsn <= start) duplicated.push(d.key)
    else redelivered++
  }
  const lost = [...input.committed].filter((k) => !first.has(k))
  return { lost, duplicatedAfterAcknowledgement: duplicated, redelivered, ok: lost.length === 0 && duplicated.length === 0 }
}
