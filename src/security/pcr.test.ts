// PCR extend known answers, lock semantics, and measured boot (DESIGN.md §5).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PcrBank, PcrError, extendValue, measureBoot, bootMeasurements, PCR_COUNT, PCR_SIZE, toHex } from "./pcr.js";
import { measureCommand } from "./cli.js";

/** Independent reference: the formula written out with node:crypto, nothing from pcr.ts. */
function refExtend(oldHex: string, data: Buffer): string {
  const inner = createHash("sha384").update(data).digest();
  return createHash("sha384").update(Buffer.concat([Buffer.from(oldHex, "hex"), inner])).digest("hex");
}
const ZERO = "00".repeat(48);

test("extend: SHA384(PCR_old || SHA384(data)), step by step (DESIGN.md §5)", () => {
  const bank = new PcrBank();
  assert.equal(toHex(bank.get(16)), ZERO, "registers start at 48 zero bytes");
  const step1 = refExtend(ZERO, Buffer.from("abc"));
  assert.equal(toHex(bank.extend(16, new TextEncoder().encode("abc"))), step1);
  const step2 = refExtend(step1, Buffer.alloc(0));
  assert.equal(toHex(bank.extend(16, new Uint8Array(0))), step2);
  assert.equal(toHex(bank.get(16)), step2);
  // Known answer, fixed so the formula cannot drift: SHA384("abc") starts cb00753f45a35e8b (FIPS 180-2 App. D.1);
  // the extend computed once outside Node: (head -c 48 /dev/zero; printf abc | openssl dgst -sha384 -binary) | openssl dgst -sha384
  assert.equal(createHash("sha384").update("abc").digest("hex").slice(0, 16), "cb00753f45a35e8b");
  assert.equal(step1, "93732e3733514a841c982cfa75ea76ab55fe011acb9cd980ef4523913c65be1b0998e04d77f8c174f81a82151619ca40");
  assert.equal(toHex(extendValue(new Uint8Array(PCR_SIZE), new TextEncoder().encode("abc"))), step1);
  assert.notEqual(step1, createHash("sha384").update(Buffer.concat([Buffer.alloc(48), Buffer.from("abc")])).digest("hex"),
    "the data is hashed before it is extended, unlike SHA384(old || data)");
});

test("extend refuses a wrong-size old value", () => {
  assert.throws(() => extendValue(new Uint8Array(32), new Uint8Array(1)), RangeError);
});

test("locks: one-way, locked PCR refuses extend, LockPCRs range semantics (nsm-check.rs)", () => {
  const bank = new PcrBank();
  bank.extend(20, new Uint8Array([1]));
  bank.lock(20);
  const before = toHex(bank.get(20));
  assert.throws(() => bank.extend(20, new Uint8Array([2])), (e: unknown) => e instanceof PcrError && e.code === "ReadOnlyIndex");
  assert.equal(toHex(bank.get(20)), before, "value unchanged after a refused extend");
  assert.throws(() => bank.lock(20), (e: unknown) => e instanceof PcrError && e.code === "ReadOnlyIndex");
  assert.throws(() => bank.get(PCR_COUNT), (e: unknown) => e instanceof PcrError && e.code === "InvalidIndex");
  assert.throws(() => bank.extend(-1, new Uint8Array()), (e: unknown) => e instanceof PcrError && e.code === "InvalidIndex");
  bank.lockRange(PCR_COUNT); // all, including already locked ones: fine
  assert.deepEqual(bank.lockedIndexes(), Array.from({ length: PCR_COUNT }, (_, i) => i));
  assert.throws(() => bank.lockRange(PCR_COUNT + 1), (e: unknown) => e instanceof PcrError && e.code === "InvalidIndex");
});

test("measured boot: each PCR is one extend of a zeroed register over the exact bytes (README.md)", () => {
  const kernel = Buffer.from("KERNEL-bytes\x00\x01");
  const initrd = Buffer.from("INITRD");
  const cmdline = "console=ttyS0 ünï";
  const cert = Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]);
  const bank = measureBoot({ kernel, initrd, cmdline, vmId: "vm-7", signingCert: cert });
  const c = Buffer.from(cmdline, "utf8");
  assert.equal(toHex(bank.get(0)), refExtend(ZERO, Buffer.concat([kernel, c, initrd])));
  assert.equal(toHex(bank.get(1)), refExtend(ZERO, Buffer.concat([kernel, c])));
  assert.equal(toHex(bank.get(2)), refExtend(ZERO, initrd));
  assert.equal(toHex(bank.get(3)), ZERO);
  assert.equal(toHex(bank.get(4)), refExtend(ZERO, Buffer.from("vm-7", "utf8")));
  assert.equal(toHex(bank.get(8)), refExtend(ZERO, cert));
  for (let i = 0; i < PCR_COUNT; i++) assert.equal(bank.isLocked(i), i < 16, `PCR${i} lock at boot`);
  assert.deepEqual([...bank.lockedValues().keys()], Array.from({ length: 16 }, (_, i) => i));
  // No initrd: PCR2 stays zeroed, PCR0 = kernel ‖ cmdline; no signer: PCR8 zeroed.
  const b2 = measureBoot({ kernel, cmdline, vmId: "vm-7" });
  assert.equal(toHex(b2.get(2)), ZERO);
  assert.equal(toHex(b2.get(8)), ZERO);
  assert.equal(toHex(b2.get(0)), toHex(b2.get(1)));
});

test("one kernel byte changes PCR0 and PCR1, and `measure` predicts the boot's PCR0", async () => {
  const dir = mkdtempSync(join(tmpdir(), "tv-measure-"));
  const kernel = Buffer.alloc(4096, 0x90);
  const kPath = join(dir, "vmlinux");
  const iPath = join(dir, "initrd");
  writeFileSync(kPath, kernel);
  writeFileSync(iPath, Buffer.from("initramfs"));
  const run = async (args: string[]) => {
    let out = "";
    const code = await measureCommand(args, { stdout: { write: (s: string) => (out += s) }, stderr: { write: () => true } });
    assert.equal(code, 0);
    return JSON.parse(out) as Record<string, string>;
  };
  const cmdline = "console=ttyS0 reboot=k";
  const predicted = await run(["--kernel", kPath, "--initrd", iPath, "--cmdline", cmdline, "--json"]);
  const booted = measureBoot({ kernel, initrd: Buffer.from("initramfs"), cmdline, vmId: "x" });
  assert.equal(predicted["pcr0"], toHex(booted.get(0)));
  assert.equal(predicted["pcr1"], toHex(booted.get(1)));
  assert.equal(predicted["pcr2"], toHex(booted.get(2)));
  assert.match(predicted["pcr0"]!, /^[0-9a-f]{96}$/);

  const changed = Buffer.from(kernel);
  changed[1234] ^= 0x01;
  writeFileSync(kPath, changed);
  const after = await run(["--kernel", kPath, "--initrd", iPath, "--cmdline", cmdline, "--json"]);
  assert.notEqual(after["pcr0"], predicted["pcr0"]);
  assert.notEqual(after["pcr1"], predicted["pcr1"]);
  assert.equal(after["pcr2"], predicted["pcr2"], "initrd unchanged");
  assert.equal(after["pcr0"], toHex(measureBoot({ kernel: changed, initrd: Buffer.from("initramfs"), cmdline, vmId: "x" }).get(0)));
  assert.equal(bootMeasurements({ kernel: changed, cmdline, vmId: "x" }).has(2), false);
});
