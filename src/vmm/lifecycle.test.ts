// The VM lifecycle on real worker threads and real signals, over a fake machine (no KVM):
// what the guest asks for stops the VM with the right reason, a vCPU blocked "in the guest"
// is interrupted by tgkill + immediate_exit, and the main thread stays responsive.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { constants, mkdtempSync, openSync, closeSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm, VM_TRANSITIONS, VCPU_THREAD_KINDS } from "./vm.js";
import { fakeMachine, type FakeStep } from "./testing/fake-machine.js";

const text = (s: string): FakeStep[] => [...Buffer.from(s)].map((b) => ({ out: 0x3f8, bytes: [b] }));
const RESET: FakeStep = { out: 0x64, bytes: [0xfe] };
const BLOCK: FakeStep = { block: true };

function consoleFile() {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-life-"));
  const path = join(dir, "console");
  const fd = openSync(path, "w");
  return { fd, read: () => readFileSync(path, "utf8"), close: () => closeSync(fd) };
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish in ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

// Each test runs with every kind of vCPU thread (vm.ts VcpuThreadKind): a worker per vCPU, pooled
// vCPUs whose exits run on this event loop (which must stay responsive all the same), and one vCPU
// on this very thread ("main": its blocking run is interrupted by the periodic signal, so this
// event loop stays responsive too). "main" takes one vCPU: the first script of each machine.
for (const mode of VCPU_THREAD_KINDS) {
  const machine = (scripts: FakeStep[][]) => fakeMachine(mode === "main" ? scripts.slice(0, 1) : scripts);
  const count = (scripts: number) => (mode === "main" ? 1 : scripts);
  test(`${mode}: ` + "guest output reaches the console from the vCPU's exit loop; the i8042 reset stops the VM cleanly", async () => {
    const c = consoleFile();
    const m = machine([[...text("PROBE hello\n"), RESET, ...text("never")]]);
    const vm = new Vm(m, c.fd, undefined, mode);
    await vm.start();
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "reset"), { kind: "reset" });
    assert.equal(c.read(), "PROBE hello\n");
    assert.equal(vm.exitCounters()[0]!.IO_OUT, 13);
    assert.equal(m.closed, false);
    vm.close();
    assert.equal(m.closed, true);
    c.close();
  });

  test(`${mode}: ` + "one vCPU's debug exit stops the others, which are kicked out of a blocking run", async () => {
    const c = consoleFile();
    const m = machine([[...text("bye\n"), { out: 0xf4, bytes: [3, 0, 0, 0] }], [BLOCK], [BLOCK]]);
    const vm = new Vm(m, c.fd, undefined, mode);
    await vm.start();
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "debug exit"), { kind: "debug-exit", status: 3 });
    vm.close();
    c.close();
  });

  test(`${mode}: ` + "stop() interrupts vCPUs blocked in the guest; the main thread stays responsive meanwhile", async () => {
    // Pooled, three: with libuv's default pool of four, one thread stays free (the next test).
    const m = machine(mode === "pooled" ? [[BLOCK], [BLOCK], [BLOCK]] : [[BLOCK], [BLOCK], [BLOCK], [BLOCK]]);
    const vm = new Vm(m, -1, undefined, mode);
    await vm.start();
    assert.throws(() => vm.close(), /while vCPUs are running/);
    const lags: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 10));
      lags.push(performance.now() - t0 - 10);
    }
    assert.ok(Math.max(...lags) < 100, `timer lag ${Math.max(...lags).toFixed(1)} ms`);
    vm.stop("test");
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "stop"), { kind: "stopped", by: "test" });
    for (const c of vm.exitCounters()) assert.ok(c.INTERRUPTED >= 1, "each vCPU returned EINTR");
    if (mode === "dedicated") {
      // They had been blocked for 50 ms: the tgkill, not the immediate_exit re-check, woke them.
      const bySignal = m.shared.reduce((n, sab) => n + new Int32Array(sab)[3]!, 0);
      assert.ok(bySignal >= 3, `${bySignal} of 4 vCPUs were interrupted by the signal`);
    }
    vm.close();
  });

  test(`${mode}: ` + "a console reader that stalls holds the guest back but never a stop (the vCPU waits for room, which the kick ends)", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "typervisor-life-"));
    const fifo = join(dir, "console.fifo");
    execFileSync("mkfifo", [fifo]);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK); // holds the FIFO open, never reads
    const writer = openSync(fifo, constants.O_WRONLY); // blocking, as a terminal or `| less` would be
    t.after(() => {
      closeSync(writer);
      closeSync(reader);
    });
    // 96 KiB of output: more than the 64 KiB a pipe holds, so the vCPU must wait for room.
    const m = machine([[...text("x".repeat(96 * 1024)), RESET]]);
    const vm = new Vm(m, writer, undefined, mode);
    await vm.start();
    // Wait until the guest stops making progress: its console writes are stuck on the full pipe.
    let outs = -1;
    for (let i = 0; i < 200; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const now = vm.exitCounters()[0]!.IO_OUT!;
      if (now === outs) break;
      outs = now;
    }
    assert.ok(outs >= 32 * 1024 && outs < 96 * 1024, `the guest is held back by the full console (${outs} bytes out)`);
    assert.equal(vm.state, "running");
    vm.stop("test");
    assert.deepEqual(await withTimeout(vm.wait(), 5_000, "stop with a stalled console"), { kind: "stopped", by: "test" });
    vm.close();
  });

  test(`${mode}: ` + "a triple fault is a crash of the vCPU that made it, with its registers", async () => {
    // vCPU 1 while vCPU 0 runs on; "main" has vCPU 0 only.
    const m = mode === "main" ? machine([[{ shutdown: true }]]) : machine([[BLOCK], [{ shutdown: true }]]);
    const vm = new Vm(m, -1, undefined, mode);
    await vm.start();
    const exit = await withTimeout(vm.wait(), 10_000, "crash");
    assert.equal(exit.kind, "crash");
    if (exit.kind !== "crash") return;
    const id = count(2) - 1;
    assert.equal(exit.vcpu, id);
    assert.equal(exit.reason, "triple fault");
    assert.deepEqual(exit.state, { regs: { rip: 0xdead0000n + BigInt(id) } });
    vm.close();
  });

  test(`${mode}: ` + "a failing KVM_RUN is reported as an error of that vCPU and stops the VM", async () => {
    const m = machine([[{ fail: "KVM_RUN failed: EFAULT" }], [BLOCK]]);
    const vm = new Vm(m, -1, undefined, mode);
    await vm.start();
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "error"), { kind: "error", vcpu: 0, message: "KVM_RUN failed: EFAULT" });
    vm.close();
  });

  test(`${mode}: ` + "stop before start ends the VM without running anything", async () => {
    const m = machine([[RESET]]);
    const vm = new Vm(m, -1, undefined, mode);
    vm.stop("never started");
    assert.deepEqual(await vm.wait(), { kind: "stopped", by: "never started" });
    vm.close();
    await assert.rejects(vm.start(), /closed/);
  });

  test(`${mode}: ` + "console input from the main thread is what the vCPU thread's UART reads", async () => {
    // The guest reads LSR (data ready?), then RBR, then resets.
    const m = machine([[{ inb: 0x3fd }, { inb: 0x3f8 }, RESET]]);
    const vm = new Vm(m, -1, undefined, mode);
    assert.equal(vm.sendConsoleInput(Buffer.from("x")), 1);
    await vm.start();
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "reset"), { kind: "reset" });
    assert.equal(new Int32Array(m.shared[0]!)[2], "x".charCodeAt(0));
    assert.equal(vm.exitCounters()[0]!.IO_IN, 2);
    vm.close();
  });

  test(`${mode}: ` + "pause parks every vCPU outside the guest, resume lets them run on", async () => {
    const c = consoleFile();
    // Both vCPUs sit "in the guest" until kicked.
    const m = machine([[BLOCK], [BLOCK]]);
    const vm = new Vm(m, c.fd, undefined, mode);
    await vm.start();
    assert.equal(vm.state, "running");
    await withTimeout(vm.pause(), 10_000, "pause");
    assert.equal(vm.state, "paused");
    assert.equal(vm.control.parked, count(2));
    // While paused nothing runs: the counters stand still.
    const before = JSON.stringify(vm.exitCounters());
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(JSON.stringify(vm.exitCounters()), before);
    await assert.rejects(vm.pause(), /cannot pause a VM that is paused/);
    vm.resume();
    assert.equal(vm.state, "running");
    // Parked vCPUs went back into their (blocking) run: a second pause finds them again.
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(vm.control.parked, 0);
    await withTimeout(vm.pause(), 10_000, "second pause");
    vm.resume();
    vm.stop("test");
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "stop"), { kind: "stopped", by: "test" });
    assert.equal(vm.state, "stopped");
    assert.throws(() => vm.resume(), /cannot resume a VM that is stopped/);
    vm.close();
    c.close();
  });

  test(`${mode}: ` + "stop while paused ends the VM", async () => {
    const m = machine([[BLOCK]]);
    const vm = new Vm(m, -1, undefined, mode);
    await vm.start();
    await vm.pause();
    vm.stop("test");
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "stop"), { kind: "stopped", by: "test" });
    vm.close();
  });

  test(`${mode}: ` + "SendCtrlAltDel: the running guest's keyboard gets the chord and IRQ 1", async () => {
    // The guest reads the keyboard: status, then data, four times; then resets.
    const readKey: FakeStep[] = [{ inb: 0x64 }, { inb: 0x60 }];
    const m = machine([[{ waitFor: 1 }, ...readKey, ...readKey, ...readKey, ...readKey, RESET]]);
    const vm = new Vm(m, -1, undefined, mode);
    assert.throws(() => vm.sendCtrlAltDel(), /VM that is created/);
    await vm.start();
    vm.sendCtrlAltDel();
    const words = new Int32Array(m.shared[0]!);
    Atomics.store(words, 4, 1);
    Atomics.notify(words, 4);
    assert.deepEqual(await withTimeout(vm.wait(), 10_000, "reset"), { kind: "reset" });
    assert.equal(words[2], 0x71, "the last byte the guest read is Delete's");
    vm.close();
  });

  test(`${mode}: ` + "one state machine: every transition is one of VM_TRANSITIONS, emits its event, and state already says so", async () => {
    const m = machine([[BLOCK], [BLOCK]]);
    const vm = new Vm(m, -1, undefined, mode);
    const seen: Array<[string, string]> = [];
    for (const e of ["start", "pause", "resume", "exit"]) vm.on(e, () => seen.push([e, vm.state]));
    assert.equal(vm.state, "created");
    assert.equal(vm.exit, undefined);
    await vm.start();
    // Two pause() calls while the vCPUs park are one pause: one event, "running" until both parked.
    const first = vm.pause();
    const second = vm.pause();
    assert.equal(vm.state, "running", "not paused before every vCPU has parked");
    await withTimeout(Promise.all([first, second]), 10_000, "pause");
    assert.equal(vm.state, "paused");
    assert.equal(vm.control.parked, count(2));
    vm.resume();
    vm.stop("test");
    const exit = await withTimeout(vm.wait(), 10_000, "stop");
    assert.deepEqual(vm.exit, exit);
    assert.deepEqual(seen, [["start", "running"], ["pause", "paused"], ["resume", "running"], ["exit", "stopped"]]);
    // Each event names the transition into the state it reported.
    for (const [event, state] of seen) {
      assert.ok(Object.values(VM_TRANSITIONS).some((to) => to[state as keyof typeof to] === event), `${event} → ${state}`);
    }
    assert.deepEqual(VM_TRANSITIONS.stopped, {}, "nothing leaves stopped");
    await assert.rejects(vm.pause(), /cannot pause a VM that is stopped/);
    vm.close();
  });

  test(`${mode}: ` + "a VM stopped while its vCPUs park ends stopped, with no pause event", async () => {
    const m = machine([[BLOCK]]);
    const vm = new Vm(m, -1, undefined, mode);
    let paused = 0;
    vm.on("pause", () => paused++);
    await vm.start();
    const p = vm.pause();
    vm.stop("test");
    await withTimeout(p, 10_000, "pause");
    await withTimeout(vm.wait(), 10_000, "stop");
    assert.equal(vm.state, "stopped");
    assert.equal(paused, 0);
    vm.close();
  });
}

test("a VM of two vCPUs cannot run them on the main thread: start() refuses it, nothing runs", async () => {
  const m = fakeMachine([[BLOCK], [BLOCK]]);
  const vm = new Vm(m, -1, undefined, "main");
  await assert.rejects(vm.start(), /vcpuThreads "main" runs one vCPU on this thread: this VM has 2/);
  assert.equal(vm.state, "created");
  vm.close();
});

test("pooled vCPUs that would hold every thread of libuv's pool are refused, saying how to grow it", async () => {
  const size = Number.parseInt(process.env.UV_THREADPOOL_SIZE ?? "4", 10);
  const m = fakeMachine(Array.from({ length: size }, () => [BLOCK]));
  const vm = new Vm(m, -1, undefined, "pooled");
  await assert.rejects(vm.start(), new RegExp(`pooled vCPUs and cards: ${size} would hold all of libuv's ${size}-thread pool .* UV_THREADPOOL_SIZE of at least ${size + 1}`));
  // Refused before anything started: the VM can still be stopped and closed.
  vm.stop("test");
  assert.deepEqual(await vm.wait(), { kind: "stopped", by: "test" });
  vm.close();
});
