/**
 * FleetPlan: which streams this runner starts, and which it stops, when what should run here changes (the fleet's
 * list, or the placement) — pure.
 *
 * **Details**
 * - A stream is known by its id; its `version` is its configuration's text. A stream whose version changed is
 *   stopped, then started again with the new one: a running stream is never left on an
 *   old configuration, and one whose configuration did not change is left alone.
 * - The list is checked whole before it is applied (`FleetConfig`): a list with one bad stream changes nothing.
 */
export interface Entry {
  readonly id: string
  readonly version: string
}

export interface Plan {
  /** Started now: new streams, and changed ones again. In the list's order. */
  readonly start: ReadonlyArray<string>
  /** Stopped now: removed streams, and changed ones (before they start again). */
  readonly stop: ReadonlyArray<string>
}

export const plan = (current: ReadonlyMap<string, string>, desired: ReadonlyArray<Entry>): Plan => {
  const wanted = new Map(desired.map((e) => [e.id, e.version]))
  const stop = [...current].filter(([id, version]) => wanted.get(id) !== version).map(([id]) => id)
  const start = desired.filter((e) => current.get(e.id) !== e.version).map((e) => e.id)
  return { start, stop }
}

/** What decides which streams run on this runner now (see `Fleet`'s module comment). */
export interface Here {
  /** The streams the placement puts on this runner (empty when it is missing from membership). */
  readonly placedHere: ReadonlySet<string>
  /** The streams running here now. */
  readonly running: Iterable<string>
  /** The fleet's current list. */
  readonly listed: ReadonlySet<string>
  /** Whether this runner is in the membership it reads. */
  readonly present: boolean
  /** Whether membership has been unreadable for longer than the expiration. */
  readonly lost: boolean
  readonly now: number
  /** Since when each stream running here has been placed elsewhere, as last decided. */
  readonly elsewhereSince: ReadonlyMap<string, number>
  readonly rebalanceDelayMs: number
}

/**
 * The streams that should run here: those placed here, and those running here that are still listed while
 * membership is not lost — kept, if this runner is missing from membership, or until they have been placed elsewhere
 * for the rebalance delay (counted only while this runner is present). Returns the delay's bookkeeping too.
 */
export const wanted = (input: Here): { readonly mine: ReadonlySet<string>; readonly elsewhereSince: ReadonlyMap<string, number> } => {
  const mine = new Set(input.placedHere)
  const elsewhereSince = new Map<string, number>()
  for (const id of input.running) {
    if (input.placedHere.has(id)) continue
    if (input.present) elsewhereSince.set(id, input.elsewhereSince.get(id) ?? input.now)
    if (!input.listed.has(id) || input.lost) continue
    if (!input.present || input.now - elsewhereSince.get(id)! < input.rebalanceDelayMs) mine.add(id)
  }
  return { mine, elsewhereSince }
}
