/**
 * Where a one-transaction reader spent its time before and after the commit arrived: a `--cpu-prof` profile split at
 * the first sample inside the spool's replay, each part summarized by self time. Not part of `npm test`.
 *
 *   WORKLOADS=4 RUNS=1 PROFILE_DIR=/tmp/prof npm run bench -- throughput
 *   node scripts/bench/profile-phases.mjs /tmp/prof/CPU.<the CLI's>.cpuprofile
 */
import { readFileSync } from "node:fs"
const p = JSON.parse(readFileSync(process.argv[2], "utf8"))
const byId = new Map(p.nodes.map((n) => [n.id, n]))
const parent = new Map(); for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const stackHas = (id, name) => { for (let x = id; x !== undefined; x = parent.get(x)) if (byId.get(x).callFrame.functionName === name) return true; return false }
let t = 0; const times = p.samples.map((id, i) => (t += p.timeDeltas[i], [t, id]))
const firstReplay = times.find(([, id]) => stackHas(id, "replay"))?.[0]
const phases = [[0, firstReplay], [firstReplay, Infinity]]
for (const [a, b] of phases) {
  const self = new Map(); let total = 0
  for (const [tt, id] of times) if (tt >= a && tt < b) { const f = byId.get(id).callFrame; const k = f.functionName + " " + f.url.replace(/^.*\//, "") + ":" + f.lineNumber; self.set(k, (self.get(k) ?? 0) + 1); total++ }
  console.log(`phase ${a/1e6}s..${b/1e6}s samples ${total}`)
  for (const [k, v] of [...self].sort((x, y) => y[1] - x[1]).slice(0, 14)) console.log("  ", (100 * v / total).toFixed(1) + "%", k)
}
