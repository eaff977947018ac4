/**
 * FleetPlacement: which runner each stream of a fleet should run on, from the list of streams and the list of live
 * runners alone — pure, deterministic, balanced to ±1.
 *
 * **Why not the cluster's placement.** `effect/cluster` places a singleton by the hash of its name on a shard, and
 * shards are split evenly over runners — so streams are not: 4 streams over 2 runners can be 4/0, and 6 streams over
 * 2 runners split 3/3 in about a third of random name sets (measured). A fleet of tenant streams wants each runner to
 * carry its share. The cluster is kept for what it is good at — membership: runners register in the control
 * database, heartbeat there, ping each other and mark the dead unhealthy — and every runner computes this same
 * placement from the same membership, so they agree without talking.
 *
 * **Details**
 * - Balanced: with `m` streams over `n` runners every runner gets `floor(m / n)` or `ceil(m / n)` streams.
 * - Sticky: each stream ranks the runners by a hash of (stream, runner) — rendezvous hashing — and takes the first
 *   with room, streams taken in the order of their own hash. A runner joining or leaving moves mostly the streams
 *   that must move (those of the runner that left; a fair share to the one that joined), not a reshuffle (the tests
 *   bound the moves).
 * - Agreement is eventual, never assumed: two runners reading membership a moment apart may both think a stream
 *   theirs (or neither). Placement is a hint; slotkeeper's own lock decides who writes, so a disagreement costs a
 *   standby for a second, never a second writer.
 */

/** 32-bit FNV-1a, then a murmur3 finalizer: the same number on every runner for the same text. */
const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

const byHashThenName = (a: readonly [string, number], b: readonly [string, number]) => (a[1] - b[1]) || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)

/**
 * Each stream's runner (streams and runners are ids; duplicates are ignored). No runner: nothing is placed.
 */
export const assign = (streams: Iterable<string>, runners: Iterable<string>): ReadonlyMap<string, string> => {
  const live = [...new Set(runners)].sort()
  const placed = new Map<string, string>()
  if (live.length === 0) return placed
  const ordered = [...new Set(streams)].map((s) => [s, hash(s)] as const).sort(byHashThenName).map(([s]) => s)
  const base = Math.floor(ordered.length / live.length)
  let extra = ordered.length % live.length
  const load = new Map(live.map((r) => [r, 0]))
  for (const stream of ordered) {
    const ranked = live.map((r) => [r, hash(`${stream}\u0000${r}`)] as const).sort(byHashThenName)
    for (const [runner] of ranked) {
      const n = load.get(runner)!
      if (n < base || (n === base && extra > 0)) {
        if (n === base) extra--
        load.set(runner, n + 1)
        placed.set(stream, runner)
        break
      }
    }
  }
  return placed
}

/** The streams placed on `runner`, in id order. */
export const on = (placement: ReadonlyMap<string, string>, runner: string): ReadonlyArray<string> =>
  [...placement].filter(([, r]) => r === runner).map(([s]) => s).sort()
