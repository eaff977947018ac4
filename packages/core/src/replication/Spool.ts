/**
 * Spool: the changes of transactions that PostgreSQL streams while they are still in progress (protocol 2), kept on
 * local disk until their commit — so that a consumer only ever sees committed changes, in commit order, and memory
 * stays bounded whatever the transaction's size.
 *
 * **What it guarantees**
 * - Each in-progress transaction has one append-only file, written through one reused buffer of `bufferBytes`, and
 *   read back at commit through another: memory does not grow with the transaction, and nothing is allocated per
 *   change outside the JavaScript heap.
 * - A subtransaction's abort (`Stream Abort` with a subtransaction id) drops its changes at replay; the whole
 *   transaction's abort drops the file. Replay at commit reads the file back in order.
 * - Everything is removed when the spool closes (the connection ended): after a reconnect the server streams the
 *   uncommitted transactions again from their start, so nothing spooled is ever needed twice.
 *
 * - A spool folder left by a process that was killed (SIGKILL, a crash: no `close`) is removed by the next process that
 *   spools: each folder names its owner (pid and process start), and one whose owner no longer runs is stale.
 * - A write that fails (a full disk: ENOSPC) is a `SpoolError` that names the file and what to do.
 *
 * **Details**: a record is `[length u32][subxid u32][tag u32][body]`: the caller's tag and bytes, read back exactly as
 * written — the spool adds no markers to the body, so nothing in it can be mistaken for one (the `Assembler` spools
 * a change as the bytes PostgreSQL sent, tagged with the relation that described them). Replay hands each body out
 * as a view of its read buffer, valid until the next record is read: nothing is allocated per record.
 */
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { isRunning, processStart } from "../Processes.ts"

/** Writing the spool failed (a full disk, a folder that went away): the stream cannot go on. */
export class SpoolError extends Error {
  override readonly name = "SpoolError"
}

const prefix = "slotkeeper-spool-"

/** Removes the spool folders under `base` whose process no longer runs (killed before it could remove them). */
export const removeStale = (base: string = tmpdir()): ReadonlyArray<string> => {
  const removed: Array<string> = []
  let names: Array<string>
  try {
    names = readdirSync(base).filter((n) => n.startsWith(prefix))
  } catch {
    return removed
  }
  for (const name of names) {
    const dir = join(base, name)
    try {
      const owner = JSON.parse(readFileSync(join(dir, "owner.json"), "utf8")) as { pid: number; started?: string }
      if (isRunning(owner.pid, owner.started)) continue
    } catch {
      // no owner file: a folder of an older version, or one being created; removed only once it is a day old
      try {
        if (Date.now() - statSync(dir).mtimeMs < 86_400_000) continue
      } catch {
        continue
      }
    }
    rmSync(dir, { recursive: true, force: true })
    removed.push(dir)
  }
  return removed
}

let staleRemoved = false

/** A record's header: its body's length, its subtransaction, its tag (each a u32). */
const headerBytes = 12

/** A record as replayed: the caller's tag, and its body — a view valid until the next record is read. */
export interface SpooledRecord {
  readonly tag: number
  readonly body: Buffer
}

interface Entry {
  readonly fd: number
  readonly path: string
  readonly abortedSubxids: Set<number>
}

export class Spool {
  private readonly dir: string
  private readonly entries = new Map<number, Entry>()
  private readonly buffer: Buffer
  /** Whose bytes are in `buffer`, and how many. */
  private buffered: { xid: number; bytes: number } | undefined

  constructor(bufferBytes = 1 << 20, base: string = tmpdir()) {
    if (!staleRemoved) {
      staleRemoved = true
      removeStale(base)
    }
    this.dir = this.io(base, () => {
      const dir = mkdtempSync(join(base, prefix))
      writeFileSync(join(dir, "owner.json"), JSON.stringify({ pid: process.pid, started: processStart(process.pid) }))
      return dir
    })
    this.buffer = Buffer.allocUnsafe(bufferBytes)
  }

  /** Runs a file operation on `path`; a failure is a `SpoolError` that names it. */
  private io<A>(path: string, f: () => A): A {
    try {
      return f()
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      throw new SpoolError(
        `spool file ${path}: ${e instanceof Error ? e.message : String(e)}` +
          (code === "ENOSPC" ? " (the spool holds transactions PostgreSQL streams before their commit: free space there, or point TMPDIR at a larger disk)" : "")
      )
    }
  }

  private entry(xid: number): Entry {
    let e = this.entries.get(xid)
    if (e === undefined) {
      const path = join(this.dir, `${xid}.spool`)
      e = { fd: this.io(path, () => openSync(path, "w+")), path, abortedSubxids: new Set() }
      this.entries.set(xid, e)
    }
    return e
  }

