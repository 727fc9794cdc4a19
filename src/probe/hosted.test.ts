// The probe's own virtio drivers (guest/src/virtio.c, rng.c, nsm.c — the C code the guest runs)
// against Typervisor's own virtio-mmio transport and cards, on a host without KVM: the drivers are
// built as a host library (guest/src/hosted.c) and run on this thread; their register accesses go
// to the transport (the vCPU thread's job in a VM), their DMA areas lie in a memfd that each card
// maps itself (guest RAM in a VM), and a QueueNotify write signals the card's eventfd. What KVM
// adds — trapping the accesses, ioeventfd, irqfd — is not here; everything between driver and
// card is.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SharedPcrBank } from "../cards/index.js";
import { chipInit } from "../security/chip.js";
import { measureBoot, toHex, extendValue } from "../security/pcr.js";
import { verifyAttestation } from "../security/attestation.js";
import { findLine } from "./probe-lines.js";
import { runHostedProbe, type HostedRig, type HostedRun } from "./hosted.js";
import { createRequire } from "node:module";

const cose = createRequire(import.meta.url)("cose-js") as {
  sign: { verifySync(msg: Buffer, verifier: { key: { x: Buffer; y: Buffer } }, opts: { defaultType: number }): Buffer; Sign1Tag: number };
};

const MiB = 1 << 20;

/** Runs `testName` hosted over `rig`; everything it started is stopped when the test ends. */
async function runHosted(t: TestContext, testName: string, rig: HostedRig, options = ""): Promise<HostedRun> {
  const r = await runHostedProbe(testName, rig, options);
  t.after(() => r.close());
  return r;
}

function image(t: TestContext, bytes: number, fill = 0): string {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-hosted-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const p = join(dir, "disk.img");
  writeFileSync(p, Buffer.alloc(bytes, fill));
  return p;
}

/** virtio.c pattern(): (byte offset × 0x9E3779B97F4A7C15) XOR seed, one little-endian u64 per 8 bytes. */
function patternAt(off: number, seed: bigint): bigint {
  return BigInt.asUintN(64, (BigInt(off) * 0x9e3779b97f4a7c15n) ^ seed);
}

test("blk-verify: the probe's virtio-blk driver writes, flushes and reads back through our transport and card; the host finds its pattern in the image", { timeout: 60_000 }, async (t) => {
  const img = image(t, 2 * MiB);
  const r = await runHosted(t, "blk-verify", { devices: [{ kind: "blk", config: { path: img, id: "hosted-disk" } }] }, "probe.blk.seed=0x1234");
  const line = findLine(r.lines, "blk-verify");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(line?.fields["ok"], "1");
  assert.equal(line?.fields["mismatch"], "0");
  assert.equal(line?.fields["oob_status"], "1", "a read past the end is IOERR");
  assert.equal(Buffer.from(line!.fields["id_hex"]!, "hex").toString(), "hosted-disk", "GET_ID");
  const bytes = readFileSync(img);
  for (let off = 0; off < bytes.length; off += 8) {
    if (bytes.readBigUInt64LE(off) !== patternAt(off, 0x1234n)) assert.fail(`image byte ${off} is not the probe's pattern`);
  }
  const m = r.cards[0]!.metrics();
  assert.ok(m.requests >= 2 * 32 + 1, `card requests ${m.requests}`);
  assert.ok(m.kicks > 0);
});

test("blk-hostile: bad descriptors of each kind are answered (given back unread) or make the device ask for a reset — never a hang — and a second drive keeps working", { timeout: 90_000 }, async (t) => {
  const r = await runHosted(t, "blk-hostile", {
    devices: [
      { kind: "blk", config: { path: image(t, 64 * 1024), id: "hostile" } },
      { kind: "blk", config: { path: image(t, 64 * 1024), id: "good" } },
    ],
  });
  const cases = Object.fromEntries(r.lines.filter((l) => l.name === "blk-hostile-case").map((l) => [l.fields["case"], l.fields]));
  const summary = findLine(r.lines, "blk-hostile");
  for (const l of r.lines) t.diagnostic(`${l.name} ${Object.entries(l.fields).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(summary?.fields["ok"], "1");
  assert.equal(summary?.fields["recovered"], "1");
  // What our device does with each (virtio 1.2 §2.7): a chain it cannot use is given back with used
  // length 0 and nothing written; a ring it cannot trust any more is DEVICE_NEEDS_RESET.
  const want: Record<string, string> = {
    oob_addr: "answered", huge_len: "answered", zero_len: "answered", loop: "answered", next_oob: "answered",
    wo_header: "answered", ro_status: "answered", bad_head: "reset", avail_jump: "reset",
  };
  for (const [name, outcome] of Object.entries(want)) {
    assert.equal(cases[name]?.["outcome"], outcome, `${name}: ${JSON.stringify(cases[name])}`);
    assert.equal(cases[name]?.["good_device_ok"], "1", name);
  }
  for (const name of ["oob_addr", "huge_len", "loop", "next_oob", "ro_status"]) {
    assert.equal(cases[name]?.["used_len"], "0", `${name} is given back unread`);
    assert.equal(cases[name]?.["status"], "0xff", `${name}: no status byte written`);
  }
  assert.equal(cases["wo_header"]?.["status"], "0x1", "a header the device cannot read is answered IOERR");
  assert.ok(r.cards[0]!.metrics().needsReset >= 2, "the fatal cases were counted");
  assert.equal(r.cards[1]!.metrics().needsReset, 0);
});

for (const path of ["ata", "dom0"] as const) {
  const testName = path === "ata" ? "ata-verify" : "xenblk-verify";
  test(`${testName}: the probe's ${path === "ata" ? "ATA PIO driver against our emulated disk" : "Xen blkfront against our Dom0 back-end process"} writes, flushes and reads back; the host finds its pattern in the image`, { timeout: 90_000 }, async (t) => {
    const img = image(t, 1 * MiB);
    const r = await runHosted(t, testName, { [path]: img }, "probe.blk.seed=0xabc");
    const line = findLine(r.lines, testName);
    assert.equal(r.status, 0, JSON.stringify(r.lines));
    assert.equal(line?.fields["ok"], "1");
    assert.equal(line?.fields["mismatch"], "0");
    const bytes = readFileSync(img);
    for (let off = 0; off < bytes.length; off += 8) {
      if (bytes.readBigUInt64LE(off) !== patternAt(off, 0xabcn)) assert.fail(`image byte ${off} is not the probe's pattern`);
    }
    if (path === "dom0") {
      const m = r.dom0!.metrics();
      assert.ok(m.requests > 0 && m.copiedBytes >= 2 * MiB, `Dom0 answered ${m.requests} requests, copied ${m.copiedBytes} bytes`);
    }
  });
}

