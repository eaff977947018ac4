#!/usr/bin/env node
// The `slotkeeper` binary. effect 4.1 needs Node.js >= 22.19: say so plainly on an older Node instead of failing on
// syntax. It loads the package's own entry by name: an installed package resolves to its built `dist/`, and inside
// the workspace (where the toolchain sets `--conditions=source`) to the TypeScript sources.
const [major, minor] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `slotkeeper needs Node.js >= 22.19 (this is ${process.version}).\n` +
      `From a checkout, run it through npm, which brings its own Node: npm run slotkeeper -- --help\n`
  )
  process.exit(2)
}
// Memory. Node's heap defaults favour a short-lived process: the old generation may grow to several times the live
// data before it is collected, and the young generation to tens of MB. A long-running stream that allocates a lot
// per change would sit at 400+ MB although little of it is live (measured: peak RSS 424-477 MB on one 1M-row
// transaction). The old generation is let grow only half again over the live data, and the young generation keeps
// its initial size: the same transaction peaks under 200 MB, at the same speed (docs/benchmarks.md). Both are read
// by the collector as it runs, so they take effect although set after start-up (a heap *limit* would not, and would
// crash on one large value). SLOTKEEPER_V8_FLAGS replaces them ("" keeps Node's defaults).
// They are set before the modules load: set after, the young generation has already grown while loading and stays
// that size (measured: 208 instead of 151 MB on one 1M-row transaction, 256 instead of 196 MB on a 1 GB one); set
// before, loading pays about 80 ms more in collections.
//
// Start-up: Node's on-disk compile cache (its default folder under the system's temporary one) spares recompiling
// every module at each start; where it cannot be used, nothing changes.
const { setFlagsFromString } = await import("node:v8")
setFlagsFromString(process.env.SLOTKEEPER_V8_FLAGS ?? "--heap-growing-percent=50 --semi-space-growth-factor=1")
const { enableCompileCache } = await import("node:module")
try {
  enableCompileCache?.()
} catch {
  // a cache that cannot be written is only slower
}
let entry
try {
  entry = await import("@slotkeeper/cli")
} catch (e) {
  // a checkout run without the toolchain: neither built nor resolved to the sources
  if (e?.code !== "ERR_MODULE_NOT_FOUND" || !String(e.message).includes("dist")) throw e
  process.stderr.write("slotkeeper: this checkout is not built: run it with `npm run slotkeeper -- ...` (from the sources), or `npm run build` first\n")
  process.exit(2)
}
entry.main()
