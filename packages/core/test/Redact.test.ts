import { assert, describe, it } from "@effect/vitest"
import * as Redact from "../src/Redact.ts"

describe("Redact (pure)", () => {
  it("never shows a password, in the user part or in the query", () => {
    assert.strictEqual(Redact.url("postgres://app:s3cret@db:5432/orders"), "postgres://app:***@db:5432/orders")
    assert.strictEqual(Redact.url("postgres://db/orders?password=s3cret&sslmode=require"), "postgres://db/orders?password=***&sslmode=require")
    assert.notInclude(Redact.url("not a url s3cret"), "s3cret")
  })

  it("text: in any text, even a URL too malformed to parse, the password and secret parameters are replaced", () => {
    assert.strictEqual(Redact.text(`--sink: "http://ingest:hunter2@bad host/x" is not a URL`), `--sink: "http://ingest:***@bad host/x" is not a URL`)
    assert.strictEqual(Redact.text("postgres://app:p@ss:word@db/x?sslpassword=abc&sslmode=require"), "postgres://app:***@db/x?sslpassword=***&sslmode=require")
    assert.strictEqual(Redact.text("nothing secret in http://host/path?x=1"), "nothing secret in http://host/path?x=1")
    // libpq's keyword form, the secret first, quoted with spaces, or spaced around "="
    assert.strictEqual(Redact.text("password=hunter2 host=db"), "password=*** host=db")
    assert.strictEqual(Redact.text("host=db password='it\\'s a secret' dbname=x"), "host=db password=*** dbname=x")
    assert.strictEqual(Redact.text("host=db sslpassword = abc user=u"), "host=db sslpassword = *** user=u")
  })
})
