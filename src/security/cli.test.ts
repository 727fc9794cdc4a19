// The security command handlers as src/cli will dispatch to them: exit status, stdout, one-line stderr.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chipCommand, measureCommand, attestCommand, signCommand, EXIT_CHECK_FAILED, EXIT_HOST, EXIT_OK, EXIT_USAGE, type CommandHandler } from "./cli.js";
import { chipLoad, CHIP_FILES } from "./chip.js";
import { chipDocumentSource, createAttestationDocument } from "./attestation.js";
import { measureBoot, toHex } from "./pcr.js";

async function run(h: CommandHandler, argv: string[]) {
  let stdout = "";
  let stderr = "";
  const status = await h(argv, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) } });
  return { status, stdout, stderr };
}
function oneLine(r: { status: number; stderr: string }, status: number, re: RegExp) {
  assert.equal(r.status, status, r.stderr);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
}

const work = mkdtempSync(join(tmpdir(), "tv-seccli-"));
const chipDir = join(work, "chip");
const kernel = join(work, "vmlinux");
writeFileSync(kernel, Buffer.alloc(1000, 7));

test("chip init / show", async () => {
  const a = await run(chipCommand, ["init", "--dir", chipDir, "--json"]);
  assert.equal(a.status, EXIT_OK, a.stderr);
  const j = JSON.parse(a.stdout) as { action: string; rootFingerprintSha256: string };
  assert.equal(j.action, "created");
  const b = await run(chipCommand, ["init", "--dir", chipDir]);
  assert.match(b.stdout, /chip identity reused/);
  const c = await run(chipCommand, ["show", `--dir=${chipDir}`]);
  assert.match(c.stdout, new RegExp(`root SHA-256 fingerprint: ${j.rootFingerprintSha256}`));
  oneLine(await run(chipCommand, ["frobnicate"]), EXIT_USAGE, /usage: typervisor chip init\|show/);
  oneLine(await run(chipCommand, ["show", "--dir", join(work, "nope")]), EXIT_HOST, /no chip identity at .*nope/);
  oneLine(await run(chipCommand, ["show", "--dir", chipDir, "--bogus"]), EXIT_USAGE, /unknown option --bogus/);
});

test("measure: text and --json, bad input is one line with status 2", async () => {
  const t = await run(measureCommand, ["--kernel", kernel, "--cmdline", "a b", "--vm-id", "vm-9"]);
  assert.equal(t.status, EXIT_OK);
  assert.deepEqual(t.stdout.trim().split("\n").map((l) => l.split(" ")[0]), ["PCR0", "PCR1", "PCR2", "PCR4"]);
  const j = JSON.parse((await run(measureCommand, ["--kernel", kernel, "--json"])).stdout) as Record<string, string>;
  assert.deepEqual(Object.keys(j), ["pcr0", "pcr1", "pcr2"]);
  assert.equal(j["pcr0"], toHex(measureBoot({ kernel: readFileSync(kernel), cmdline: "", vmId: "" }).get(0)));
  oneLine(await run(measureCommand, []), EXIT_USAGE, /--kernel FILE is required/);
  oneLine(await run(measureCommand, ["--kernel", join(work, "missing")]), EXIT_USAGE, /cannot read kernel .*missing: no such file/);
  oneLine(await run(measureCommand, ["--kernel"]), EXIT_USAGE, /--kernel needs a value/);
});

test("attest verify: ok, a failed check exits 1 naming it, bad input exits 2", async () => {
  const chip = chipLoad(chipDir);
  const bank = measureBoot({ kernel: readFileSync(kernel), cmdline: "", vmId: "vm" });
  const docPath = join(work, "doc.cose");
  writeFileSync(docPath, createAttestationDocument(chipDocumentSource(chip, "m-1", bank.lockedValues()), { nonce: new Uint8Array([0xab]) }));
  const root = join(chipDir, CHIP_FILES.rootCertPem);
  const ok = await run(attestCommand, ["verify", docPath, "--root", root, "--nonce", "ab", "--pcr", `0=${toHex(bank.get(0))}`, "--max-age", "60"]);
  assert.equal(ok.status, EXIT_OK, ok.stderr);
  assert.match(ok.stdout, /attestation OK: module m-1/);
  const j = await run(attestCommand, ["verify", docPath, "--root", root, "--json"]);
  assert.equal((JSON.parse(j.stdout) as { ok: boolean }).ok, true);
  oneLine(await run(attestCommand, ["verify", docPath, "--root", root, "--nonce", "cd"]), EXIT_CHECK_FAILED, /^typervisor attest: nonce: /);
  oneLine(await run(attestCommand, ["verify", docPath, "--root", root, "--pcr", `1=${"0".repeat(96)}`]), EXIT_CHECK_FAILED, /pcrs: PCR1 is/);
  oneLine(await run(attestCommand, ["verify", docPath, "--root", root, "--pcr", "1=00"]), EXIT_USAGE, /96 hex digits/);
  oneLine(await run(attestCommand, ["verify", docPath, "--root", root, "--nonce", "xyz"]), EXIT_USAGE, /--nonce must be hex/);
  oneLine(await run(attestCommand, ["verify", docPath]), EXIT_USAGE, /--root ROOT\.pem .* is required/);
  oneLine(await run(attestCommand, ["check"]), EXIT_USAGE, /usage: typervisor attest verify/);
});

test("sign and sign verify", async () => {
  const chip = chipLoad(chipDir);
  // Any P-384 key and certificate will do; the chip's leaf pair is handy here.
  const keyPath = join(work, "signer.key");
  writeFileSync(keyPath, chip.leafKey.export({ type: "pkcs8", format: "pem" }));
  const certPath = join(chipDir, CHIP_FILES.leafCertPem);
  const sig = join(work, "image.sig");
  const s = await run(signCommand, ["--kernel", kernel, "--cmdline", "x", "--key", keyPath, "--cert", certPath, "--out", sig]);
  assert.equal(s.status, EXIT_OK, s.stderr);
  const v = await run(signCommand, ["verify", sig, "--kernel", kernel, "--cmdline", "x", "--cert", certPath]);
  assert.equal(v.status, EXIT_OK, v.stderr);
  oneLine(await run(signCommand, ["verify", sig, "--kernel", kernel, "--cmdline", "y", "--cert", certPath]), EXIT_CHECK_FAILED, /pcr0: /);
  oneLine(await run(signCommand, ["--kernel", kernel, "--key", join(chipDir, CHIP_FILES.rootKey), "--cert", certPath, "--out", sig]), EXIT_USAGE, /does not certify the signing key/);
  oneLine(await run(signCommand, ["--kernel", kernel, "--key", keyPath, "--cert", kernel, "--out", sig]), EXIT_USAGE, /not a DER X\.509 certificate/);
});
