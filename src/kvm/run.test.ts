// KvmRun.decode over fake kvm_run buffers laid out with the offsets from kvm-abi.ts (which the ABI
// check proves against linux/kvm.h), so exit dispatch is testable without KVM.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  KVM_EXIT_DEBUG, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO,
  KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_X86_RDMSR,
  KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_RESET, kvm_run,
} from "../sys/kvm-abi.js";
import { KvmRun } from "./run.js";
import { KvmError } from "./errors.js";

const F = kvm_run.fields;
/** Real KVM maps 3 pages and puts PIO data at one page in (KVM_PIO_PAGE_OFFSET). */
const RUN_SIZE = 3 * 4096;
const PIO_OFFSET = 4096;

function fake(reason: number): { run: KvmRun; v: DataView; bytes: Uint8Array } {
  const buffer = new ArrayBuffer(RUN_SIZE);
  const v = new DataView(buffer);
  v.setUint32(F.exit_reason, reason, true);
  return { run: new KvmRun(buffer), v, bytes: new Uint8Array(buffer) };
}

function io(direction: number, port: number, size: number, count: number): ReturnType<typeof fake> {
  const f = fake(KVM_EXIT_IO);
  f.v.setUint8(F["io.direction"], direction);
  f.v.setUint8(F["io.size"], size);
  f.v.setUint16(F["io.port"], port, true);
  f.v.setUint32(F["io.count"], count, true);
  f.v.setBigUint64(F["io.data_offset"], BigInt(PIO_OFFSET), true);
  return f;
}

test("io in (inb 0x3f8+5): data is a 1-byte view at data_offset; an answer written there lands in kvm_run", () => {
  const { run, bytes } = io(KVM_EXIT_IO_IN, 0x3fd, 1, 1);
  const exit = run.decode();
  assert.equal(exit.kind, "io");
  if (exit.kind !== "io") return;
  assert.deepEqual({ d: exit.direction, p: exit.port, s: exit.size, c: exit.count }, { d: "in", p: 0x3fd, s: 1, c: 1 });
  assert.equal(exit.data.byteLength, 1);
  assert.equal(exit.data.byteOffset, PIO_OFFSET);
  exit.data[0] = 0x60;
  assert.equal(bytes[PIO_OFFSET], 0x60, "the view aliases the kvm_run mapping");
});

test("io out, string form (rep outsw, count 3): data is size*count bytes", () => {
  const { run, bytes } = io(KVM_EXIT_IO_OUT, 0x1f0, 2, 3);
  bytes.set([1, 2, 3, 4, 5, 6], PIO_OFFSET);
  const exit = run.decode();
  assert.ok(exit.kind === "io");
  assert.equal(exit.direction, "out");
  assert.equal(exit.port, 0x1f0);
  assert.equal(exit.size, 2);
  assert.equal(exit.count, 3);
  assert.deepEqual([...exit.data], [1, 2, 3, 4, 5, 6]);
});

test("io with data outside the mapping or a bad direction is refused, not aliased", () => {
  const out = io(KVM_EXIT_IO_OUT, 0x80, 4, 1);
  out.v.setBigUint64(F["io.data_offset"], BigInt(RUN_SIZE - 2), true);
  assert.throws(() => out.run.decode(), KvmError);
  out.v.setBigUint64(F["io.data_offset"], 0n, true); // would alias the kvm_run header
  assert.throws(() => out.run.decode(), /outside/);
  const bad = io(7, 0x80, 1, 1);
  assert.throws(() => bad.run.decode(), /io.direction is 7/);
});

test("mmio write: address, len, is_write and the 8-byte data view", () => {
  const { run, v, bytes } = fake(KVM_EXIT_MMIO);
  v.setBigUint64(F["mmio.phys_addr"], 0xd0000000n, true);
  v.setUint32(F["mmio.len"], 4, true);
  v.setUint8(F["mmio.is_write"], 1);
  bytes.set([0x78, 0x56, 0x34, 0x12], F["mmio.data"]);
  const exit = run.decode();
  assert.ok(exit.kind === "mmio");
  assert.equal(exit.address, 0xd0000000);
  assert.equal(exit.isWrite, true);
  assert.equal(exit.len, 4);
  assert.equal(exit.data.byteLength, 8);
  assert.equal(new DataView(exit.data.buffer, exit.data.byteOffset).getUint32(0, true), 0x12345678);
});

