/**
 * Process-table and real-time helpers shared with `@slotkeeper/testkit` (its leftover check and process control).
 * Not a public API: it may change with any version.
 */
export * from "./processes.ts"
export * from "./realtime.ts"
export * from "./sqlErrorText.ts"
