// The exit loop against a fake vCPU that replays scripted exits: dispatch to the buses, the
// counters, and every way a vCPU stops, without KVM.

import { test } from "node:test";
import assert from "node:assert/strict";
import type { VcpuHandle } from "../kvm/hypervisor.js";
import type { KvmRun } from "../kvm/run.js";
import type { VcpuExit } from "../kvm/types.js";
import { Bus } from "../devices/bus.js";
import { VmControl, Counter } from "./vcpu-control.js";
import { runVcpuLoop, type VcpuStop } from "./exit-loop.js";
import { attachLegacyDevices, createLegacyStates } from "./legacy.js";

type Step = VcpuExit | "EINTR" | "EAGAIN" | Error;

function fakeVcpu(steps: Step[]): VcpuHandle & { runs: number } {
  let current: VcpuExit | undefined;
  const kvmRun = { decode: () => current!, immediateExit: 0 } as unknown as KvmRun;
  return {
    id: 0,
    kvmRun,
    runs: 0,
    run() {
      this.runs++;
      const s = steps.shift();
      if (s === undefined) throw new Error("fake vCPU ran past its script");
      if (s === "EINTR" || s === "EAGAIN") throw Object.assign(new Error(`KVM_RUN failed: ${s}`), { code: s });
      if (s instanceof Error) throw s;
      current = s;
    },
  };
}

function outb(port: number, value: number): VcpuExit {
  return { kind: "io", direction: "out", port, size: 1, count: 1, data: Uint8Array.of(value) };
}

function setup(steps: Step[]) {
  const vcpu = fakeVcpu(steps);
  const control = new VmControl(1);
  const pio = new Bus("pio");
  const mmio = new Bus("mmio");
  const out: number[] = [];
  let pending: VcpuStop | undefined;
  const stop = (s: VcpuStop) => {
    pending ??= s;
    control.requestStop();
  };
  attachLegacyDevices(pio, createLegacyStates(), {
    irq: () => ({ trigger() {} }),
    output: (b) => out.push(...b),
    onReset: () => stop({ kind: "reset" }),
    onDebugExit: (status) => stop({ kind: "debug-exit", status }),
  });
  const kick = { immediateExit: 0, clears: 0 };
  const run = () =>
    runVcpuLoop({
      vcpu, pio, mmio, control, pendingStop: () => pending, dumpState: () => ({ regs: { rip: 0x1234n } }),
      clearImmediateExit: () => {
        kick.immediateExit = 0;
        kick.clears++;
      },
    });
  return { vcpu, control, pio, mmio, out, run, kick };
}

test("serial output, then the i8042 reset stops the vCPU cleanly", () => {
  const s = setup([outb(0x3f8, 0x4f), outb(0x3f8, 0x4b), outb(0x64, 0xfe), outb(0x3f8, 0x21)]);
  assert.deepEqual(s.run(), { kind: "reset" });
  assert.equal(Buffer.from(s.out).toString(), "OK");
  assert.equal(s.vcpu.runs, 3, "nothing runs after the reset");
  assert.equal(s.control.row(0)[Counter.IO_OUT], 3);
  assert.equal(s.control.stopRequested, true);
});

test("the debug-exit port carries the guest's status", () => {
  const s = setup([{ kind: "io", direction: "out", port: 0xf4, size: 4, count: 1, data: Uint8Array.of(1, 0, 0, 0) }]);
  assert.deepEqual(s.run(), { kind: "debug-exit", status: 1 });
});

test("string I/O is dispatched element by element; unclaimed ports read as all ones and are counted", () => {
  const data = new Uint8Array([0x61, 0x62, 0x63]);
  const inData = new Uint8Array(2);
  const s = setup([
    { kind: "io", direction: "out", port: 0x3f8, size: 1, count: 3, data },
    { kind: "io", direction: "in", port: 0x600, size: 2, count: 1, data: inData },
    outb(0x80, 0),
    outb(0x64, 0xfe),
  ]);
  s.run();
  assert.equal(Buffer.from(s.out).toString(), "abc");
  assert.deepEqual([...inData], [0xff, 0xff]);
  assert.equal(s.control.row(0)[Counter.UNHANDLED_IO], 2);
  assert.equal(s.control.row(0)[Counter.IO_IN], 1);
});

