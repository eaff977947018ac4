/**
 * The fidelity oracle: a broad corpus of types and edge values (taken from PostgreSQL's own regression tests) goes
 * through a real replication stream, and every delivered value is turned back into PostgreSQL's text by the inverse
 * of the documented mapping (`Values`' table: what a consumer does) — and PostgreSQL itself casts that text to the
 * column's type and prints it, which must equal its printing of the stored value. PostgreSQL is the judge of
 * "exact", not this file.
 *
 * Three passes per server, each on a stream of its own: plain; with hostile `ALTER DATABASE`/`ALTER ROLE` settings
 * (the lines must not change by a byte); and with `logical_decoding_work_mem = 64kB`, the corpus in one big
 * transaction, so that PostgreSQL streams it in progress and it goes through the spool. And a backfill's read of the
 * same rows (`ChunkReader`, in small chunks, under the hostile settings): the same values as the change lines, byte
 * for byte.
 */
import { PgCluster, type PgServer } from "@slotkeeper/testkit"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted, Stream } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import NodePg from "pg"
import * as ChunkReader from "../src/backfill/ChunkReader.ts"
import * as Connector from "../src/connection/Connector.ts"
import * as StreamOwnership from "../src/ownership/StreamOwnership.ts"
import * as Delivery from "../src/replication/Delivery.ts"
import type { Relation } from "../src/replication/Pgoutput.ts"
import type { ReplicationEvent } from "../src/replication/ReplicationStream.ts"
import { Rows } from "../src/replication/Rows.ts"
import * as TypeCatalog from "../src/replication/TypeCatalog.ts"
import * as Values from "../src/replication/Values.ts"
import { deliveryOptions } from "./delivery-helpers.ts"
import { eventually, fastTiming } from "./ownership-helpers.ts"

