/**
 * Backfill: a table's existing rows delivered inside the stream, as `read` changes, while the stream goes on — in
 * chunks by key, each placed in the stream where it is exact (`ChunkWindow`), its progress saved by the owner only
 * (`BackfillProgress`), resumable by the next owner.
 *
 * **What it guarantees**
 * - Together with the stream, the sink sees every row: a row present when a chunk was read is emitted as `read`,
 *   unless a newer change of it comes first (then that change carries it); a change committed later follows. A
 *   consumer that applies `read`, `insert` and `update` as "put" and `delete` as "remove" ends with the table.
 * - A `read` line never follows a newer change of its row (see `ChunkWindow` for the proof and its one bound).
 * - No table lock, no pause of the stream: a chunk is one short REPEATABLE READ, READ ONLY transaction on a session of
 *   its own. Memory: at most two chunks (`chunkSize` rows each) — a chunk is read only once the consumer has
 *   acknowledged the one before the last, so a slow sink slows the backfill instead of filling memory.
 * - Progress is saved with a guarded write, and only once the chunk's rows are durable downstream (the connection's
 *   saved position has passed the chunk's watermark). A deposed owner cannot advance it; the next owner — after a
 *   handover, a crash, SIGKILL — resumes after the last chunk saved. The chunk in flight is read again: its rows may
 *   reach the sink twice (at least once; `read` is idempotent).
 *
 * **How it runs**: `attach` runs the stream's backfills on one replication connection, in that connection's scope
 * (owned work: losing ownership or the connection interrupts it, structurally), and returns the connection with the
 * read rows placed in its events. Per chunk: open the chunk's window, read the chunk, hand its rows to the window,
 * write the high watermark (`pg_logical_emit_message(true, 'slotkeeper:backfill:<stream>', <chunk id>)`), and when
 * the stream delivers it, emit the rows the window keeps, in that transaction, after the watermark. A chunk the window
 * cannot place exactly is read again.
 */
import { randomUUID } from "node:crypto"
import { Deferred, Duration, Effect, Fiber, type Redacted, type Scope, Stream } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import type { SqlClient } from "effect/sql/SqlClient"
import pg from "pg"
import * as Connector from "../connection/Connector.ts"
import type * as Lsn from "../Lsn.ts"
import * as StreamMetrics from "../service/StreamMetrics.ts"
import * as StreamId from "../StreamId.ts"
import type { LockBackendError } from "../ownership/LockBackend.ts"
import { Ownership, type OwnershipLost } from "../ownership/Ownership.ts"
import { type ChangeEvent, ReplicationError, type ReplicationEvent, type ReplicationStream, type SchemaEvent } from "../replication/ReplicationStream.ts"
import { Rows } from "../replication/Rows.ts"
import * as TypeCatalog from "../replication/TypeCatalog.ts"
import * as Values from "../replication/Values.ts"
import * as BackfillProgress from "./BackfillProgress.ts"
import * as ChunkReader from "./ChunkReader.ts"
import { type AtHigh, ChunkWindows } from "./ChunkWindow.ts"

export const watermarkPrefix = "slotkeeper:backfill:"

export interface BackfillOptions {
  readonly streamId: string
  /** Names the read session (`slotkeeper:<stream>:<instance>:backfill`). */
  readonly instanceId: string
  /** slotkeeper's schema (its `backfills` table). */
  readonly schema: string
  readonly publication: string
  /** For the read session (never logged). */
  readonly url: Redacted.Redacted
  readonly sql: SqlClient
  /** Rows per chunk (default 10,000): the memory a backfill holds. */
  readonly chunkSize?: number
  /** How often requests are looked for while none runs (default 1 s). */
  readonly pollInterval?: Duration.Input
  /** A chunk's read is cancelled past this (default 60 s). */
  readonly readTimeout?: Duration.Input
  /**
   * Tables backfilled once, when they first appear in the stream (`--snapshot initial`): these, or with
   * `"publication"` every table of the stream's publication — looked for at each poll, so that a table joining it
   * while the stream runs (a new subscription) is backfilled too. "Once" is per stream and table, for ever: a table
   * that was backfilled (or asked for by `slotkeeper backfill`) is not again.
   */
  readonly initial?: ReadonlyArray<{ readonly schema: string; readonly table: string }> | "publication" | undefined
}

