/**
 * Leftovers: where the kit puts ephemeral servers, and how anything left behind is found and removed.
 *
 * Every ephemeral server lives in `<tmp>/slotkeeper-testkit-<uid>/<run>/<name>-<pid>-<random>/`, where `<run>` is
 * `SLOTKEEPER_TESTKIT_RUN` (set by the test suite's global setup) or `adhoc`, and `<pid>` is the process that
 * created it. A scope that closes removes its folder, so after a test run the run's folder must be empty:
 * `find(run)` lists what is not, with any postmaster still running from it.
 *
 * A test process that was killed (SIGKILL, OOM) cannot run its finalizers. `reapOrphans()` removes folders whose
 * creating process is gone, stopping their servers first; the global setup runs it before every suite.
 */
import { randomBytes } from "node:crypto"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { cmdline, isAlive, signal } from "@slotkeeper/embedded/internal"

export const rootDir = (): string => join(tmpdir(), `slotkeeper-testkit-${process.getuid?.() ?? "u"}`)
export const runId = (): string => process.env.SLOTKEEPER_TESTKIT_RUN ?? "adhoc"

/** A new, unique folder path for a server named `name` (not created). */
export const newServerDir = (name: string): string => {
  const run = join(rootDir(), runId())
  mkdirSync(run, { recursive: true, mode: 0o755 })
  return join(run, `${name.replace(/[^a-zA-Z0-9_]/g, "_")}-${process.pid}-${randomBytes(4).toString("hex")}`)
}

export interface Leftover {
  readonly dir: string
  /** The postmaster still running from that folder, if any. */
  readonly postmasterPid: number | undefined
}

const postmasterOf = (serverDir: string): number | undefined => {
  const dataDir = join(serverDir, "data")
  try {
    const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0])
    const argv = cmdline(pid)
    return argv !== undefined && argv.includes(dataDir) && isAlive(pid) ? pid : undefined
  } catch {
    return undefined
  }
}

const serverDirs = (run?: string): Array<string> => {
  const root = rootDir()
  if (!existsSync(root)) return []
  const runs = run === undefined ? readdirSync(root) : [run]
  return runs.flatMap((r) => {
    const dir = join(root, r)
    return existsSync(dir) ? readdirSync(dir).map((d) => join(dir, d)) : []
  })
}

/** Server folders of a run that still exist, with their running postmaster if any. */
export const find = (run: string = runId()): Array<Leftover> =>
  serverDirs(run).map((dir) => ({ dir, postmasterPid: postmasterOf(dir) }))

/** Stops the leftover's server (immediate shutdown, then SIGKILL) and removes its folder. */
export const remove = async (leftover: Leftover): Promise<void> => {
  const pid = leftover.postmasterPid
  if (pid !== undefined) {
    signal(pid, "SIGQUIT")
    for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50))
    signal(pid, "SIGKILL")
  }
  rmSync(leftover.dir, { recursive: true, force: true })
}

/** Removes server folders (and servers) whose creating process no longer exists. Returns what was removed. */
export const reapOrphans = async (): Promise<Array<Leftover>> => {
  const orphans = serverDirs()
    .filter((dir) => {
      const creator = Number(/-(\d+)-[0-9a-f]+$/.exec(dir)?.[1])
      return Number.isInteger(creator) && !isAlive(creator)
    })
    .map((dir) => ({ dir, postmasterPid: postmasterOf(dir) }))
  for (const o of orphans) await remove(o)
  return orphans
}

/** Removes a run's folder, and the kit's root folder, when they are empty (rmdir refuses non-empty ones). */
export const removeRun = (run: string): void => {
  for (const dir of [join(rootDir(), run), rootDir()]) {
    try {
      rmdirSync(dir)
    } catch {
      // not empty (another run is using it) or already gone
    }
  }
}