test("mmio read: the handler's answer written to data lands in kvm_run.mmio.data", () => {
  const { run, v, bytes } = fake(KVM_EXIT_MMIO);
  v.setBigUint64(F["mmio.phys_addr"], 0xfeb00e00n, true);
  v.setUint32(F["mmio.len"], 2, true);
  const exit = run.decode();
  assert.ok(exit.kind === "mmio");
  assert.equal(exit.isWrite, false);
  exit.data.set([0xaa, 0xbb]);
  assert.deepEqual([...bytes.subarray(F["mmio.data"], F["mmio.data"] + 2)], [0xaa, 0xbb]);
});

test("hlt, shutdown, intr, debug", () => {
  assert.deepEqual(fake(KVM_EXIT_HLT).run.decode(), { kind: "hlt" });
  assert.deepEqual(fake(KVM_EXIT_SHUTDOWN).run.decode(), { kind: "shutdown" });
  assert.deepEqual(fake(KVM_EXIT_INTR).run.decode(), { kind: "intr" });
  assert.deepEqual(fake(KVM_EXIT_DEBUG).run.decode(), { kind: "debug" });
});

test("internal_error: suberror and ndata words of data", () => {
  const { run, v } = fake(KVM_EXIT_INTERNAL_ERROR);
  v.setUint32(F["internal.suberror"], KVM_INTERNAL_ERROR_EMULATION, true);
  v.setUint32(F["internal.ndata"], 2, true);
  v.setBigUint64(F["internal.data"], 0x11n, true);
  v.setBigUint64(F["internal.data"] + 8, 0xffff_ffff_ffff_fff0n, true);
  v.setBigUint64(F["internal.data"] + 16, 0x99n, true); // beyond ndata: not reported
  assert.deepEqual(run.decode(), { kind: "internal_error", suberror: KVM_INTERNAL_ERROR_EMULATION, data: [0x11n, 0xffff_ffff_ffff_fff0n] });
  v.setUint32(F["internal.ndata"], 1000, true); // a corrupt ndata is clamped to data[16]
  const exit = run.decode();
  assert.ok(exit.kind === "internal_error" && exit.data.length === 16);
});

test("fail_entry: hardware_entry_failure_reason and cpu", () => {
  const { run, v } = fake(KVM_EXIT_FAIL_ENTRY);
  v.setBigUint64(F["fail_entry.hardware_entry_failure_reason"], 0x80000021n, true);
  v.setUint32(F["fail_entry.cpu"], 3, true);
  assert.deepEqual(run.decode(), { kind: "fail_entry", hardwareEntryFailureReason: 0x80000021n, cpu: 3 });
});

test("system_event: type and ndata words (data[0] is the legacy flags)", () => {
  const { run, v } = fake(KVM_EXIT_SYSTEM_EVENT);
  v.setUint32(F["system_event.type"], KVM_SYSTEM_EVENT_RESET, true);
  v.setUint32(F["system_event.ndata"], 1, true);
  v.setBigUint64(F["system_event.flags"], 5n, true);
  assert.deepEqual(run.decode(), { kind: "system_event", type: KVM_SYSTEM_EVENT_RESET, flags: [5n] });
});

test("an exit reason we do not decode is `unknown` with the number", () => {
  assert.deepEqual(fake(KVM_EXIT_X86_RDMSR).run.decode(), { kind: "unknown", reason: KVM_EXIT_X86_RDMSR });
});

test("immediateExit reads and writes kvm_run.immediate_exit; exitReason reads exit_reason", () => {
  const { run, bytes } = fake(KVM_EXIT_HLT);
  assert.equal(run.exitReason, KVM_EXIT_HLT);
  assert.equal(run.immediateExit, 0);
  run.immediateExit = 1;
  assert.equal(bytes[F.immediate_exit], 1);
  assert.equal(bytes[F.request_interrupt_window], 0);
  run.immediateExit = 0;
  assert.equal(bytes[F.immediate_exit], 0);
});

test("a buffer smaller than struct kvm_run is refused", () => {
  assert.throws(() => new KvmRun(new ArrayBuffer(kvm_run.size - 1)), /sizeof\(struct kvm_run\) is 2352/);
});
