/**
 * Linux process inspection through /proc: which processes are children of a postmaster, whether a pid is gone.
 * A zombie counts as gone (it holds no resources the next server needs, and its parent will reap it).
 */
import { readdirSync, readFileSync } from "node:fs"

interface ProcStat {
  readonly pid: number
  readonly state: string
  readonly ppid: number
}

const readStat = (pid: number): ProcStat | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses, so split after the last ')'.
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ")
    return { pid, state: rest[0] ?? "?", ppid: Number(rest[1]) }
  } catch {
    return undefined
  }
}

/** The process state letter (R, S, D, T, Z, ...), or undefined when it is gone. */
export const stateOf = (pid: number): string | undefined => readStat(pid)?.state

export const isAlive = (pid: number): boolean => {
  const stat = readStat(pid)
  return stat !== undefined && stat.state !== "Z" && stat.state !== "X"
}

export const allPids = (): Array<number> =>
  readdirSync("/proc").filter((name) => /^\d+$/.test(name)).map(Number)

export const childrenOf = (ppid: number): Array<number> =>
  allPids().filter((pid) => {
    const stat = readStat(pid)
    return stat !== undefined && stat.ppid === ppid && stat.state !== "Z"
  })

/** The command line of a process as its argv, or undefined when it is gone or unreadable. */
export const cmdline = (pid: number): Array<string> | undefined => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s.length > 0)
  } catch {
    return undefined
  }
}

/** The real uid of a process (first field of the Uid: line), or undefined when it is gone. */
export const uidOf = (pid: number): number | undefined => {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Uid:"))
    return line === undefined ? undefined : Number(line.split(/\s+/)[1])
  } catch {
    return undefined
  }
}

export const signal = (pid: number, sig: NodeJS.Signals): boolean => {
  try {
    process.kill(pid, sig)
    return true
  } catch {
    return false
  }
}
