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
