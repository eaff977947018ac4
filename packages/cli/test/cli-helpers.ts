/**
 * Helpers for the CLI tests: the built `slotkeeper` run as a child process, a free port, and polling waits.
 */
import { spawn } from "node:child_process"
import { createServer } from "node:net"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Wait } from "@slotkeeper/testkit"
import { Effect } from "effect"

export const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "bin", "slotkeeper.js")

/** Runs `slotkeeper ...args` to its end: exit code, stdout, stderr. */
export const cli = (...args: Array<string>) =>
  Effect.promise(() =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
      child.on("exit", (code) => resolve({ code, stdout, stderr }))
    })
  )

export const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })

/** Polls `probe` (an effect) until it gives a value, or dies after `timeoutMs`. */
export const untilEffect = <A, E>(probe: Effect.Effect<A | undefined, E>, timeoutMs: number, what: string) => Wait.eventually(probe, timeoutMs, what, 20)

/** `untilEffect` for a plain function. */
export const until = <A>(probe: () => A | undefined, timeoutMs: number, what: string) => untilEffect(Effect.sync(probe), timeoutMs, what)
