/**
 * Configuration: which instance's table set the publication follows when instances are configured differently — the
 * pure decision, made by an owner when it takes the stream.
 *
 * **Why**: during a rolling deploy the old and the new version run side by side, and ownership may go back and forth
 * between them (a crash, a partition). If each owner made the publication its own set, the publication would flip at
 * every handover, and each flip drops a table's changes until it flips back. So the set of the instance *started
 * last* is kept: a newer deployment (or a rollback, which starts instances anew) takes effect once, and an older
 * instance that takes the stream back leaves it as it is and says so, naming both.
 *
 * **The rule**: the configuration recorded with the publication names its hash and when the instance that applied it
 * started (by the database's clock, so hosts' clocks do not matter). An owner with the same hash changes nothing; one
 * started at or after the recorded instance applies its own (and is recorded); one started before keeps the recorded
 * set.
 */
import { createHash } from "node:crypto"
import type { Checked } from "./Subscription.ts"

/** The configuration the publication was last made to follow. */
export interface Configured {
  readonly hash: string
  readonly instanceId: string
  /** When that instance started, microseconds since the Unix epoch by the database's clock (as text). */
  readonly startedAt: string
  readonly epoch: number
}

/** A stable hash of a set of subscriptions (order does not matter). */
export const hash = (subscriptions: ReadonlyArray<Checked>): string => {
  const canonical = [...subscriptions]
    .map((s) => [s.id, s.schema, s.name, s.columns === undefined ? null : [...s.columns].sort(), s.where ?? null, s.replicaIdentityFull])
    .sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1))
  return createHash("sha256").update(JSON.stringify(canonical)).digest("hex").slice(0, 16)
}

export type Decision =
  | { readonly _tag: "Same" }
  | { readonly _tag: "Apply" }
  /** Started before the instance whose set is in place: keep that set. */
  | { readonly _tag: "Keep"; readonly recorded: Configured }

export const decide = (recorded: Configured | undefined, mine: { readonly hash: string; readonly startedAt: string }): Decision => {
  if (recorded === undefined) return { _tag: "Apply" }
  if (recorded.hash === mine.hash) return { _tag: "Same" }
  return BigInt(mine.startedAt) >= BigInt(recorded.startedAt) ? { _tag: "Apply" } : { _tag: "Keep", recorded }
}

/** What an owner that keeps another instance's set says. */
export const disagreement = (recorded: Configured, mine: { readonly instanceId: string }): string =>
  `instance ${mine.instanceId} is configured with other tables than the publication follows, which instance ${recorded.instanceId} ` +
  `(started later, at ${new Date(Number(BigInt(recorded.startedAt) / 1000n)).toISOString()}, epoch ${recorded.epoch}) set: keeping ` +
  `that set, since the instance started last wins (a rolling deploy in progress?). Give every instance the same tables`