/** type -> SQL literals (as they would follow `VALUES (`), NULL included for each type. */
const corpus: ReadonlyArray<readonly [string, ReadonlyArray<string>]> = [
  ["bool", ["true", "false"]],
  ["int2", ["32767", "-32768", "0"]],
  ["int4", ["2147483647", "-2147483648"]],
  ["int8", ["9223372036854775807", "-9223372036854775808"]],
  ["oid", ["4294967295", "0"]],
  ["numeric", ["'NaN'", "'0.1000000000000000000000000001'", "'-12345678901234567890.12345678901234567890'", "'1e-100'", "'0'", "'-0.000'"]],
  ["float4", ["'0.1'", "'-0'", "'NaN'", "'Infinity'", "'-Infinity'", "'3.4028235e+38'", "'1.4e-45'", "'1.1'", "'1e-37'"]],
  ["float8", ["'0.30000000000000004'", "'-0'", "'NaN'", "'Infinity'", "'-Infinity'", "'1.7976931348623157e+308'", "'5e-324'", "'2.2250738585072014e-308'", "'0.1'", "'1e+22'", "'123456789012345680000'"]],
  ["money", ["'1000.00'", "'-92233720368547758.08'", "'0'"]],
  ["text", ["''", "E'multi\\nline\\ttab'", "'quote \"x\" \\ back'", "'😀 é ß'", "'NULL'", "'{\"$f\":\"NaN\"}'", "'{\"$b\":\"AAEC\"}'", "E'\\u2028'"]],
  ["varchar(5)", ["'ab'", "''"]],
  ["char(5)", ["'ab'"]],
  ["name", ["'a name'"]],
  ["bytea", ["'\\x'", "'\\x00ff10'", "E'\\\\000abc'"]],
  ["uuid", ["'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"]],
  ["json", ["'{\"a\":1,\"a\":2}'", "'{\"2\":1,\"1\":2}'", "'12345678901234567890'", "'{\"n\":0.1000000000000000000000000001}'", "'1e400'", "'null'", "'\"s\"'", "'  {\"spaced\" : [ ] }  '", "'{\"$f\":\"NaN\"}'", "'{\"$b\":\"AAEC\"}'"]],
  ["jsonb", ["'{\"a\":1,\"a\":2}'", "'{\"2\":1,\"1\":2}'", "'12345678901234567890'", "'{\"n\":0.1000000000000000000000000001}'", "'1e400'", "'null'", "'\"s\"'", "'{\"$f\":\"NaN\"}'", "'{\"$b\":\"AAEC\"}'", "'-0'"]],
  ["jsonpath", ["'$.a[*] ? (@ > 1)'"]],
  ["xml", ["'<a>x &amp; y</a>'"]],
  ["date", ["'2026-11-21'", "'0044-03-15 BC'", "'4713-01-01 BC'", "'5874897-12-31'", "'infinity'", "'-infinity'", "'10000-01-01'", "'0001-01-01 BC'"]],
  ["time", ["'00:00'", "'23:59:59.999999'", "'24:00:00'"]],
  ["timetz", ["'12:00+05:53:28'", "'00:00:00-15:59'"]],
  ["timestamp", ["'2026-11-21 07:05:00.123456'", "'0044-03-15 12:00:00 BC'", "'294276-12-31 23:59:59.999999'", "'infinity'", "'-infinity'", "'4714-11-24 00:00:00 BC'"]],
  ["timestamptz", ["'2026-11-21 07:05:00.5+05:30'", "'1900-01-01 00:00:00 Asia/Kolkata'", "'0044-03-15 12:00:00+00 BC'", "'infinity'", "'-infinity'", "'10000-01-01 00:00:00+00'", "'2000-01-01 00:00:00.000001+14'"]],
  ["interval", ["'1 day 02:03:04'", "'-178000000 years'", "'1 mon -1 day'", "'00:00:00.000001'", "'P1Y2M3DT4H5M6S'"]],
  ["inet", ["'10.0.0.1/8'", "'::ffff:1.2.3.4'"]],
  ["cidr", ["'10.0.0.0/8'"]],
  ["macaddr", ["'08:00:2b:01:02:03'"]],
  ["macaddr8", ["'08:00:2b:01:02:03:04:05'"]],
  ["point", ["'(1.5,-0)'"]],
  ["line", ["'{1,2,3}'"]],
  ["lseg", ["'[(0,0),(1,1)]'"]],
  ["box", ["'(1,1),(0,0)'"]],
  ["path", ["'[(0,0),(1,1),(2,0)]'"]],
  ["polygon", ["'((0,0),(1,1),(2,0))'"]],
  ["circle", ["'<(0,0),1.5>'"]],
  ["bit(4)", ["B'1010'"]],
  ["varbit", ["B'101'"]],
  ["tsvector", ["'a fat:2 cat'"]],
  ["tsquery", ["'fat & (rat | cat)'"]],
  ["int4range", ["'[1,5)'", "'empty'"]],
  ["numrange", ["'(0.1,NaN)'"]],
  ["tstzrange", ["'[2026-01-01 00:00+00,infinity)'"]],
  ["daterange", ["'[0044-03-15 BC,2026-01-01)'"]],
  ["int4multirange", ["'{[1,3), [5,7)}'"]],
  ["pg_lsn", ["'0/16B3748'"]],
  ["mood", ["'ok'", "'sad'"]],
  ["posint", ["42"]],
  ["label", ["'a label'"]],
  ["pair", ["'(1,\"x,y\")'", "'(,)'"]],
  ["int4[]", ["'{1,NULL,3}'", "'[0:2]={1,2,3}'", "'[-1:0][1:2]={{1,2},{3,4}}'", "'{}'"]],
  ["int8[]", ["'{9223372036854775807}'"]],
  ["float8[]", ["'{-0,NaN,Infinity,-Infinity,0.1}'"]],
  ["float4[]", ["'{-0,1.1}'"]],
  ["text[]", ["'{\"a,b\",\"q\\\"uote\",NULL,\"NULL\",\"\",\"{}\"}'", "'{{a,b},{c,d}}'"]],
  ["jsonb[]", ["ARRAY['{\"a\":1}'::jsonb, 'null'::jsonb, NULL]"]],
  ["json[]", ["ARRAY['{\"a\":1,\"a\":2}'::json]"]],
  ["money[]", ["'{1.50,-2}'"]],
  ["numeric[]", ["'{NaN,1.5}'"]],
  ["bool[]", ["'{t,f,NULL}'"]],
  ["bytea[]", ["ARRAY['\\x00ff'::bytea]"]],
  ["uuid[]", ["'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'"]],
  ["date[]", ["'{0044-03-15 BC,2026-01-01,infinity}'"]],
  ["timestamp[]", ["'{\"0044-03-15 12:00:00 BC\"}'"]],
  ["timestamptz[]", ["'{\"2026-11-21 07:05:00+05:30\",-infinity}'"]],
  ["interval[]", ["'{\"1 day\"}'"]],
  ["inet[]", ["'{10.0.0.1}'"]],
  ["macaddr[]", ["'{08:00:2b:01:02:03}'"]],
  ["point[]", ["'{\"(1,2)\"}'"]],
  ["box[]", ["'{(1,1),(0,0);(2,2),(1,1)}'"]],
  ["int4range[]", ["'{\"[1,5)\",empty}'"]],
  ["mood[]", ["'{ok,sad,NULL}'"]],
  ["posint[]", ["'{1,2}'"]],
  ["pair[]", ["ARRAY['(1,\"x,y\")'::pair, '(2,)'::pair]"]],
  ["char(2)[]", ["'{a,bc}'"]],
  ["bit(2)[]", ["'{10,01}'"]]
]