test("MMIO: unclaimed reads return all ones; addresses beyond 2^53 are unclaimed, not a crash", () => {
  const read = new Uint8Array(8);
  const s = setup([
    { kind: "mmio", address: 0xd0000000, isWrite: true, len: 4, data: new Uint8Array(8) },
    { kind: "mmio", address: 0xd0000000, isWrite: false, len: 4, data: read },
    { kind: "mmio", address: 2 ** 64 - 4096, isWrite: false, len: 8, data: new Uint8Array(8) },
    outb(0x64, 0xfe),
  ]);
  s.run();
  assert.deepEqual([...read.subarray(0, 4)], [0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual([...read.subarray(4)], [0, 0, 0, 0], "only len bytes are answered");
  const row = s.control.row(0);
  assert.equal(row[Counter.MMIO_WRITE], 1);
  assert.equal(row[Counter.MMIO_READ], 2);
  assert.equal(row[Counter.UNHANDLED_MMIO], 3);
});

test("a triple fault (KVM_EXIT_SHUTDOWN) is a crash with the vCPU's registers", () => {
  const s = setup([{ kind: "shutdown" }]);
  const stop = s.run();
  assert.equal(stop.kind, "crash");
  if (stop.kind !== "crash") return;
  assert.equal(stop.reason, "triple fault");
  assert.deepEqual(stop.state, { regs: { rip: 0x1234n } });
});

test("internal errors and failed entries are crashes that say what KVM said", () => {
  const a = setup([{ kind: "internal_error", suberror: 1, data: [0x10n] }]).run();
  assert.equal(a.kind, "crash");
  if (a.kind === "crash") assert.match(a.detail, /suberror 1 data \[0x10\].*emulation failure/);
  const b = setup([{ kind: "fail_entry", hardwareEntryFailureReason: 0x80000021n, cpu: 3 }]).run();
  if (b.kind === "crash") assert.match(b.detail, /0x80000021 on cpu 3/);
  else assert.fail("fail_entry must crash");
  const c = setup([{ kind: "unknown", reason: 99 }]).run();
  assert.equal(c.kind, "crash");
});

test("system events: reset and shutdown are clean, crash is a crash", () => {
  assert.deepEqual(setup([{ kind: "system_event", type: 2, flags: [] }]).run(), { kind: "reset" });
  assert.deepEqual(setup([{ kind: "system_event", type: 1, flags: [] }]).run(), { kind: "poweroff" });
  assert.equal(setup([{ kind: "system_event", type: 3, flags: [] }]).run().kind, "crash");
});

test("EINTR without a stop request resumes; with one, the vCPU stops", () => {
  const s = setup(["EINTR", "EINTR", outb(0x3f8, 0x41), "EINTR"]);
  let calls = 0;
  const orig = s.vcpu.run.bind(s.vcpu);
  s.vcpu.run = () => {
    calls++;
    if (calls === 4) s.control.requestStop(); // the VMM raised the flag and kicked us
    orig();
  };
  assert.deepEqual(s.run(), { kind: "stopped" });
  assert.equal(Buffer.from(s.out).toString(), "A");
  assert.equal(s.control.row(0)[Counter.INTERRUPTED], 3);
});

test("EAGAIN (an application processor leaving its wait-for-SIPI state) runs again and is not counted as a kick", () => {
  const s = setup(["EAGAIN", "EAGAIN", outb(0x3f8, 0x42), "EINTR"]);
  let calls = 0;
  const orig = s.vcpu.run.bind(s.vcpu);
  s.vcpu.run = () => {
    calls++;
    if (calls === 4) s.control.requestStop();
    orig();
  };
  assert.deepEqual(s.run(), { kind: "stopped" });
  assert.equal(Buffer.from(s.out).toString(), "B");
  assert.equal(s.vcpu.runs, 4);
  assert.equal(s.control.row(0)[Counter.INTERRUPTED], 1);
});

test("EINTR clears kvm_run.immediate_exit before the loop looks again, so a kick that found no flag cannot spin the vCPU", () => {
  // A pause requested and withdrawn (resume) before this vCPU parked leaves immediate_exit set:
  // a KVM_RUN that still saw it returns EINTR with no flag raised, and the next one must enter the guest.
  const s = setup([outb(0x3f8, 0x43), outb(0x3f8, 0x44)]);
  const orig = s.vcpu.run.bind(s.vcpu);
  let calls = 0;
  s.kick.immediateExit = 1;
  s.vcpu.run = () => {
    calls++;
    if (calls > 50) s.control.requestStop(); // a spinning vCPU is stopped here, and the asserts below fail
    if (calls === 4) {
      s.control.requestStop(); // the VMM's stop: flag, then the kick
      s.kick.immediateExit = 1;
    }
    if (s.kick.immediateExit === 1) throw Object.assign(new Error("KVM_RUN failed: EINTR"), { code: "EINTR" });
    orig();
  };
  assert.deepEqual(s.run(), { kind: "stopped" });
  assert.equal(Buffer.from(s.out).toString(), "CD");
  assert.equal(s.kick.clears, 2);
  assert.equal(calls, 4);
});

test("a stop requested before the first run never enters KVM_RUN", () => {
  const s = setup([outb(0x3f8, 0x41)]);
  s.control.requestStop();
  assert.deepEqual(s.run(), { kind: "stopped" });
  assert.equal(s.vcpu.runs, 0);
});

test("errors other than EINTR propagate to the worker (which reports them)", () => {
  const s = setup([new Error("KVM_RUN failed: EFAULT")]);
  assert.throws(() => s.run(), /EFAULT/);
});
