// Chip identity: creation, reuse, file modes, and refusal of partial or corrupt identities.

import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { CHIP_FILES, ChipError, chipInit, chipLoad, chipShow, LEAF_VALIDITY_DAYS } from "./chip.js";
import { KEY_USAGE } from "./x509.js";

function freshDir(): string {
  return join(mkdtempSync(join(tmpdir(), "tv-chip-")), "chip");
}

test("init creates root and leaf (P-384, X.509 extensions as specified), files 0600, dir 0700; reused later", () => {
  const dir = freshDir();
  const first = chipInit(dir);
  assert.equal(first.action, "created");
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  for (const f of Object.values(CHIP_FILES)) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);

  const { root, leaf } = first.chip;
  assert.equal(root.basicConstraints?.ca, true);
  assert.equal(root.basicConstraints?.critical, true);
  assert.equal(root.keyUsage, KEY_USAGE.keyCertSign | KEY_USAGE.cRLSign);
  assert.equal(leaf.basicConstraints?.ca, false);
  assert.equal(leaf.keyUsage, KEY_USAGE.digitalSignature);
  assert.match(root.subject, /CN=Typervisor Nitro-compatible root/);
  assert.equal(root.signatureAlgorithm, "1.2.840.10045.4.3.3"); // ecdsa-with-SHA384
  assert.equal(root.publicKey.asymmetricKeyDetails?.namedCurve, "secp384r1");
  assert.ok(leaf.notAfter.getTime() - leaf.notBefore.getTime() >= LEAF_VALIDITY_DAYS * 86_400_000);
  // node's own X.509 view agrees: leaf issued by root, root self-issued CA.
  const r = new X509Certificate(readFileSync(join(dir, CHIP_FILES.rootCertPem)));
  const l = new X509Certificate(readFileSync(join(dir, CHIP_FILES.leafCertDer)));
  assert.ok(l.checkIssued(r) && l.verify(r.publicKey) && r.ca && !l.ca);

  const again = chipInit(dir);
  assert.equal(again.action, "reused");
  assert.equal(again.chip.rootFingerprint, first.chip.rootFingerprint);
  const shown = chipShow(dir);
  assert.equal(shown.rootFingerprintSha256, first.chip.rootFingerprint);
  assert.match(shown.rootFingerprintSha256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  assert.equal(shown.rootFingerprintSha256.replace(/:/g, ""), r.fingerprint256.replace(/:/g, ""));
});

function expectChipError(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => e instanceof ChipError && re.test(e.message), `expected ChipError ${re}`);
}

test("a missing file is named; init refuses rather than making a new identity", () => {
  const dir = freshDir();
  const fp = chipInit(dir).chip.rootFingerprint;
  unlinkSync(join(dir, CHIP_FILES.leafKey));
  expectChipError(() => chipLoad(dir), /leaf-key\.pem is missing/);
  expectChipError(() => chipInit(dir), /leaf-key\.pem is missing/);
  expectChipError(() => chipShow(dir), /leaf-key\.pem/);
  unlinkSync(join(dir, CHIP_FILES.rootKey));
  expectChipError(() => chipInit(dir), /root-key\.pem is missing/);
  // Only the root key gone, everything else intact: still a refusal, never a new root.
  const d2 = freshDir();
  chipInit(d2);
  unlinkSync(join(d2, CHIP_FILES.rootCertPem));
  expectChipError(() => chipInit(d2), /root-cert\.pem is missing/);
  assert.ok(fp.length > 0);
});

test("corrupt files are named: garbage key, truncated cert, DER/PEM mismatch, a key the cert does not certify", () => {
  const mk = () => {
    const d = freshDir();
    chipInit(d);
    return d;
  };
  let d = mk();
  writeFileSync(join(d, CHIP_FILES.rootKey), "not a key\n", { mode: 0o600 });
  expectChipError(() => chipInit(d), /root-key\.pem is corrupt/);

  d = mk();
  const pem = readFileSync(join(d, CHIP_FILES.leafCertPem), "utf8");
  writeFileSync(join(d, CHIP_FILES.leafCertPem), pem.slice(0, 200) + "\n-----END CERTIFICATE-----\n");
  expectChipError(() => chipInit(d), /leaf-cert\.pem is corrupt/);

  d = mk();
  const der = readFileSync(join(d, CHIP_FILES.rootCertDer));
  der[der.length - 5] ^= 0xff;
  writeFileSync(join(d, CHIP_FILES.rootCertDer), der);
  expectChipError(() => chipInit(d), /root-cert\.der is corrupt/);

  d = mk();
  const other = generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey.export({ type: "pkcs8", format: "pem" });
  writeFileSync(join(d, CHIP_FILES.leafKey), other);
  expectChipError(() => chipInit(d), /leaf-cert\.pem does not certify the key in leaf-key\.pem/);

  d = mk();
  const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" });
  writeFileSync(join(d, CHIP_FILES.rootKey), p256);
  expectChipError(() => chipInit(d), /root-key\.pem is corrupt: not a P-384/);

  // A leaf from another chip (valid on its own, wrong issuer).
  d = mk();
  const e = mk();
  for (const f of [CHIP_FILES.leafKey, CHIP_FILES.leafCertPem, CHIP_FILES.leafCertDer]) writeFileSync(join(d, f), readFileSync(join(e, f)));
  expectChipError(() => chipInit(d), /leaf-cert\.pem was not signed by the root/);
});

test("loose permissions are refused, for key files and the directory", () => {
  const d = freshDir();
  chipInit(d);
  chmodSync(join(d, CHIP_FILES.rootKey), 0o644);
  expectChipError(() => chipLoad(d), /root-key\.pem has mode 644; it must be 600/);
  chmodSync(join(d, CHIP_FILES.rootKey), 0o600);
  chmodSync(d, 0o755);
  expectChipError(() => chipInit(d), /has mode 755; it must be 700/);
  rmSync(d, { recursive: true });
});

test("an expired leaf is re-issued by the same root on init; an expired root is an error", () => {
  const d = freshDir();
  const past = new Date(Date.now() - (LEAF_VALIDITY_DAYS + 10) * 86_400_000);
  const old = chipInit(d, past);
  assert.ok(old.chip.leaf.notAfter.getTime() < Date.now());
  const now = chipInit(d);
  assert.equal(now.action, "renewed-leaf");
  assert.equal(now.chip.rootFingerprint, old.chip.rootFingerprint);
  assert.ok(now.chip.leaf.notAfter.getTime() > Date.now());
  for (const f of Object.values(CHIP_FILES)) assert.equal(statSync(join(d, f)).mode & 0o777, 0o600, f);
  expectChipError(() => chipInit(d, new Date(Date.now() + 40 * 365 * 86_400_000)), /root certificate .* expired/);
});