test("blk-ro: on a read-only drive the probe's write is refused (IOERR) and the image is unchanged", { timeout: 60_000 }, async (t) => {
  const img = image(t, 64 * 1024, 0x77);
  const before = createHash("sha256").update(readFileSync(img)).digest("hex");
  const r = await runHosted(t, "blk-ro", { devices: [{ kind: "blk", config: { path: img, readOnly: true } }] });
  const line = findLine(r.lines, "blk-ro");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(line?.fields["write_status"], "1");
  assert.equal(line?.fields["unchanged"], "1");
  assert.equal(createHash("sha256").update(readFileSync(img)).digest("hex"), before);
});

test("rng: the probe's virtio-rng driver gets the bytes it asked for from our card, spread over every value", { timeout: 60_000 }, async (t) => {
  const r = await runHosted(t, "rng", { devices: [{ kind: "rng" }] }, "probe.rng.bytes=65536");
  const line = findLine(r.lines, "rng");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(line?.fields["bytes"], "65536");
  assert.equal(r.cards[0]!.metrics().bytes, 65536);
});

test("nsm: the probe's NSM driver extends PCR16 and gets an attestation document that verifies against the chip root, with its nonce and user data", { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-hosted-chip-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { chip } = chipInit(join(dir, "chip"));
  const pcrs = SharedPcrBank.from(measureBoot({ kernel: Buffer.from("hosted kernel"), cmdline: "probe.run=nsm", vmId: "vm-hosted" }));
  const nonce = "00112233445566778899aabbccddeeff";
  const userData = "75736572"; // "user"
  const r = await runHosted(t, "nsm", { devices: [{ kind: "nsm", config: { signer: { chipDir: join(dir, "chip") }, moduleId: "i-hosted-probe", pcrs } }] }, `probe.nsm.nonce=${nonce} probe.nsm.user_data=${userData}`);
  const line = findLine(r.lines, "nsm");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(Buffer.from(line!.fields["module_id_hex"]!, "hex").toString(), "i-hosted-probe");
  // PCR16 as the guest saw it after ExtendPCR("probe-nsm"), and as the host's bank holds it.
  const want = toHex(extendValue(new Uint8Array(48), new TextEncoder().encode("probe-nsm")));
  assert.equal(line?.fields["pcr_hex"], want);
  assert.equal(toHex(pcrs.get(16)), want);
  const doc = new Uint8Array(Buffer.from(line!.fields["attestation_hex"]!, "hex"));
  const v = verifyAttestation(doc, { root: chip.root.der, nonce: new Uint8Array(Buffer.from(nonce, "hex")), expectedPcrs: new Map([[0, toHex(pcrs.get(0))]]) });
  assert.ok(v.ok, v.ok ? "" : `${v.check}: ${v.message}`);
  if (v.ok) {
    assert.equal(v.document.module_id, "i-hosted-probe");
    assert.equal(Buffer.from(v.document.user_data!).toString("hex"), userData);
  }
  // And an independent COSE implementation (cose-js) checks the ES384 signature with the chip's leaf key.
  const jwk = chip.leaf.publicKey.export({ format: "jwk" });
  const key = { x: Buffer.from(jwk.x!, "base64url"), y: Buffer.from(jwk.y!, "base64url") };
  assert.ok(cose.sign.verifySync(Buffer.from(doc), { key }, { defaultType: cose.sign.Sign1Tag }).length > 0);
});
