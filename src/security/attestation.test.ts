// Attestation documents: exact Nitro shape, verification by us and by an independent COSE implementation (cose-js,
// whose ECDSA is the `elliptic` package, not node:crypto), and one distinct failure per check.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { generateKeyPairSync } from "node:crypto";
import { decode, encode } from "cbor2";
import { chipInit, LEAF_VALIDITY_DAYS, type Chip } from "./chip.js";
import { measureBoot, toHex } from "./pcr.js";
import { chipDocumentSource, createAttestationDocument, verifyAttestation, MAX_NONCE, MAX_USER_DATA } from "./attestation.js";
import { sign1 } from "./cose.js";
import { createCertificate, derToPem } from "./x509.js";

const require = createRequire(import.meta.url);
const cose = require("cose-js") as {
  sign: { verifySync(msg: Buffer, verifier: { key: { x: Buffer; y: Buffer } }, opts: { defaultType: number }): Buffer; Sign1Tag: number };
};

function newChip(now?: Date): Chip {
  return chipInit(join(mkdtempSync(join(tmpdir(), "tv-att-")), "chip"), now).chip;
}
const chip = newChip();
const bank = measureBoot({ kernel: Buffer.from("kernel"), initrd: Buffer.from("initrd"), cmdline: "console=ttyS0", vmId: "vm-1" });
const nonce = new Uint8Array(Buffer.from("00112233445566778899aabbccddeeff", "hex"));

function makeDoc(c: Chip = chip, now = new Date(), req: Parameters<typeof createAttestationDocument>[1] = { nonce }): Uint8Array {
  return createAttestationDocument(chipDocumentSource(c, "i-typervisor-enc0001", bank.lockedValues()), req, now);
}

test("document shape is exactly Nitro's: untagged COSE_Sign1, {1:-35}, {}, payload fields and types, 96-byte r‖s", () => {
  const doc = makeDoc(chip, new Date(), { nonce, userData: new Uint8Array([1, 2]), publicKey: new Uint8Array([3]) });
  const top = decode(doc, { preferMap: true }) as unknown[];
  assert.ok(Array.isArray(top) && top.length === 4, "untagged 4-element array");
  assert.equal(Buffer.from(top[0] as Uint8Array).toString("hex"), "a1013822", "protected = bstr(CBOR {1: -35})");
  assert.ok(top[1] instanceof Map && top[1].size === 0, "unprotected = {}");
  assert.equal((top[3] as Uint8Array).length, 96, "ES384 signature r‖s");
  const p = decode(top[2] as Uint8Array, { preferMap: true }) as Map<string, unknown>;
  assert.deepEqual([...p.keys()], ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data", "nonce"]);
  assert.equal(p.get("module_id"), "i-typervisor-enc0001");
  assert.equal(p.get("digest"), "SHA384");
  assert.ok(Number.isInteger(p.get("timestamp")) && Math.abs((p.get("timestamp") as number) - Date.now()) < 60_000, "timestamp in ms");
  const pcrs = p.get("pcrs") as Map<number, Uint8Array>;
  assert.deepEqual([...pcrs.keys()], Array.from({ length: 16 }, (_, i) => i), "all locked PCRs, integer keys");
  assert.equal(toHex(pcrs.get(0)!), toHex(bank.get(0)));
  for (const v of pcrs.values()) assert.equal(v.length, 48);
  assert.deepEqual(Buffer.from(p.get("certificate") as Uint8Array), Buffer.from(chip.leaf.der));
  const bundle = p.get("cabundle") as Uint8Array[];
  assert.equal(bundle.length, 1);
  assert.deepEqual(Buffer.from(bundle[0]!), Buffer.from(chip.root.der), "root first");
  assert.deepEqual([...(p.get("nonce") as Uint8Array)], [...nonce]);
  assert.deepEqual([...(p.get("user_data") as Uint8Array)], [1, 2]);
  assert.deepEqual([...(p.get("public_key") as Uint8Array)], [3]);
  // Absent optionals are CBOR null, as the NSM writes them.
  const plainDoc = decode((decode(makeDoc(chip, new Date(), {}), { preferMap: true }) as unknown[])[2] as Uint8Array, { preferMap: true }) as Map<string, unknown>;
  assert.equal(plainDoc.get("nonce"), null);
  assert.equal(plainDoc.get("user_data"), null);
  assert.equal(plainDoc.get("public_key"), null);
});

test("our verifier accepts our chip's document and returns its fields", () => {
  const r = verifyAttestation(makeDoc(), {
    root: derToPem(chip.root.der),
    expectedPcrs: new Map([[0, toHex(bank.get(0)).toUpperCase()], [4, toHex(bank.get(4))]]),
    nonce,
    maxAgeSeconds: 60,
  });
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.document.module_id, "i-typervisor-enc0001");
});

