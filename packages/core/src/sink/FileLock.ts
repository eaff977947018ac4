/**
 * FileLock: one writer per output file — `PATH.lock`, held by the owner that writes the file, for its holding period.
 *
 * **Why**: two processes appending to one file interleave their lines. Ownership of the stream already makes two
 * *owners* impossible, but not a deposed owner that does not know it yet (a paused process, a lost lock session)
 * and still has a batch to write. The lock keeps it out while the new owner writes; the epoch on every line (checked
 * when the file is opened) and `assertFresh` before every write keep it out otherwise.
 *
 * **How**: the lock file holds the holder's pid, host, process start and epoch. It is created atomically (`link` of a
 * private file, which fails if the lock exists). A lock whose holder is gone — same host, and no process with that
 * pid and start — is stale and removed; a live holder is waited for (it gives the file up within its own loss
 * deadline), and said once. A holder on another host (a shared volume) cannot be checked: it is waited for too, and
 * the message says which file to remove if that host is gone.
 */
import { linkSync, readFileSync, unlinkSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import type { OwnershipLost } from "../ownership/Ownership.ts"
import * as Processes from "../Processes.ts"
import { Effect, type Scope } from "effect"
import { type Fence, SinkError } from "./Sink.ts"

interface Holder {
  readonly pid: number
  readonly host: string
  /** The process's start (clock ticks since boot, /proc/<pid>/stat field 22), where the system has it. */
  readonly started: string | undefined
  readonly stream: string
  readonly epoch: number
}

const alive = (holder: Holder): boolean | "unknown" =>
  holder.host !== hostname() ? "unknown" : Processes.isRunning(holder.pid, holder.started)

const describeHolder = (h: Holder) => `pid ${h.pid} on ${h.host} (stream ${h.stream}, epoch ${h.epoch})`

/**
 * Takes `path`.lock for `fence`'s holding period: released (removed) when the scope closes. Waits while a live holder
 * has it, checking `assertFresh` at every attempt (a loss ends the wait with `OwnershipLost`).
 */
export const acquire = (path: string, fence: Fence): Effect.Effect<void, SinkError | OwnershipLost, Scope.Scope> => {
  const lockPath = `${path}.lock`
  const own: Holder = { pid: process.pid, host: hostname(), started: Processes.processStart(process.pid), stream: fence.streamId, epoch: fence.epoch }
  const text = JSON.stringify(own)
  const failed = (what: string) => (e: unknown) => new SinkError({ message: `${what} ${lockPath}: ${e instanceof Error ? e.message : String(e)}` })
  let said = false

  const attempt = Effect.try({
    try: (): Holder | undefined => {
      const mine = `${lockPath}.${process.pid}.${Math.random().toString(16).slice(2)}`
      writeFileSync(mine, text)
      try {
        linkSync(mine, lockPath)
        return undefined
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
      } finally {
        unlinkSync(mine)
      }
      let holder: Holder
      try {
        holder = JSON.parse(readFileSync(lockPath, "utf8")) as Holder
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return own // released meanwhile: try again now
        throw e
      }
      if (alive(holder) === false) {
        unlinkSync(lockPath) // stale: its holder is gone
        return own
      }
      return holder
    },
    catch: failed("taking the lock")
  })

  const take: Effect.Effect<void, SinkError | OwnershipLost> = Effect.gen(function*() {
    for (;;) {
      yield* fence.assertFresh
      const holder = yield* attempt
      if (holder === undefined) return
      if (holder === own) continue
      if (!said) {
        said = true
        yield* Effect.logWarning(
          `file ${path} is locked by ${describeHolder(holder)}: waiting for it to let go` +
            (alive(holder) === "unknown" ? ` (a holder on another host cannot be checked; remove ${lockPath} if that host is gone)` : "")
        )
      }
      // nothing is held while waiting: a stream stopped meanwhile (a fleet moving it) stops waiting at once
      yield* Effect.interruptible(Effect.sleep("200 millis"))
    }
  })

  return Effect.acquireRelease(take, () =>
    Effect.sync(() => {
      try {
        const holder = JSON.parse(readFileSync(lockPath, "utf8")) as Holder
        if (holder.pid === own.pid && holder.host === own.host && holder.epoch === own.epoch) unlinkSync(lockPath)
      } catch {
        // already gone
      }
    }))
}
