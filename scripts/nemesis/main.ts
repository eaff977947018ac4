/**
 * `npm run nemesis -- --seconds N --seed S [--out FILE]`: slotkeeper under random faults for N seconds (see
 * `engine.ts`), then the verdict as a table; with `--out`, the table is written into FILE (docs/reliability.md) between
 * its markers. Exits 1 when a guarantee was broken (anything lost, phantom, stale, or duplicated beyond the durable
 * position, or rows still missing).
 */
import { readFileSync, writeFileSync } from "node:fs"
import { Effect } from "effect"
import * as Nemesis from "./engine.ts"

const arg = (name: string, fallback: string) => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1]! : fallback
}
const seconds = Number(arg("seconds", "60"))
const seed = Number(arg("seed", String(Date.now() % 1_000_000)))
const out = arg("out", "")
const logDir = arg("logs", "")
if (!Number.isFinite(seconds) || seconds <= 0 || !Number.isInteger(seed)) {
  process.stderr.write("usage: npm run nemesis -- --seconds N --seed S [--out docs/reliability.md]\n")
  process.exit(2)
}

const report = await Effect.runPromise(Nemesis.run({ seconds, seed, log: (line) => process.stderr.write(`${line}\n`), ...(logDir === "" ? {} : { logDir }) }))
const table = Nemesis.table(report)
process.stdout.write(`${table}\n`)
for (const s of report.streams) {
  for (const line of s.exitLines) process.stdout.write(`- ${line}\n`)
  if (s.lost > 0) process.stdout.write(`- ${s.mode}: lost rows ${s.lostIds}\n`)
}
if (out !== "") {
  const begin = "<!-- nemesis:begin -->"
  const end = "<!-- nemesis:end -->"
  const text = readFileSync(out, "utf8")
  const at = text.indexOf(begin)
  const until = text.indexOf(end)
  const block = `${begin}\n${table}\n\nMeasured on ${new Date().toISOString().slice(0, 10)} with \`npm run nemesis -- --seconds ${seconds} --seed ${seed}\`.\n${end}`
  writeFileSync(out, at >= 0 && until > at ? text.slice(0, at) + block + text.slice(until + end.length) : `${text}\n${block}\n`)
}
process.exit(Nemesis.clean(report) ? 0 : 1)