test("an independent COSE implementation (cose-js, elliptic P-384) verifies the document's ES384 signature", () => {
  const doc = makeDoc();
  const jwk = chip.leaf.publicKey.export({ format: "jwk" });
  const key = { x: Buffer.from(jwk.x!, "base64url"), y: Buffer.from(jwk.y!, "base64url") };
  const payload = cose.sign.verifySync(Buffer.from(doc), { key }, { defaultType: cose.sign.Sign1Tag });
  assert.equal((decode(payload, { preferMap: true }) as Map<string, unknown>).get("digest"), "SHA384");
  // And rejects a flipped signature byte.
  const bad = Buffer.from(doc);
  bad[bad.length - 1] ^= 0x01;
  assert.throws(() => cose.sign.verifySync(bad, { key }, { defaultType: cose.sign.Sign1Tag }), /missmatch|mismatch/i);
});

function expectFail(r: ReturnType<typeof verifyAttestation>, check: string, re: RegExp): string {
  assert.equal(r.ok, false, "should fail");
  if (r.ok) return "";
  assert.equal(r.check, check, r.message);
  assert.match(r.message, re);
  return r.message;
}

test("each failure names its check, with its own message", () => {
  const messages = new Set<string>();
  const root = chip.root.der;

  // Flipped signature byte.
  const doc = makeDoc();
  const flipped = Buffer.from(doc);
  flipped[flipped.length - 10] ^= 0x80;
  messages.add(expectFail(verifyAttestation(flipped, { root }), "signature", /ES384 signature does not verify/));

  // Tampered payload (a PCR byte inside the signed payload) also fails the signature.
  const top = decode(doc, { preferMap: true }) as [Uint8Array, Map<never, never>, Uint8Array, Uint8Array];
  const payload = Buffer.from(top[2]);
  payload[payload.length - 3] ^= 0x01;
  const tampered = encode([top[0], top[1], new Uint8Array(payload), top[3]]);
  expectFail(verifyAttestation(tampered, { root }), "signature", /does not verify/);

  // Expired certificate: a chip whose leaf validity ended before now.
  const oldChip = newChip(new Date(Date.now() - (LEAF_VALIDITY_DAYS + 2) * 86_400_000));
  messages.add(expectFail(verifyAttestation(makeDoc(oldChip), { root: oldChip.root.der }), "validity", /signing certificate .* expired on/));
  // Not yet valid (the verifier's clock before the leaf's notBefore).
  expectFail(verifyAttestation(doc, { root, now: new Date(Date.now() - 2 * 86_400_000) }), "validity", /not valid before/);

  // Wrong root: a document from another chip against our pinned root.
  const other = newChip();
  messages.add(expectFail(verifyAttestation(makeDoc(other), { root }), "root", /is not the pinned root/));

  // Wrong nonce; and no nonce when one is expected.
  messages.add(expectFail(verifyAttestation(doc, { root, nonce: new Uint8Array([1, 2, 3]) }), "nonce", /not the expected one/));
  expectFail(verifyAttestation(makeDoc(chip, new Date(), {}), { root, nonce }), "nonce", /carries no nonce/);

  // Replayed old document.
  const old = makeDoc(chip, new Date(Date.now() - 3_600_000));
  messages.add(expectFail(verifyAttestation(old, { root, maxAgeSeconds: 300 }), "freshness", /3600 s old .* replayed or stale/));
  expectFail(verifyAttestation(makeDoc(chip, new Date(Date.now() + 3_600_000)), { root }), "freshness", /in the future/);

  // PCR mismatch; and a PCR the document does not carry.
  messages.add(expectFail(verifyAttestation(doc, { root, expectedPcrs: new Map([[0, "ab".repeat(48)]]) }), "pcrs", /PCR0 is [0-9a-f]{96}, expected (ab){48}/));
  expectFail(verifyAttestation(doc, { root, expectedPcrs: new Map([[20, "00".repeat(48)]]) }), "pcrs", /PCR20 is not in the document/);

  // Malformed COSE: not CBOR, wrong arity, tagged as something else, wrong alg, short signature.
  messages.add(expectFail(verifyAttestation(new Uint8Array([0xff, 0x00]), { root }), "cose", /malformed COSE_Sign1: not CBOR/));
  expectFail(verifyAttestation(encode([top[0], top[1], top[2]]), { root }), "cose", /4-element array/);
  expectFail(verifyAttestation(encode([encode(new Map([[1, -7]])), top[1], top[2], top[3]]), { root }), "cose", /alg -7 is not ES384/);
  expectFail(verifyAttestation(encode([top[0], top[1], top[2], top[3].slice(0, 64)]), { root }), "cose", /96 bytes/);
  expectFail(verifyAttestation(encode([top[0], top[1], null, top[3]]), { root }), "cose", /payload must be a byte string/);

  assert.equal(messages.size, 7, "seven distinct messages");
});