const setup = [
  "CREATE TYPE mood AS ENUM ('ok', 'sad')",
  "CREATE DOMAIN posint AS int4 CHECK (VALUE > 0)",
  "CREATE DOMAIN label AS text",
  "CREATE TYPE pair AS (a int, b text)"
]

const tableName = (i: number) => `corpus_${i}`
const hostile = "DateStyle = 'SQL, DMY'; IntervalStyle = 'iso_8601'; extra_float_digits = 0; bytea_output = 'escape'; TimeZone = 'Asia/Kolkata'"

/** The inverse of `Values`' table: PostgreSQL's input text for a delivered value of a type mapped by `m`. */
const rebuild = (v: unknown, m: Values.Mapping): string | null => {
  if (v === null) return null
  if (m._tag === "Array") {
    const quote = (s: string) => `"${s.replace(/[\\"]/g, "\\$&")}"`
    const literal = (a: ReadonlyArray<unknown>): string =>
      `{${a.map((e) => Array.isArray(e) ? literal(e) : e === null ? "NULL" : quote(rebuild(e, m.element)!)).join(m.delimiter)}}`
    if (Array.isArray(v)) return literal(v)
    const b = v as Values.BoundedArray
    const dims: Array<number> = []
    for (let level: unknown = b.values; Array.isArray(level); level = level[0]) dims.push(level.length)
    return `${b.lower_bounds.map((lo, i) => `[${lo}:${lo + dims[i]! - 1}]`).join("")}=${literal(b.values)}`
  }
  switch (m.kind) {
    case "bool":
      assert.isBoolean(v)
      return v ? "t" : "f"
    case "int":
      assert.isNumber(v)
      return String(v)
    case "float":
      if (typeof v === "string") {
        assert.include(["NaN", "Infinity", "-Infinity"], v)
        return v
      }
      assert.isNumber(v)
      return Object.is(v, -0) ? "-0" : String(v)
    case "date":
    case "timestamp":
    case "timestamptz": {
      assert.isString(v)
      const m2 = /^([+-]?)(\d{4,})(-.*)$/.exec(v as string)
      if (m2 === null) return v as string // infinity, -infinity
      const year = Number(m2[2]) * (m2[1] === "-" ? -1 : 1)
      const rest = m2[3]!.replace("T", " ")
      return year <= 0 ? `${String(1 - year).padStart(4, "0")}${rest} BC` : `${m2[2]}${rest}`
    }
    case "text":
      assert.isString(v)
      return v as string
  }
}

