/**
 * TlsCertificates: a private certificate authority for a test, made with `openssl` — a CA, a server certificate for
 * the names given (as CloudNativePG, RDS or a company CA issue them: not trusted by anyone by default), and client
 * certificates for roles (`cert` authentication) — so that TLS is tested as users run it, against a real server.
 *
 * **Details**: EC P-256 keys (fast to make), valid for two days; everything is written to a fresh folder that is
 * removed when the scope closes. `serverFiles` is what `PgCluster.make({ files, settings })` takes for `ssl=on`.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, type Scope } from "effect"

export interface TlsCertificates {
  /** The folder with `ca.crt`, `server.crt`, `server.key` and `<role>.crt`/`<role>.key` per client. */
  readonly dir: string
  /** The CA's certificate file, for `sslrootcert`. */
  readonly caFile: string
  /** A client's certificate and key files (mode 0600), for `sslcert`/`sslkey`. */
  readonly client: (role: string) => { readonly cert: string; readonly key: string }
  /** The data-folder files and settings of a server with TLS on, its clients' certificates checked against the CA. */
  readonly serverFiles: Readonly<Record<string, string>>
  readonly serverSettings: Readonly<Record<string, string>>
}

const openssl = (dir: string, args: ReadonlyArray<string>) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] })

/** A CA, a server certificate for `serverNames` (DNS names or IP addresses), and client certificates for `clients`. */
export const make = (options: { readonly serverNames: ReadonlyArray<string>; readonly clients?: ReadonlyArray<string> }): Effect.Effect<TlsCertificates, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        const dir = mkdtempSync(join(tmpdir(), "slotkeeper-tls-"))
        const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl(dir, ["req", "-x509", ...key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=slotkeeper test CA"])
        const issue = (name: string, subject: string, extensions: string) => {
          openssl(dir, ["req", ...key, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject])
          writeFileSync(join(dir, `${name}.ext`), extensions)
          openssl(dir, ["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`])
          chmodSync(join(dir, `${name}.key`), 0o600)
        }
        const san = options.serverNames.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",")
        issue("server", `/CN=${options.serverNames[0] ?? "localhost"}`, `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`)
        for (const role of options.clients ?? []) {
          if (!/^[a-z_][a-z0-9_]*$/.test(role)) throw new Error(`not a plain role name: ${role}`)
          issue(role, `/CN=${role}`, "extendedKeyUsage=clientAuth\n")
        }
        const read = (file: string) => readFileSync(join(dir, file), "utf8")
        return {
          dir,
          caFile: join(dir, "ca.crt"),
          client: (role: string) => ({ cert: join(dir, `${role}.crt`), key: join(dir, `${role}.key`) }),
          serverFiles: { "server.crt": read("server.crt"), "server.key": read("server.key"), "root.crt": read("ca.crt") },
          serverSettings: { ssl: "on", ssl_cert_file: "server.crt", ssl_key_file: "server.key", ssl_ca_file: "root.crt" }
        }
      },
      catch: (e) => new Error(`making test certificates with openssl: ${(e as Error).message}`)
    }),
    (c) => Effect.sync(() => rmSync(c.dir, { recursive: true, force: true }))
  )