/** Where a chunk's watermark was placed: what was emitted, and the end of its transaction. */
interface Placed {
  readonly answer: AtHigh
  readonly endLsn: Lsn.Lsn
}

const keyJson = (names: ReadonlyArray<string>) => (row: Values.Row): string | undefined => {
  let key = ""
  for (const n of names) {
    const v = row[n]
    if (v === undefined) return undefined
    key += `${Values.valueJson(v)},`
  }
  return key
}

/**
 * Runs the stream's backfills on `connection` (see the module comment) and returns it with the rows placed in its
 * events. Everything it starts lives in the current scope: the connection's.
 */
export const attach = (connection: ReplicationStream, options: BackfillOptions): Effect.Effect<ReplicationStream, never, Ownership | Scope.Scope> =>
  Effect.gen(function*() {
    const own = yield* Ownership
    const windows = new ChunkWindows()
    /** Chunks read, by id: what their rows are, for the events. */
    const chunks = new Map<string, { readonly backfill: string; readonly shape: ChunkReader.TableShape; readonly columns: ReadonlyArray<string>; readonly plainJson: boolean; readonly schema: SchemaEvent["columns"] }>()
    // the shape of each table whose read rows this connection placed, as a schema event announced it (see `Assembler`)
    const announced = new Map<string, string>()
    const waiters = new Map<string, Deferred.Deferred<Placed>>()
    const prefix = `${watermarkPrefix}${options.streamId}`
    const decoder = new TextDecoder()

    // The stream's side, pure and synchronous: every change and commit is shown to the windows; at a watermark, the
    // rows its window keeps are placed right after it, in its transaction.
    let placing: { readonly xid: number; readonly id: string; readonly answer: AtHigh; readonly added: number } | undefined
    const place = (events: NonEmptyReadonlyArray<ReplicationEvent>): NonEmptyReadonlyArray<ReplicationEvent> => {
      const out: Array<ReplicationEvent> = []
      for (const event of events) {
        switch (event._tag) {
          case "Change":
            if (windows.openWindows > 0) windows.change({ schema: event.schema, table: event.table, xid: event.xid, new: event.new, old: event.old })
            out.push(event)
            break
          case "Commit":
            windows.commit(event.xid)
            if (placing !== undefined && placing.xid === event.xid) {
              const done = placing
              placing = undefined
              out.push({ ...event, changes: event.changes + done.added })
              const waiter = waiters.get(done.id)
              if (waiter !== undefined) Deferred.doneUnsafe(waiter, Effect.succeed({ answer: done.answer, endLsn: event.endLsn }))
            } else {
              out.push(event)
            }
            break
          case "Message": {
            out.push(event)
            const at = event.transaction
            if (!event.transactional || at === undefined || event.prefix !== prefix) break
            const id = decoder.decode(event.content)
            const answer = windows.high(id)
            const chunk = chunks.get(id)
            chunks.delete(id)
            let added = 0
            if (answer._tag === "Emit" && chunk !== undefined) {
              // the table's shape before its first read row on this connection (and after it changed), as for changes
              const signature = JSON.stringify(chunk.schema)
              const tableKey = `${chunk.shape.schema}.${chunk.shape.table}`
              if (answer.rows.length > 0 && announced.get(tableKey) !== signature) {
                announced.set(tableKey, signature)
                out.push({
                  _tag: "Schema",
                  schema: chunk.shape.schema,
                  table: chunk.shape.table,
                  relationId: chunk.shape.relation.oid,
                  columns: chunk.schema,
                  xid: at.xid,
                  commitLsn: at.commitLsn,
                  commitTime: at.commitTime,
                  seq: at.seq + 1
                })
              }
              for (const row of answer.rows) {
                added++
                const read: ChangeEvent = {
                  _tag: "Change",
                  op: "read",
                  snapshot: chunk.backfill,
                  schema: chunk.shape.schema,
                  table: chunk.shape.table,
                  xid: at.xid,
                  commitLsn: at.commitLsn,
                  commitTime: at.commitTime,
                  seq: at.seq + added,
                  new: row,
                  old: undefined,
                  oldIsKey: false,
                  unchanged: [],
                  columns: chunk.columns,
                  plainJson: chunk.plainJson
                }
                out.push(read)
              }
            }
            // another owner's (or an earlier connection's) watermark: Unknown, nothing placed
            if (answer._tag !== "Unknown") placing = { xid: at.xid, id, answer, added }
            break
          }
          default:
            out.push(event)
        }
      }
      return out as unknown as NonEmptyReadonlyArray<ReplicationEvent> // every event given is in it
    }

    const chunkSize = Math.max(1, Math.trunc(options.chunkSize ?? 10_000))
    const pollInterval = options.pollInterval ?? "1 second"
    const readTimeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.readTimeout ?? "60 seconds"))
    const sql = options.sql
    const progress = BackfillProgress.writer(own, sql, options.schema)

    // What the consumer has acknowledged (written to its sink): a chunk is read only once the one before the last has
    // been, so at most two chunks are held — one being delivered, one read — however far the reading could run ahead
    // of the sink (unbounded, it held 400 MB and spent 40% of its time collecting garbage).
    let acknowledged = 0n
    const ackWaiters = new Set<{ readonly lsn: Lsn.Lsn; readonly done: Deferred.Deferred<void> }>()
    const acknowledge: ReplicationStream["acknowledge"] = (position) =>
      Effect.tap(connection.acknowledge(position), () =>
        Effect.sync(() => {
          if (typeof position !== "bigint" || position <= acknowledged) return
          acknowledged = position
          for (const w of ackWaiters) {
            if (w.lsn <= position) {
              ackWaiters.delete(w)
              Deferred.doneUnsafe(w.done, Effect.void)
            }
          }
        }))
    const acknowledgedAt = (lsn: Lsn.Lsn) =>
      Effect.suspend(() => {
        if (acknowledged >= lsn) return Effect.void
        const w = { lsn, done: Deferred.makeUnsafe<void>() }
        ackWaiters.add(w)
        return Effect.ensuring(Deferred.await(w.done), Effect.sync(() => ackWaiters.delete(w)))
      })

    /** Waits until the connection's saved position has passed `endLsn`: the chunk's rows are durable downstream. */
    const durableAt = (endLsn: Lsn.Lsn) =>
      Effect.gen(function*() {
        while ((yield* connection.durable).lsn < endLsn) yield* Effect.sleep("50 millis")
      })

    /** Places one chunk: its window, its read, its watermark, and where the stream put it. */
    const chunkOnce = (client: pg.Client, rows: Rows, backfill: string, shape: ChunkReader.TableShape, after: ReadonlyArray<string> | undefined) =>
      Effect.gen(function*() {
        const id = `${backfill}.${own.epoch}.${randomUUID().slice(0, 8)}`
        const names = shape.key.map((p) => shape.relation.columns[p]!.name)
        windows.open(id, shape.schema, shape.table, keyJson(names))
        const chunk = yield* ChunkReader.read(client, shape, after, chunkSize, readTimeoutMs).pipe(Effect.onError(() => Effect.sync(() => windows.close(id))))
        const built = chunk.rows.map((texts) => rows.build(shape.relation, texts).row)
        const rowShape = rows.shape(shape.relation)
        windows.loaded(id, chunk.snapshot, built)
        chunks.set(id, {
          backfill,
          shape,
          columns: rowShape.columns,
          plainJson: rowShape.plain && !rowShape.floats,
          schema: shape.relation.columns.map((c) => ({ name: c.name, type: rows.typeName(c.typeOid, c.typeMod), typeOid: c.typeOid, typeModifier: c.typeMod, key: c.key }))
        })
        // the waiter is in place before the watermark is written: the stream may deliver it at once
        const waiter = yield* Deferred.make<Placed>()
        waiters.set(id, waiter)
        const placed = yield* sql.unsafe("SELECT pg_logical_emit_message(true, $1, $2)::text AS lsn", [prefix, id]).pipe(
          Effect.andThen(Deferred.await(waiter)),
          Effect.ensuring(Effect.sync(() => {
            waiters.delete(id)
            chunks.delete(id)
            windows.close(id)
          }))
        )
        return { placed, read: chunk.rows }
      })

    const runOne = (client: pg.Client, rows: Rows, types: TypeCatalog.TypeCatalog, serverVersion: number, b: BackfillProgress.Backfill) =>
      Effect.scoped(Effect.gen(function*() {
        const described = yield* Effect.result(ChunkReader.describe(sql, { publication: options.publication, schema: b.schema, table: b.table, where: b.where, serverVersion }))
        if (described._tag === "Failure") {
          if (described.failure._tag === "BackfillRefused") {
            yield* Effect.logWarning(`stream ${options.streamId}: backfill ${b.id} of ${b.schema}.${b.table} cancelled: ${described.failure.message}`)
            return yield* progress.cancel(b.id, described.failure.message)
          }
          return yield* described.failure
        }
        const shape = described.success
        yield* types.learn(shape.relation)
        const tableName = `${b.schema}.${b.table}`
        const [size] = yield* sql.unsafe<{ n: number }>("SELECT reltuples::float8 AS n FROM pg_class WHERE oid = $1", [shape.relation.oid])
        let savedRows = b.rows
        const report = (running: boolean) => StreamMetrics.backfillProgress(options.streamId, tableName, { savedRows, estimatedRows: size?.n, running })
        // however it ends (done, failed, interrupted by a loss of ownership), it no longer runs here
        yield* Effect.addFinalizer(() => report(false))
        yield* report(true)
        let after = b.lastKey
        yield* Effect.logInfo(`stream ${options.streamId}: backfill ${b.id} of ${b.schema}.${b.table} ${after === undefined ? "starts" : "resumes after the last chunk saved"}`)
        // Chunks placed, not yet saved: saved (as one) once the connection's saved position has passed them. The next
        // chunk is read meanwhile: a backfill does not wait for the stream's saves.
        const unsaved: Array<{ readonly endLsn: Lsn.Lsn; readonly key: ReadonlyArray<string>; readonly rows: number }> = []
        const saveDurable = Effect.gen(function*() {
          const durable = (yield* connection.durable).lsn
          let rows = 0
          let chunks = 0
          let key: ReadonlyArray<string> | undefined
          while (unsaved.length > 0 && unsaved[0]!.endLsn <= durable) {
            const c = unsaved.shift()!
            rows += c.rows
            chunks++
            key = c.key
          }
          if (key === undefined) return
          yield* progress.advance(b.id, key, rows, chunks)
          savedRows += rows
          yield* StreamMetrics.backfilled(options.streamId, tableName, rows)
          yield* report(true)
        })
        let delivering: Lsn.Lsn | undefined
        for (;;) {
          const { placed, read } = yield* chunkOnce(client, rows, b.id, shape, after)
          if (placed.answer._tag !== "Emit") {
            yield* Effect.logDebug(`stream ${options.streamId}: backfill ${b.id}: a chunk is read again (${placed.answer._tag === "Retry" ? placed.answer.reason : "not placed"})`)
            continue
          }
          if (read.length > 0) {
            after = ChunkReader.keyOf(shape, read.at(-1)!)
            unsaved.push({ endLsn: placed.endLsn, key: after, rows: placed.answer.rows.length })
          }
          if (delivering !== undefined) yield* acknowledgedAt(delivering)
          delivering = placed.endLsn
          if (read.length < chunkSize) {
            // the last chunk: everything saved, then done
            yield* durableAt(placed.endLsn)
            yield* saveDurable
            yield* progress.complete(b.id)
            yield* Effect.logInfo(`stream ${options.streamId}: backfill ${b.id} of ${b.schema}.${b.table} done`)
            return
          }
          yield* saveDurable
        }
      }))

    // What a backfill reads with: a session of its own, opened only while a backfill runs (an idle stream has none).
    const readSession = Effect.gen(function*() {
      const config = yield* Connector.nodePg(options.url, StreamId.applicationName(options.streamId, options.instanceId, "backfill"), 10_000)
      return yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const c = new pg.Client(config)
            c.on("error", () => {}) // reported by the query that fails
            await c.connect()
            return c
          },
          catch: (e) => new ChunkReader.BackfillReadError({ message: `connecting the backfill's session: ${e instanceof Error ? e.message : String(e)}`, retryable: true })
        }),
        (c) => Effect.promise(() => c.end().catch(() => undefined))
      )
    })

    // The stream's backfills, oldest first. Without the table (no backfill was ever asked for) there are none: it is
    // created by a request, not here, so that a role that may not create tables streams as before.
    const running = Effect.gen(function*() {
      const [exists] = yield* sql.unsafe<{ ok: boolean }>("SELECT to_regclass($1) IS NOT NULL AS ok", [BackfillProgress.table(options.schema)])
      return exists?.ok ? yield* BackfillProgress.list(sql, options.schema, options.streamId, "running") : []
    })

    // `--snapshot initial`: each table new to the stream asked for once (tables already asked about are not again)
    const asked = new Set<string>()
    let setUp = false
    const askInitial = Effect.gen(function*() {
      const initial = options.initial
      if (initial === undefined) return
      const targets = initial === "publication"
        ? yield* sql.unsafe<{ schema: string; table: string }>("SELECT schemaname AS schema, tablename AS table FROM pg_publication_tables WHERE pubname = $1", [options.publication])
        : initial
      const fresh = targets.filter((t) => !asked.has(JSON.stringify([t.schema, t.table])))
      if (fresh.length === 0) return
      if (!setUp) yield* BackfillProgress.setup(sql, options.schema)
      setUp = true
      for (const t of fresh) {
        if (yield* BackfillProgress.requestOnce(sql, options.schema, options.streamId, { schema: t.schema, table: t.table })) {
          yield* Effect.logInfo(`stream ${options.streamId}: ${t.schema}.${t.table} is new to the stream: its existing rows are backfilled (--snapshot initial)`)
        }
        asked.add(JSON.stringify([t.schema, t.table]))
      }
    })

    const driver = Effect.gen(function*() {
      // the first look fails the connection's work (as before: a role that may not create the table is told at once
      // when it asked for initial snapshots); later looks are warnings
      yield* askInitial
      const [version] = yield* sql.unsafe<{ v: number }>("SELECT current_setting('server_version_num')::int AS v")
      const types = TypeCatalog.make(sql)
      const rows = new Rows(types)
      for (;;) {
        // a failed look is said and tried again at the next poll: it must not cost the stream its connection
        const newTables = yield* Effect.result(askInitial)
        if (newTables._tag === "Failure") yield* Effect.logWarning(`stream ${options.streamId}: looking for tables new to the stream: ${newTables.failure.message}`)
        const found = yield* Effect.result(running)
        if (found._tag === "Failure") yield* Effect.logWarning(`stream ${options.streamId}: looking for backfills: ${found.failure.message}`)
        const list = found._tag === "Success" ? found.success : []
        if (list.length === 0) {
          yield* Effect.sleep(pollInterval)
          continue
        }
        yield* Effect.scoped(Effect.gen(function*() {
          const client = yield* readSession
          for (const b of list) yield* runOne(client, rows, types, version!.v, b)
        }))
      }
    })

    // A failure of the backfill fails the connection's work (it is opened again, and the backfill resumes from the last
    // chunk saved); losing ownership or the connection interrupts it.
    const fiber = yield* Effect.forkScoped(driver.pipe(
      Effect.catch((e): Effect.Effect<never, ReplicationError | OwnershipLost | LockBackendError> =>
        e._tag === "OwnershipLost" || e._tag === "LockBackendError"
          ? Effect.fail(e)
          : Effect.fail(new ReplicationError({ reason: "Ended", message: `backfill of stream ${options.streamId}: ${e.message}` })))
    ))
    return {
      ...connection,
      acknowledge,
      events: Stream.mapArray(connection.events, place).pipe(Stream.merge(Stream.fromEffectDrain(Fiber.join(fiber)), { haltStrategy: "left" }))
    }
  })