/** The JSON kind the README's table promises for a value of a type mapped by `m` (not null). */
const promised = (v: unknown, m: Values.Mapping): boolean => {
  if (m._tag === "Array") {
    const values = Array.isArray(v) ? v : (v as Values.BoundedArray).values
    const flat = (a: ReadonlyArray<unknown>): Array<unknown> => a.flatMap((e) => Array.isArray(e) ? flat(e) : [e])
    return Array.isArray(values) && flat(values).every((e) => e === null || promised(e, m.element))
  }
  switch (m.kind) {
    case "bool":
      return typeof v === "boolean"
    case "int":
      return typeof v === "number" && Number.isInteger(v)
    case "float":
      return typeof v === "number" || v === "NaN" || v === "Infinity" || v === "-Infinity"
    default:
      return typeof v === "string"
  }
}

interface Pass {
  /** table -> id -> the value's JSON in the line */
  readonly lines: Map<string, Map<number, string>>
  readonly values: number
  readonly streamed: number
}

/** Starts stream `streamId` (its own publication for all tables), runs `insert`, and collects the corpus' changes. */
const pass = (pg: PgServer.PgServer, streamId: string, insert: Effect.Effect<number, unknown>, expected: number, expectStreamed = false) =>
  Effect.scoped(Effect.gen(function*() {
    yield* pg.query(`CREATE PUBLICATION slotkeeper_${streamId} FOR ALL TABLES`)
    const ownership = yield* StreamOwnership.make({ streamId, instanceId: "a", url: Redacted.make(pg.url), ...fastTiming.advisory })
    const events: Array<ReplicationEvent> = []
    yield* Effect.forkScoped(ownership.supervisor.run(Delivery.run({
      ...deliveryOptions,
      streamId,
      slotPrefix: `slotkeeper_${streamId}`,
      publication: `slotkeeper_${streamId}`,
      url: Redacted.make(pg.url),
      instanceId: "a",
      sql: ownership.sql
    }, (connection) =>
      Stream.runForEach(connection.events, (event) =>
        Effect.andThen(Effect.sync(() => void events.push(event)), event._tag === "Commit" ? connection.acknowledge(event.endLsn) : Effect.void)))))
    yield* eventually(Effect.map(ownership.sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_replication_slots WHERE temporary`, (r) => (r[0]!.n > 0 ? true : undefined)), 30_000, "streaming")
    const offset = yield* insert
    const changes = () => events.filter((e) => e._tag === "Change" && e.table.startsWith("corpus_"))
    yield* eventually(Effect.sync(() => (changes().length >= expected ? true : undefined)), 60_000, `${expected} corpus changes`)
    const lines = new Map<string, Map<number, string>>()
    for (const e of changes()) {
      if (e._tag !== "Change" || e.new === undefined) continue
      const json = e.plainJson ? JSON.stringify(e.new) : Values.rowJson(e.new, e.columns)
      // the whole row as a consumer reads it from the line
      const row = JSON.parse(json) as { id: number; v: unknown }
      const byId = lines.get(e.table) ?? new Map<number, string>()
      byId.set(row.id - offset, Values.valueJson(row.v as Values.Value))
      lines.set(e.table, byId)
      assert.strictEqual(json.indexOf("\"id\""), 1, "columns in the table's order")
    }
    // the slots' statistics arrive asynchronously (the walsender reports them, the stats system takes them later)
    const streamedNow = Effect.map(pg.query<{ n: number }>("SELECT coalesce(sum(stream_txns), 0)::int AS n FROM pg_stat_replication_slots"), (r) => r[0]?.n ?? 0)
    const streamed = expectStreamed
      ? { n: yield* eventually(Effect.map(streamedNow, (n) => (n > 0 ? n : undefined)), 20_000, "the transaction streamed in progress (pg_stat_replication_slots.stream_txns)") }
      : { n: yield* streamedNow }
    return { lines, values: changes().length, streamed: streamed?.n ?? 0 } satisfies Pass
  }))

/** PostgreSQL's verdict on every value of a pass: cast back from the line's value and printed, equal to the stored one. */
const judge = (sql: SqlClient, mappings: ReadonlyArray<Values.Mapping>, result: Pass, offset: number) =>
  Effect.gen(function*() {
    let checked = 0
    const differing: Array<string> = []
    for (let t = 0; t < corpus.length; t++) {
      const [type, literals] = corpus[t]!
      const byId = result.lines.get(tableName(t))
      assert.isDefined(byId, `table ${tableName(t)} (${type}) delivered`)
      const ids: Array<number> = []
      const texts: Array<string | null> = []
      for (let i = 0; i <= literals.length; i++) {
        const line: string | undefined = byId!.get(i)
        assert.isDefined(line, `${type} value ${i} delivered`)
        const value = JSON.parse(line!) as unknown
        if (value !== null && !promised(value, mappings[t]!)) differing.push(`${type} #${i}: ${line} is not what the README promises`)
        ids.push(i + offset)
        texts.push(rebuild(value, mappings[t]!))
      }
      const rows = yield* sql.unsafe<{ id: number; same: boolean; stored: string | null; rebuilt: string | null }>(
        `SELECT c.id, (c.v::text IS NOT DISTINCT FROM (r.txt::${type})::text) AS same, c.v::text AS stored, (r.txt::${type})::text AS rebuilt
           FROM ${tableName(t)} c JOIN unnest($1::int[], $2::text[]) AS r(id, txt) ON r.id = c.id`,
        [ids, texts]
      )
      assert.strictEqual(rows.length, ids.length)
      for (const r of rows) {
        checked++
        if (!r.same) differing.push(`${type} #${r.id - offset}: stored ${r.stored}, rebuilt from the line ${r.rebuilt}`)
      }
    }
    return { checked, differing }
  })

describe.each([14, 18])("Fidelity oracle (real PostgreSQL %i)", (major) => {
  it.live("every value of the corpus can be rebuilt exactly from its line, whatever the database's settings, through the spool too", () =>
    Effect.gen(function*() {
      const pg = yield* PgCluster.make({ major })
      for (const s of setup) yield* pg.query(s)
      for (let t = 0; t < corpus.length; t++) yield* pg.query(`CREATE TABLE ${tableName(t)} (id int PRIMARY KEY, v ${corpus[t]![0]})`)
      yield* pg.query("CREATE TABLE padding (id int PRIMARY KEY, filler text)")
      const [db] = yield* pg.query<{ db: string; me: string }>("SELECT current_database() AS db, current_user AS me")
      const values = corpus.reduce((n, [, l]) => n + l.length + 1, 0)
      const insertAll = (offset: number, inOne: boolean) =>
        Effect.gen(function*() {
          const statements = corpus.flatMap(([, literals], t) =>
            [...literals, "NULL"].map((literal, i) => `INSERT INTO ${tableName(t)} VALUES (${i + offset}, ${literal})`))
          if (inOne) {
            // one transaction well past 64kB of decoded changes: streamed in progress, spooled, replayed at commit
            // (a DO block: one statement, one transaction)
            yield* pg.query(`DO $body$ BEGIN INSERT INTO padding SELECT g + ${offset}, repeat('x', 200) FROM generate_series(1, 2000) g; ${statements.join("; ")}; END $body$`)
          } else {
            for (const s of statements) yield* pg.query(s)
          }
          return offset
        })

      const plain = yield* pass(pg, "plain", insertAll(0, false), values)
      // the mapping of each column's type, from the server (user types through the TypeCatalog)
      const oids = yield* pg.query<{ oid: number }>(
        `SELECT a.atttypid::int AS oid FROM pg_attribute a WHERE a.attname = 'v' AND a.attrelid = ANY($1::regclass[]) ORDER BY array_position($1::regclass[], a.attrelid)`,
        [corpus.map((_, t) => tableName(t))]
      )
      const relation: Relation = { oid: 0, schema: "public", name: "corpus", replicaIdentity: "default", columns: oids.map((o) => ({ name: "v", typeOid: o.oid, typeMod: -1, key: false })) }
      yield* Effect.scoped(Effect.gen(function*() {
        const own = yield* StreamOwnership.make({ streamId: "judge", instanceId: "j", url: Redacted.make(pg.url), ...fastTiming.advisory })
        const types = TypeCatalog.make(own.sql)
        yield* types.learn(relation)
        const mappings = oids.map((o) => types.mapping(o.oid))

        const verdict = yield* judge(own.sql, mappings, plain, 0)
        assert.deepStrictEqual(verdict.differing, [])
        assert.strictEqual(verdict.checked, values)

        // hostile defaults for the database and the role: the lines do not change by a byte
        for (const part of hostile.split("; ")) {
          yield* pg.query(`ALTER DATABASE "${db!.db}" SET ${part}`)
          yield* pg.query(`ALTER ROLE "${db!.me}" SET ${part}`)
        }
        const [seen] = yield* pg.query<{ ds: string }>("SELECT current_setting('DateStyle') AS ds")
        assert.strictEqual(seen?.ds, "SQL, DMY") // the hostile settings are in force for a session that does not pin them
        const hostilePass = yield* pass(pg, "hostile", insertAll(10_000, false), values)
        assert.deepStrictEqual(hostilePass.lines, plain.lines)

        // a backfill's read of the plain pass's rows (ids below 10,000), in chunks of 5, still under the hostile
        // defaults: every value as the change lines have it
        const readLines = new Map<string, Map<number, string>>()
        const [version] = yield* pg.query<{ v: number }>("SELECT current_setting('server_version_num')::int AS v")
        const client = new NodePg.Client(yield* Connector.nodePg(Redacted.make(pg.url), "slotkeeper-fidelity", 10_000))
        yield* Effect.acquireRelease(Effect.promise(() => client.connect()), () => Effect.promise(() => client.end()))
        const rows = new Rows(types)
        let chunks = 0
        for (let t = 0; t < corpus.length; t++) {
          const shape = yield* ChunkReader.describe(own.sql, { publication: "slotkeeper_plain", schema: "public", table: tableName(t), where: "id < 10000", serverVersion: version!.v })
          yield* types.learn(shape.relation)
          let after: ReadonlyArray<string> | undefined
          for (;;) {
            const chunk = yield* ChunkReader.read(client, shape, after, 5, 10_000)
            chunks++
            for (const texts of chunk.rows) {
              const row = rows.build(shape.relation, texts).row as { id: number; v: Values.Value }
              const byId = readLines.get(tableName(t)) ?? new Map<number, string>()
              byId.set(row.id, Values.valueJson(row.v))
              readLines.set(tableName(t), byId)
            }
            if (chunk.rows.length < 5) break
            after = ChunkReader.keyOf(shape, chunk.rows.at(-1)!)
          }
        }
        assert.deepStrictEqual(readLines, plain.lines)
        assert.isAbove(chunks, corpus.length, "tables with more than 5 values read in several chunks")

        // the spool: PostgreSQL streams the transaction in progress
        yield* pg.query("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'")
        yield* pg.query("SELECT pg_reload_conf()")
        // the postmaster reloads asynchronously: wait until a new session has the setting
        yield* eventually(Effect.map(pg.query<{ v: string }>("SELECT current_setting('logical_decoding_work_mem') AS v"), (r) => (r[0]?.v === "64kB" ? true : undefined)), 10_000, "the reload")
        const spooled = yield* pass(pg, "spooled", insertAll(20_000, true), values, true)
        assert.isAbove(spooled.streamed, 0, "the transaction was streamed in progress")
        assert.deepStrictEqual(spooled.lines, plain.lines)
        const spooledVerdict = yield* judge(own.sql, mappings, spooled, 20_000)
        assert.deepStrictEqual(spooledVerdict.differing, [])
        console.log(`fidelity oracle, PostgreSQL ${major}: ${corpus.length} types, ${values} values per pass, 3 passes (plain, hostile settings, spooled) and a backfill's read; ` +
          `${verdict.checked + spooledVerdict.checked} values judged by PostgreSQL, 0 lost, ${verdict.differing.length + spooledVerdict.differing.length} differing; ` +
          `hostile and spooled lines, and the values read by a backfill, identical to plain`)
      }))
    }), 300_000)
})
