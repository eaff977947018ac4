/**
 * Processes: whether a process that left something behind (a spool folder, a lock file) still runs — by pid and by
 * its start time, since pids are reused. Linux reads `/proc`; elsewhere the start time is unknown and the pid decides.
 */
import { readFileSync } from "node:fs"

/** A process's start (clock ticks since boot, `/proc/<pid>/stat` field 22), or `undefined` where it cannot be read. */
export const processStart = (pid: number): string | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // the command name (field 2) is in parentheses and may contain spaces: count the fields after its closing one
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]
  } catch {
    return undefined
  }
}

/** Whether the process `pid` that started at `started` (if known) is still running. */
export const isRunning = (pid: number, started: string | undefined): boolean => {
  try {
    process.kill(pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return false
  }
  const now = processStart(pid)
  return now === undefined || started === undefined || now === started
}
