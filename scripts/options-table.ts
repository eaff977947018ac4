/**
 * Writes the README's table of `slotkeeper run`'s options from `packages/cli/src/config/RunOptions.ts` (the one list
 * the flags, environment variables and `--config` keys are made from). `RunOptions.test.ts` fails when the README's
 * table differs, so run this after changing an option:
 *
 *   npm run options:table
 */
import { readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { markdown, tableMarkers } from "../packages/cli/src/config/RunOptions.ts"

const readme = join(dirname(fileURLToPath(import.meta.url)), "..", "README.md")
const text = readFileSync(readme, "utf8")
const start = text.indexOf(tableMarkers.start)
const end = text.indexOf(tableMarkers.end)
if (start < 0 || end < start) {
  process.stderr.write(`README.md has no table between "${tableMarkers.start}" and "${tableMarkers.end}": put the two markers where it belongs\n`)
  process.exit(1)
}
const next = text.slice(0, start) + markdown() + text.slice(end + tableMarkers.end.length)
if (next === text) process.stderr.write("README.md: the option table is up to date\n")
else {
  writeFileSync(readme, next)
  process.stderr.write("README.md: the option table was rewritten\n")
}
