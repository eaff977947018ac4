#!/usr/bin/env node
// The `slotkeeper` binary. slotkeeper's sources are TypeScript run with Node's built-in type stripping, which needs
// Node.js >= 22.18; effect 4.1 needs >= 22.19. Say so plainly on an older Node instead of failing on syntax.
const [major, minor] = process.versions.node.split(".").map(Number)
if (major < 22 || (major === 22 && minor < 19)) {
  process.stderr.write(
    `slotkeeper needs Node.js >= 22.19 (this is ${process.version}).\n` +
      `From a checkout, run it through npm, which brings its own Node: npm run slotkeeper -- --help\n`
  )
  process.exit(2)
}
await import("../src/main.ts")
