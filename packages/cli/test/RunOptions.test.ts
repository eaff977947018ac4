/**
 * The one list of `run`'s options (`RunOptions`) against everything made from it: the README's table, the flags
 * `--help` lists, and the `--config` file's keys.
 */
import { readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import * as RunConfig from "../src/config/RunConfig.ts"
import * as RunOptions from "../src/config/RunOptions.ts"
import { cli } from "./cli-helpers.ts"

const readme = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "README.md"), "utf8")

describe("RunOptions", () => {
  it("the README's option table is the generated one (npm run options:table rewrites it)", () => {
    const start = readme.indexOf(RunOptions.tableMarkers.start)
    const end = readme.indexOf(RunOptions.tableMarkers.end)
    assert.isAtLeast(start, 0, "README.md has no generated option table")
    assert.strictEqual(readme.slice(start, end + RunOptions.tableMarkers.end.length), RunOptions.markdown(), "the README's table is stale: run npm run options:table")
  })

  it.live("slotkeeper run --help lists every option with its environment variable, and nothing else", () =>
    Effect.gen(function*() {
      const r = yield* cli("run", "--help")
      assert.strictEqual(r.code, 0, r.stderr)
      for (const o of RunOptions.runOptions) {
        assert.include(r.stdout, `--${o.flag}`, o.key)
        assert.include(r.stdout, o.env, o.key)
      }
      const listed = [...r.stdout.matchAll(/^\s+(--[a-z-]+)/gm)].map((m) => m[1]!)
      const known = new Set([...RunOptions.runOptions.map((o) => `--${o.flag}`), "--help", "--version", "--log-level", "--completions", "--wizard"])
      assert.deepStrictEqual(listed.filter((f) => !known.has(f)), [], r.stdout)
    }))

  it("the --config file takes exactly the table's keys, each with its kind's type", () => {
    for (const o of RunOptions.runOptions.filter((o) => o.key !== "config")) {
      const value = o.kind === "list" ? [] : o.kind === "port" || o.kind === "count" ? 8080 : o.kind === "choice" ? o.choices![0] : o.kind === "duration" ? "5s" : o.kind === "boolean" ? true : "x"
      const parsed = RunConfig.fromFile("f.json", JSON.stringify({ [o.key]: value }))
      assert.isTrue(Result.isSuccess(parsed), `${o.key}: ${JSON.stringify(parsed)}`)
      const wrong = o.kind === "list" ? "x" : o.kind === "port" || o.kind === "count" ? "8080" : o.kind === "boolean" ? "true" : [1]
      const refused = RunConfig.fromFile("f.json", JSON.stringify({ [o.key]: wrong }))
      assert.isTrue(Result.isFailure(refused) && refused.failure._tag === "ConfigInvalid", `${o.key} took ${JSON.stringify(wrong)}`)
    }
    const unknown = RunConfig.fromFile("f.json", JSON.stringify({ config: "other.json" }))
    assert.isTrue(Result.isFailure(unknown), "a --config file cannot name another")
  })
})
