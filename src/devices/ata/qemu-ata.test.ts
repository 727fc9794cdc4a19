// The probe guest's ATA PIO driver (guest/src/ata.c) against QEMU's own ISA IDE controller on
// microvm (`-device isa-ide` + `ide-hd`, TCG without /dev/kvm). This verifies the guest side
// against an independent ATA implementation; our device model (device.ts) is verified by
// ata.test.ts with a TypeScript driver making the same register accesses, and against this
// guest only once a VMM with KVM runs it.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { qemuProbeSkipReason, runProbeInQemu } from "../../probe/qemu.js";
import { hexToString, type ProbeLine } from "../../probe/probe-lines.js";

const TIMEOUT_MS = 90_000;

const skipReason = qemuProbeSkipReason;

async function runQemu(cmdline: string, extra: string[]): Promise<{ out: string; code: number | null; lines: ProbeLine[] }> {
  const r = await runProbeInQemu({ cmdline, extraArgs: extra, timeoutMs: TIMEOUT_MS - 5_000 });
  return { out: r.stdout + r.stderr, code: r.exitCode, lines: r.lines };
}

const ide = (file: string) => ["-device", "isa-ide", "-drive", `if=none,id=d0,file=${file},format=raw`, "-device", "ide-hd,drive=d0,bus=ide.0,model=ProbeDisk"];
const pattern = (bytes: number, seed: bigint) => {
  const b = Buffer.alloc(bytes);
  for (let o = 0; o < bytes; o += 8) b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(o) * 0x9e3779b97f4a7c15n) ^ seed, o);
  return b;
};

function tmp(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "probe-ata-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("qemu isa-ide: ata-verify writes the pattern QEMU stores, FLUSH CACHE, reads back, IDNF past the end; ata-bench reports ops and latency", { timeout: TIMEOUT_MS }, async (t) => {
  const why = skipReason();
  if (why !== null) return t.skip(why);
  const img = join(tmp(t), "ata.img");
  writeFileSync(img, Buffer.alloc(2 << 20, 0xee));
  const bytes = 192 << 10;
  const r = await runQemu(`probe.run=ata-verify probe.blk.bytes=${bytes} probe.blk.seed=4660`, ide(img));
  assert.equal(r.code, 1, r.out); // isa-debug-exit: (0 << 1) | 1
  const v = r.lines.find((l) => l.name === "ata-verify")?.fields;
  assert.ok(v, r.out);
  assert.equal(v["ok"], "1", r.out);
  assert.equal(v["capacity"], String((2 << 20) / 512));
  assert.equal(v["mismatch"], "0");
  assert.equal(v["oob_status"], "1");
  assert.equal(hexToString(v["id_hex"]!), "ProbeDisk", "IDENTIFY model string, byte-swapped words decoded");
  const image = readFileSync(img);
  assert.ok(image.subarray(0, bytes).equals(pattern(bytes, 4660n)), "the host image holds the guest pattern");
  assert.ok(image.subarray(bytes).every((b) => b === 0xee), "nothing written past probe.blk.bytes");
  // The bench writes the disk, so it runs in a boot of its own.
  const b = await runQemu("probe.run=ata-bench probe.blk.bench.n=8 probe.blk.seq.n=1", ide(img));
  assert.equal(b.code, 1, b.out);
  const bench = b.lines.filter((l) => l.name === "ata-bench");
  assert.deepEqual(bench.map((l) => `${l.fields["mode"]}/${l.fields["qd"]}/${l.fields["bs"]}`), ["randread/1/4096", "randwrite/1/4096", "seqread/1/131072", "seqwrite/1/131072"]);
  for (const l of bench) {
    assert.equal(l.fields["ok"], "1", l.raw);
    assert.ok(Number(l.fields["lat_p50"]) > 0 && Number(l.fields["lat_p99"]) >= Number(l.fields["lat_p50"]), l.raw);
  }
});

test("qemu: ata-verify without an IDE controller reports error=no_ata", { timeout: TIMEOUT_MS }, async (t) => {
  const why = skipReason();
  if (why !== null) return t.skip(why);
  const r = await runQemu("probe.run=ata-verify", []);
  assert.equal(r.lines.find((l) => l.name === "ata-verify")?.fields["error"], "no_ata", r.out);
  assert.equal(r.code, 3, "status 1");
});

test("qemu: xenblk-verify without a typervisor_xenblk device reports error=no_xenblk", { timeout: TIMEOUT_MS }, async (t) => {
  const why = skipReason();
  if (why !== null) return t.skip(why);
  const r = await runQemu("probe.run=xenblk-verify", []);
  assert.equal(r.lines.find((l) => l.name === "xenblk-verify")?.fields["error"], "no_xenblk", r.out);
});
