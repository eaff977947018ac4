/**
 * A/B of the in-process reader (`Delivery`): this checkout against another one (an older commit), alternating on one
 * server and one workload, each run on a slot of its own made before the workload — so both read the same WAL from the
 * same position. One warm-up run first (the first reader after a workload pays for cold caches). Prints one JSON line
 * per run: wall time, time to the first change, the process's user and system CPU, peak RSS. Not part of `npm test`.
 *
 *   git worktree add /tmp/old 7ff3a04 && mkdir -p /tmp/old/node_modules/@slotkeeper &&
 *     for p in core cli testkit; do ln -s /tmp/old/packages/$p /tmp/old/node_modules/@slotkeeper/$p; done
 *   OTHER=/tmp/old TRIALS=3 WORKLOAD=2 node scripts/toolchain.mjs run scripts/bench/ab.ts
 *
 * `WORKLOAD` 1: ROWS in 100 transactions, 2 (default): ROWS in one transaction, 3: ROWS one-row transactions.
 * `WRAP="perf record -a"` (or `strace -f -c`, `/usr/bin/time -v`) runs each measured reader under that tool, its
 * output in /tmp/ab-<stream>.txt. The worktree resolves its other dependencies through this checkout's node_modules
 * when it is placed under it, or needs its own `npm ci`.
 */
import { spawnSync } from "node:child_process"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { PgCluster } from "@slotkeeper/testkit"

const here = dirname(fileURLToPath(import.meta.url))
const trials = Number(process.env.TRIALS ?? 3)
const rows = Number(process.env.ROWS ?? 1_000_000)
const roots: Record<string, string> = { this: join(here, "..", "..") }
if (process.env.OTHER !== undefined) roots.other = process.env.OTHER
const kinds = Object.keys(roots)

const reader = (root: string, args: ReadonlyArray<string>, wrapped: boolean) => {
  const wrap = wrapped && process.env.WRAP ? [...process.env.WRAP.split(" "), "-o", `/tmp/ab-${args[2]}.txt`] : []
  const command = [...wrap, process.execPath, join(here, "ab-reader.ts"), ...args]
  const r = spawnSync(command[0]!, command.slice(1), { env: { ...process.env, ROOT: root }, encoding: "utf8" })
  if (r.status !== 0) throw new Error(`reader exited with ${r.status}: ${r.stderr}${r.stdout}`)
  return r.stdout.split("\n").find((l) => l.startsWith("{"))
}

const workload = (w: string) =>
  w === "1"
    ? `DO $$ BEGIN FOR t IN 0..99 LOOP INSERT INTO items SELECT g, md5(g::text) FROM generate_series(t * ${rows / 100} + 1, (t + 1) * ${rows / 100}) g; COMMIT; END LOOP; END $$`
    : w === "3"
    ? `DO $$ BEGIN FOR i IN 1..${rows} LOOP INSERT INTO items VALUES (i, md5(i::text)); COMMIT; END LOOP; END $$`
    : `INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, ${rows}) g`

await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const pg = yield* PgCluster.make({ major: 18 })
  yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
  yield* pg.query("CREATE PUBLICATION bench FOR TABLE items")
  const stream = (k: string, i: number) => `${k}_${i}`
  for (let i = 0; i < trials; i++) for (const k of kinds) reader(roots[k]!, ["setup", pg.url, stream(k, i)], false)
  reader(roots.this!, ["setup", pg.url, "warm"], false)
  yield* pg.query(workload(process.env.WORKLOAD ?? "2"))
  const [row] = yield* pg.query<{ lsn: string }>("SELECT pg_current_wal_lsn()::text AS lsn")
  console.log("warm-up", reader(roots.this!, ["run", pg.url, "warm", row!.lsn], false))
  for (let i = 0; i < trials; i++) {
    for (const k of i % 2 === 0 ? kinds : [...kinds].reverse()) console.log(k, reader(roots[k]!, ["run", pg.url, stream(k, i), row!.lsn], true))
  }
})))
