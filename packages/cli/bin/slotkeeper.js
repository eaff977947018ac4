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