test("document syntax (attestation_process.md §3.2.2) and chain constraints are enforced", () => {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-384" });
  const root = chip.root.der;
  const payload = (fields: Record<string, unknown>) => {
    const base: Record<string, unknown> = {
      module_id: "m", digest: "SHA384", timestamp: Date.now(), pcrs: new Map([[0, new Uint8Array(48)]]),
      certificate: chip.leaf.der, cabundle: [chip.root.der], public_key: null, user_data: null, nonce: null,
    };
    return sign1(encode({ ...base, ...fields }), chip.leafKey);
  };
  expectFail(verifyAttestation(payload({ digest: "SHA256" }), { root }), "document", /digest must be "SHA384"/);
  expectFail(verifyAttestation(payload({ user_data: new Uint8Array(MAX_USER_DATA + 1) }), { root }), "document", /user_data is 513 bytes/);
  expectFail(verifyAttestation(payload({ nonce: new Uint8Array(MAX_NONCE + 1) }), { root }), "document", /nonce is 513 bytes/);
  expectFail(verifyAttestation(payload({ public_key: new Uint8Array(0) }), { root }), "document", /public_key is 0 bytes/);
  expectFail(verifyAttestation(payload({ pcrs: new Map([[32, new Uint8Array(48)]]) }), { root }), "document", /pcrs key 32/);
  expectFail(verifyAttestation(payload({ pcrs: new Map([[1, new Uint8Array(47)]]) }), { root }), "document", /pcrs\[1\]/);
  expectFail(verifyAttestation(payload({ cabundle: [] }), { root }), "document", /cabundle must be a non-empty array/);
  expectFail(verifyAttestation(payload({ module_id: "" }), { root }), "document", /module_id/);
  expectFail(verifyAttestation(payload({ extra: 1 }), { root }), "document", /unknown field extra/);
  assert.ok(verifyAttestation(payload({}), { root }).ok, "the baseline is valid");

  // A leaf that is itself a CA, signed by our root: chain check refuses it as the signer.
  const caLeaf = createCertificate({
    subject: { cn: "rogue" }, publicKey: chip.leaf.publicKey, issuer: { name: { c: "US", o: "Typervisor", ou: "Security chip", cn: "Typervisor Nitro-compatible root" }, publicKey: chip.root.publicKey },
    signingKey: chip.rootKey, notBefore: new Date(Date.now() - 1000), notAfter: new Date(Date.now() + 86_400_000), ca: true,
  });
  expectFail(verifyAttestation(payload({ certificate: caLeaf }), { root }), "chain", /lacks keyUsage digitalSignature|is a CA certificate/);
  // A leaf signed by a key that is not the root's.
  const forged = createCertificate({
    subject: { cn: "forged" }, publicKey: chip.leaf.publicKey, issuer: { name: { c: "US", o: "Typervisor", ou: "Security chip", cn: "Typervisor Nitro-compatible root" }, publicKey: chip.root.publicKey },
    signingKey: privateKey, notBefore: new Date(Date.now() - 1000), notAfter: new Date(Date.now() + 86_400_000), ca: false,
  });
  expectFail(verifyAttestation(payload({ certificate: forged }), { root }), "chain", /signature does not verify with the key of root certificate/);
});
