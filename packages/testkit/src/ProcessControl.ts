/**
 * ProcessControl: pause and resume a process (SIGSTOP / SIGCONT), for pause scenarios — a garbage-collection pause,
 * a frozen VM, a stopped container — as opposed to a broken network path (`FaultProxy`).
 *
 * A paused process keeps its sockets; its kernel keeps acknowledging TCP traffic, so peers see silence, not a
 * close. Pausing a server backend (its pid from `pg_backend_pid()`) freezes the server side of one session; pausing
 * a client process tests what happens when its lease or heartbeat deadline passes while it is frozen.
 *
 * `paused` is scoped: the process is resumed when the scope closes, also on failure or interruption, so a test can
 * never leave a stopped process behind.
 */
import { Effect, Schema, type Scope } from "effect"
import { isAlive, pollUntil, signal, stateOf } from "@slotkeeper/embedded/internal"

export class ProcessControlError extends Schema.TaggedError<ProcessControlError>()("ProcessControlError", {
  pid: Schema.Number,
  message: Schema.String
}) {}

/**
 * Stops the process and returns once it is stopped: a signal is delivered asynchronously, so `kill` returning does
 * not mean the process has stopped running yet.
 */
export const pause = (pid: number): Effect.Effect<void, ProcessControlError> =>
  Effect.suspend(() =>
    isAlive(pid) && signal(pid, "SIGSTOP")
      ? pollUntil(Effect.sync(() => (stateOf(pid) === "T" || !isAlive(pid) ? true : undefined)), {
        timeoutMs: 5_000,
        intervalMs: 1,
        onTimeout: () => new ProcessControlError({ pid, message: `process ${pid} did not stop within 5 s of SIGSTOP` })
      })
      : Effect.fail(new ProcessControlError({ pid, message: `cannot pause process ${pid}: it does not exist or is not ours to signal` }))
  )

export const resume = (pid: number): Effect.Effect<void> => Effect.sync(() => void signal(pid, "SIGCONT"))

/** Pauses `pid` until the scope closes. */
export const paused = (pid: number): Effect.Effect<void, ProcessControlError, Scope.Scope> =>
  Effect.acquireRelease(pause(pid), () => resume(pid))

/** Runs `effect` while `pid` is paused, resuming it afterwards whatever happens. */
export const whilePaused = <A, E, R>(pid: number, effect: Effect.Effect<A, E, R>) =>
  Effect.scoped(Effect.andThen(paused(pid), effect))

/** Whether the process is stopped (state T in /proc). */
export const isPaused = (pid: number): boolean => stateOf(pid) === "T"
