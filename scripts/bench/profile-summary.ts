/**
 * Where a reader's time went: a `--cpu-prof` profile summarized by self time — per function and per package (or
 * slotkeeper module) — so a slow workload can be explained.
 *
 *   node scripts/bench/profile-summary.ts FILE.cpuprofile [TOP]
 */
import { readFileSync } from "node:fs"

interface Node {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
}
interface Profile {
  readonly nodes: ReadonlyArray<Node>
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const [file, topText] = process.argv.slice(2)
const profile = JSON.parse(readFileSync(file!, "utf8")) as Profile
const top = Number(topText ?? 25)
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map<number, number>()
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
const total = [...self.values()].reduce((a, b) => a + b, 0)

/** A url as a place: a package under node_modules, a slotkeeper source file, node's own, or the engine. */
const place = (url: string) => {
  if (url === "") return "(engine: GC, idle, native)"
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1]
  if (pkg !== undefined) return pkg
  const own = /packages\/([^/]+\/src\/.+)$/.exec(url)?.[1]
  if (own !== undefined) return own
  return url.startsWith("node:") ? url : url.replace(/^.*\//, "")
}

const functions = new Map<string, number>()
const places = new Map<string, number>()
for (const [id, us] of self) {
  const n = byId.get(id)!
  const fn = `${n.callFrame.functionName || "(anonymous)"} ${place(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`
  functions.set(fn, (functions.get(fn) ?? 0) + us)
  places.set(place(n.callFrame.url), (places.get(place(n.callFrame.url)) ?? 0) + us)
}
const show = (title: string, m: Map<string, number>) => {
  console.log(`\n${title}`)
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${k}`)
}
console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled`)
show("self time by place", places)
show("self time by function", functions)
