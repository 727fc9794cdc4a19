// Signed images: COSE_Sign1 over EIF-style PcrInfo for PCR0; PCR8 measures the signer.

import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { decode } from "cbor2";
import { measureBoot, toHex } from "./pcr.js";
import { signImage, verifyImageSignature, ImageSignError } from "./image.js";
import { createCertificate, derToPem } from "./x509.js";

function signer(notAfter = new Date(Date.now() + 86_400_000)) {
  const k = generateKeyPairSync("ec", { namedCurve: "P-384" });
  const cert = createCertificate({
    subject: { cn: "image signer" }, publicKey: k.publicKey, signingKey: k.privateKey,
    notBefore: new Date(Date.now() - 86_400_000 * 2), notAfter, ca: false,
  });
  return { key: k.privateKey, cert };
}

const img = { kernel: Buffer.from("kernel image"), initrd: Buffer.from("rd"), cmdline: "quiet", vmId: "vm" };
const pcr0 = measureBoot(img).get(0);

test("sign then verify; payload is PcrInfo {register_index: 0, register_value: [..]}; PCR8 measures the cert", () => {
  const s = signer();
  const { signature, certificate } = signImage({ pcr0, key: s.key.export({ type: "pkcs8", format: "pem" }) as string, cert: derToPem(s.cert) });
  assert.deepEqual(verifyImageSignature(signature, { pcr0, trustedCert: s.cert }), { ok: true });
  const payload = decode((decode(signature, { preferMap: true }) as Uint8Array[])[2]!, { preferMap: true }) as Map<string, unknown>;
  assert.equal(payload.get("register_index"), 0);
  assert.deepEqual(payload.get("register_value"), [...pcr0]);
  const signedBoot = measureBoot({ ...img, signingCert: certificate });
  assert.notEqual(toHex(signedBoot.get(8)), "00".repeat(48));
  assert.equal(toHex(signedBoot.get(0)), toHex(pcr0), "the signature does not change PCR0");
});

test("verification failures: other image, other signer, flipped byte, expired signer, malformed", () => {
  const s = signer();
  const { signature } = signImage({ pcr0, key: s.key, cert: s.cert });
  const otherPcr0 = measureBoot({ ...img, cmdline: "quiet " }).get(0);
  const r1 = verifyImageSignature(signature, { pcr0: otherPcr0, trustedCert: s.cert });
  assert.ok(!r1.ok && r1.check === "pcr0", JSON.stringify(r1));
  const r2 = verifyImageSignature(signature, { pcr0, trustedCert: signer().cert });
  assert.ok(!r2.ok && r2.check === "signature");
  const bad = Buffer.from(signature);
  bad[bad.length - 1] ^= 1;
  const r3 = verifyImageSignature(bad, { pcr0, trustedCert: s.cert });
  assert.ok(!r3.ok && r3.check === "signature");
  const r4 = verifyImageSignature(signature, { pcr0, trustedCert: s.cert, now: new Date(Date.now() + 10 * 86_400_000) });
  assert.ok(!r4.ok && r4.check === "certificate");
  const r5 = verifyImageSignature(new Uint8Array([0x80]), { pcr0, trustedCert: s.cert });
  assert.ok(!r5.ok && r5.check === "cose");
});

test("signImage refuses a wrong key type, a cert for another key, a wrong-size PCR0", () => {
  const s = signer();
  const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
  assert.throws(() => signImage({ pcr0, key: p256, cert: s.cert }), ImageSignError);
  assert.throws(() => signImage({ pcr0, key: signer().key, cert: s.cert }), /does not certify/);
  assert.throws(() => signImage({ pcr0: new Uint8Array(32), key: s.key, cert: s.cert }), /48 bytes/);
});
