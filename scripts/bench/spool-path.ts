/**
 * The spool path alone, in-process, no server: N inserts of (int4, text) in one transaction streamed in progress
 * (protocol 2) go through the `Decoder`, the `Assembler` and the `Spool`, and are replayed at the commit. Prints the
 * time to spool, to replay, rows/s and RSS. Not part of `npm test` or `npm run bench`.
 *
 *   node scripts/toolchain.mjs run scripts/bench/spool-path.ts 1000000
 *   BODY=8000 node scripts/toolchain.mjs run scripts/bench/spool-path.ts 100000
 */
import { Assembler } from "../../packages/core/src/replication/Assembler.ts"
import { Decoder } from "../../packages/core/src/replication/Pgoutput.ts"
import { Spool } from "../../packages/core/src/replication/Spool.ts"
const rows = Number(process.argv[2] ?? 1_000_000)
// BODY=8000: each row's text that long (W4's TOASTed rows)
const body = process.env.BODY === undefined ? undefined : "x".repeat(Number(process.env.BODY))
const msg = (parts: Array<Buffer>) => Buffer.concat(parts)
const u8 = (n: number) => Buffer.from([n])
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b }
const i16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b }
const i32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b }
const u64 = (n: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(n); return b }
const str = (s: string) => Buffer.concat([Buffer.from(s), Buffer.from([0])])
const xid = 777
const relation = msg([Buffer.from("R"), u32(xid), u32(16384), str("public"), str("items"), Buffer.from("d"), i16(2),
  u8(1), str("id"), u32(23), i32(-1), u8(0), str("body"), u32(25), i32(-1)])
const text = (s: string) => { const b = Buffer.from(s); return Buffer.concat([Buffer.from("t"), i32(b.length), b]) }
const insert = (i: number) => msg([Buffer.from("I"), u32(xid), u32(16384), Buffer.from("N"), i16(2), text(String(i)), text(body ?? `row ${i} with some body text`)])
const decoder = new Decoder()
const spool = new Spool()
const assembler = new Assembler(0n, spool)
const t0 = performance.now()
const feed = (b: Buffer) => { for (const _ of assembler.push(decoder.decode(b))) void 0 }
feed(msg([Buffer.from("S"), u32(xid), u8(1)]))
feed(relation)
for (let i = 0; i < rows; i++) feed(insert(i))
feed(msg([Buffer.from("E")]))
const t1 = performance.now()
let n = 0
let bytes = 0
for (const e of assembler.push(decoder.decode(msg([Buffer.from("c"), u32(xid), u8(0), u64(100n), u64(200n), u64(0n)])))) {
  if (e._tag === "Change") { n++; bytes += JSON.stringify(e.new).length }
}
const t2 = performance.now()
console.log(`${n} changes; spool ${(t1 - t0).toFixed(0)} ms, replay ${(t2 - t1).toFixed(0)} ms, total ${(rows / ((t2 - t0) / 1000)).toFixed(0)} rows/s, rss ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`)
spool.close()
