/**
 * Spool: the changes of transactions that PostgreSQL streams while they are still in progress (protocol 2), kept on
 * local disk until their commit — so that a consumer only ever sees committed changes, in commit order, and memory
 * stays bounded whatever the transaction's size.
 *
 * **What it guarantees**
 * - Each in-progress transaction has one append-only file; at most `bufferBytes` of it is in memory at a time.
 * - A subtransaction's abort (`Stream Abort` with a subtransaction id) drops its changes at replay; the whole
 *   transaction's abort drops the file. Replay at commit reads the file back in order, in chunks.
 * - Everything is removed when the spool closes (the connection ended): after a reconnect the server streams the
 *   uncommitted transactions again from their start, so nothing spooled is ever needed twice.
 */
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { deserialize, serialize } from "node:v8"

interface Entry {
  readonly fd: number
  readonly path: string
  chunks: Array<Buffer>
  buffered: number
  readonly abortedSubxids: Set<number>
}

export class Spool {
  private readonly dir: string
  private readonly entries = new Map<number, Entry>()
  private readonly bufferBytes: number

  constructor(bufferBytes = 1 << 20) {
    this.dir = mkdtempSync(join(tmpdir(), "slotkeeper-spool-"))
    this.bufferBytes = bufferBytes
  }

  private entry(xid: number): Entry {
    let e = this.entries.get(xid)
    if (e === undefined) {
      const path = join(this.dir, `${xid}.spool`)
      e = { fd: openSync(path, "w+"), path, chunks: [], buffered: 0, abortedSubxids: new Set() }
      this.entries.set(xid, e)
    }
    return e
  }

  private flush(e: Entry) {
    if (e.buffered === 0) return
    writeSync(e.fd, Buffer.concat(e.chunks))
    e.chunks = []
    e.buffered = 0
  }

  /** Appends `value` (structured-clonable) as a change of subtransaction `subxid` of transaction `xid`. */
  append(xid: number, subxid: number, value: unknown): void {
    const e = this.entry(xid)
    const body = serialize(value)
    const header = Buffer.alloc(8)
    header.writeUInt32BE(body.length, 0)
    header.writeUInt32BE(subxid >>> 0, 4)
    e.chunks.push(header, body)
    e.buffered += 8 + body.length
    if (e.buffered >= this.bufferBytes) this.flush(e)
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

  /** The spooled changes of `xid`, in order, without those of aborted subtransactions; the file is removed after. */
  *replay(xid: number): Generator<unknown> {
    const e = this.entries.get(xid)
    if (e === undefined) return
    this.flush(e)
    const header = Buffer.alloc(8)
    let position = 0
    try {
      for (;;) {
        if (readSync(e.fd, header, 0, 8, position) < 8) return
        const length = header.readUInt32BE(0)
        const subxid = header.readUInt32BE(4)
        const body = Buffer.alloc(length)
        readSync(e.fd, body, 0, length, position + 8)
        position += 8 + length
        if (!e.abortedSubxids.has(subxid)) yield deserialize(body)
      }
    } finally {
      this.drop(xid)
    }
  }

  drop(xid: number): void {
    const e = this.entries.get(xid)
    if (e === undefined) return
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
