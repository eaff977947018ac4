import { PgCluster } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli } from "./cli-helpers.ts"

describe("slotkeeper check (the CLI as a child process, real PostgreSQL 18)", () => {
  it.live("passes a ready server (exit 0); each failure is listed with its fix and exits 1", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major: 18 })
      yield* pg.query("CREATE TABLE items (id int PRIMARY KEY, body text)")
      yield* pg.query("CREATE TABLE nopk (body text)")
      yield* pg.query("CREATE ROLE app LOGIN")
      yield* pg.query("GRANT CREATE ON SCHEMA public TO app")
      yield* pg.query("ALTER TABLE nopk OWNER TO app")
      const ok = yield* cli("check", "--database-url", pg.url, "--table", "items")
      assert.strictEqual(ok.code, 0, ok.stdout + ok.stderr)
      assert.match(ok.stdout, /^ok +wal_level: logical$/m)
      assert.match(ok.stdout, /^ok +table public\.items: replica identity \(id\)$/m)

      const bad = yield* cli("check", "--database-url", pg.urlWith({ user: "app" }), "--table", "items", "--table", "nopk", "--table", "missing", "--json")
      assert.strictEqual(bad.code, 1)
      const report = JSON.parse(bad.stdout) as { ok: boolean; checks: Array<{ name: string; level: string; message: string }> }
      assert.isFalse(report.ok)
      const failed = Object.fromEntries(report.checks.filter((c) => c.level === "error").map((c) => [c.name, c.message]))
      assert.match(failed.role ?? "", /lacks REPLICATION: as an administrator, ALTER ROLE "app" REPLICATION/)
      assert.match(failed.create ?? "", /may not create the publication: GRANT CREATE ON DATABASE/)
      assert.match(failed["table public.nopk"] ?? "", /no replica identity/)
      assert.match(failed["table public.missing"] ?? "", /does not exist/)
      assert.match(failed["table public.items"] ?? "", /owned by postgres/)
    }))
})
