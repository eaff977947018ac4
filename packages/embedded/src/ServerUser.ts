/**
 * ServerUser: the operating-system user that runs the PostgreSQL server processes.
 *
 * PostgreSQL refuses to run as root ("root" execution of the PostgreSQL server is not permitted). The kit runs in
 * CI containers as root, so in that case it starts `initdb` and `postgres` as an unprivileged user and hands that
 * user the folders it needs. Without root it is the plain path: the server runs as the current user.
 *
 * **Details**
 *
 * Under root the user is, in order: `SLOTKEEPER_PG_USER` if set, `postgres` (present wherever a distribution
 * package of PostgreSQL was installed), then `nobody` (present on every Linux system; PostgreSQL needs no home
 * folder or shell). uid and gid are looked up with `id`, so users from NSS sources work too.
 */
import { execFileSync } from "node:child_process"
import { Effect, Schema } from "effect"

export class ServerUserError extends Schema.TaggedError<ServerUserError>()("ServerUserError", {
  message: Schema.String
}) {}

export interface ServerUser {
  /** `self` when the kit is not root and the server runs as the current user. */
  readonly kind: "self" | "switched"
  readonly name: string
  readonly uid: number
  readonly gid: number
}

const lookup = (name: string): ServerUser | undefined => {
  try {
    const uid = Number(execFileSync("id", ["-u", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim())
    const gid = Number(execFileSync("id", ["-g", name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim())
    if (!Number.isInteger(uid) || !Number.isInteger(gid) || uid === 0) return undefined
    return { kind: "switched", name, uid, gid }
  } catch {
    return undefined
  }
}

let cached: ServerUser | undefined

/** The user the server must run as, given who this process is. */
export const resolve: Effect.Effect<ServerUser, ServerUserError> = Effect.suspend(() => {
  if (cached !== undefined) return Effect.succeed(cached)
  const uid = process.getuid?.() ?? -1
  if (uid !== 0) {
    cached = { kind: "self", name: process.env.USER ?? String(uid), uid, gid: process.getgid?.() ?? -1 }
    return Effect.succeed(cached)
  }
  const wanted = process.env.SLOTKEEPER_PG_USER
  const candidates = wanted !== undefined && wanted !== "" ? [wanted] : ["postgres", "nobody"]
  for (const name of candidates) {
    const user = lookup(name)
    if (user !== undefined) {
      cached = user
      return Effect.succeed(user)
    }
  }
  return Effect.fail(new ServerUserError({
    message: `This process runs as root and PostgreSQL refuses to; none of the users ${candidates.join(", ")} exists ` +
      `(or it is root). Create an unprivileged user and set SLOTKEEPER_PG_USER to its name.`
  }))
})

/** Spawn options that make a child run as the server user (empty when no switch is needed). */
export const spawnIdentity = (user: ServerUser): { uid?: number; gid?: number } =>
  user.kind === "switched" ? { uid: user.uid, gid: user.gid } : {}
