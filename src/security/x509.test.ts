import { test } from "node:test";
import assert from "node:assert/strict";
import { KeyUsageFlags } from "@peculiar/asn1-x509";
import { KEY_USAGE } from "./x509.js";

test("KEY_USAGE holds the same bits as @peculiar/asn1-x509's KeyUsageFlags (RFC 5280 §4.2.1.3), name for name", () => {
  const lib = Object.fromEntries(Object.entries(KeyUsageFlags).filter(([, v]) => typeof v === "number"));
  assert.deepEqual({ ...KEY_USAGE }, lib);
});
