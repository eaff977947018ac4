/**
 * The `slotkeeper` command line.
 *
 * Today it has the embedded default database (`slotkeeper embedded`); `run`, `status`, `check` and `slots` come
 * with the service (see the issues). Every flag also reads an environment variable, named in `--help`.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Command } from "effect/cli"
import { Effect } from "effect"
import packageJson from "../package.json" with { type: "json" }
import { embedded } from "./commands/embedded.ts"

export const version: string = packageJson.version

export const slotkeeper = Command.make("slotkeeper").pipe(
  Command.withDescription(
    "Exclusive, fenced ownership of a PostgreSQL logical replication stream, shared safely by many instances."
  ),
  Command.withSubcommands([embedded])
)

slotkeeper.pipe(
  Command.run({ version }),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