  private flush(): void {
    const b = this.buffered
    if (b === undefined) return
    this.buffered = undefined
    const e = this.entries.get(b.xid)
    if (e !== undefined && b.bytes > 0) this.io(e.path, () => writeSync(e.fd, this.buffer, 0, b.bytes))
  }

  /** Appends `body` (a string is written as UTF-8) with the caller's `tag` (a u32) as a change of `subxid` of `xid`. */
  append(xid: number, subxid: number, tag: number, body: Uint8Array | string): void {
    const e = this.entry(xid)
    if (this.buffered !== undefined && this.buffered.xid !== xid) this.flush()
    const length = typeof body === "string" ? Buffer.byteLength(body) : body.byteLength
    if (headerBytes + length > this.buffer.length) {
      // a record larger than the buffer goes straight to the file
      this.flush()
      const header = Buffer.alloc(headerBytes)
      header.writeUInt32BE(length, 0)
      header.writeUInt32BE(subxid >>> 0, 4)
      header.writeUInt32BE(tag >>> 0, 8)
      this.io(e.path, () => {
        writeSync(e.fd, header)
        if (typeof body === "string") writeSync(e.fd, body)
        else writeSync(e.fd, body, 0, length)
      })
      return
    }
    let at = this.buffered?.bytes ?? 0
    if (at + headerBytes + length > this.buffer.length) {
      this.flush()
      at = 0
    }
    this.buffer.writeUInt32BE(length, at)
    this.buffer.writeUInt32BE(subxid >>> 0, at + 4)
    this.buffer.writeUInt32BE(tag >>> 0, at + 8)
    if (typeof body === "string") this.buffer.write(body, at + headerBytes)
    else this.buffer.set(body, at + headerBytes)
    this.buffered = { xid, bytes: at + headerBytes + length }
  }

  /** A subtransaction aborted (or, when `subxid === xid`, the whole transaction). */
  abort(xid: number, subxid: number): void {
    if (subxid === xid) return this.drop(xid)
    this.entries.get(xid)?.abortedSubxids.add(subxid >>> 0)
  }

  /** Whether anything was spooled for `xid`. */
  has(xid: number): boolean {
    return this.entries.has(xid)
  }

  /**
   * The spooled records of `xid`, in order, without those of aborted subtransactions; the file is removed after.
   * Each `body` is a view valid until the next record is read.
   */
  *replay(xid: number): Generator<SpooledRecord> {
    const e = this.entries.get(xid)
    if (e === undefined) return
    if (this.buffered?.xid === xid) this.flush()
    const block = Buffer.allocUnsafe(this.buffer.length)
    let filePosition = 0
    let start = 0
    let end = 0
    try {
      for (;;) {
        if (end - start < headerBytes || end - start < headerBytes + block.readUInt32BE(start)) {
          // move what is left to the front and read more
          block.copy(block, 0, start, end)
          end -= start
          start = 0
          const read = readSync(e.fd, block, end, block.length - end, filePosition)
          filePosition += read
          end += read
          if (end < headerBytes) return
          const length = block.readUInt32BE(0)
          if (headerBytes + length > block.length) {
            // a record larger than the block: read it on its own
            const big = Buffer.alloc(headerBytes + length)
            block.copy(big, 0, 0, end)
            readSync(e.fd, big, end, headerBytes + length - end, filePosition)
            filePosition += headerBytes + length - end
            start = 0
            end = 0
            if (!e.abortedSubxids.has(big.readUInt32BE(4))) yield { tag: big.readUInt32BE(8), body: big.subarray(headerBytes) }
            continue
          }
          if (end < headerBytes + length) return // a torn record cannot happen: the file is ours and written whole
        }
        const length = block.readUInt32BE(start)
        const subxid = block.readUInt32BE(start + 4)
        const tag = block.readUInt32BE(start + 8)
        const body = block.subarray(start + headerBytes, start + headerBytes + length)
        start += headerBytes + length
        if (!e.abortedSubxids.has(subxid)) yield { tag, body }
      }
    } finally {
      this.drop(xid)
    }
  }

  drop(xid: number): void {
    const e = this.entries.get(xid)
    if (e === undefined) return
    if (this.buffered?.xid === xid) this.buffered = undefined
    this.entries.delete(xid)
    closeSync(e.fd)
    rmSync(e.path, { force: true })
  }

  /** Removes everything (the connection ended). */
  close(): void {
    for (const xid of [...this.entries.keys()]) this.drop(xid)
    rmSync(this.dir, { recursive: true, force: true })
  }
}
