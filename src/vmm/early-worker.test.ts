// vCPU threads started before their VM is built (early-worker.ts, Vm.create): a thread waits for its
// data, a thread that failed while it waited is reported when the VM takes it, a thread nobody takes
// ends and never holds the process, and a VM whose threads started early runs and stops as any other
// (over the fake machine, whose builder names its worker script up front as the KVM builder does).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EarlyVcpuWorker } from "./early-worker.js";
import type { VcpuWorkerData } from "./vcpu-thread.js";
import { Vm } from "./vm.js";
import { fakeMachineBuilder, type FakeStep } from "./testing/fake-machine.js";

/** A worker script as a data: URL (an ES module). */
const script = (body: string): URL => new URL(`data:text/javascript,${encodeURIComponent(body)}`);

/** What vcpu-thread.ts does first: the data from workerData, or as the first message. */
const ECHO = script(`
import { parentPort, workerData } from "node:worker_threads";
const data = workerData ?? (await new Promise((resolve) => parentPort.once("message", resolve)));
parentPort.postMessage({ doubled: data.vcpuId * 2 });
`);

const someData = (vcpuId: number): VcpuWorkerData => ({ vcpuId } as unknown as VcpuWorkerData);

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

test("an early vCPU thread waits for its data and runs with what take() hands it", async () => {
  const early = new EarlyVcpuWorker(ECHO);
  // Long enough for the thread to have started and be waiting.
  await new Promise((r) => setTimeout(r, 200));
  const worker = early.take(someData(21));
  const reply = await within(new Promise((resolve) => worker.once("message", resolve)), 10_000, "the thread's reply");
  assert.deepEqual(reply, { doubled: 42 });
  await within(early.ended, 10_000, "the thread ended");
  assert.throws(() => early.take(someData(1)), /taken already/);
});

test("an early vCPU thread that failed while it waited: take() throws its error instead of handing it data", async () => {
  const early = new EarlyVcpuWorker(script(`throw new Error("the thread broke at start");`));
  await within(early.ended, 10_000, "the failing thread ended");
  assert.throws(() => early.take(someData(0)), /the thread broke at start/);
});

test("an early vCPU thread that ended while it waited: take() says it ended", async () => {
  const early = new EarlyVcpuWorker(script(`process.exit(3);`));
  await within(early.ended, 10_000, "the thread ended");
  assert.throws(() => early.take(someData(0)), /ended \(exit code 3\) before its VM started/);
});

test("discard() ends an early vCPU thread nobody took; a taken one it leaves alone", async () => {
  const early = new EarlyVcpuWorker(ECHO);
  early.discard();
  await within(early.ended, 10_000, "the discarded thread ended");
  assert.throws(() => early.take(someData(0)), /taken already/);

  const taken = new EarlyVcpuWorker(ECHO);
  const worker = taken.take(someData(5));
  taken.discard();
  assert.deepEqual(await within(new Promise((resolve) => worker.once("message", resolve)), 10_000, "the taken thread's reply"), { doubled: 10 });
});

test("an early vCPU thread nobody takes does not keep the process alive, nor does a VM made and never started", () => {
  const earlyUrl = new URL("./early-worker.js", import.meta.url).href;
  const vmUrl = new URL("./vm.js", import.meta.url).href;
  const fakeUrl = new URL("./testing/fake-machine.js", import.meta.url).href;
  const programs = [
    `import { EarlyVcpuWorker } from ${JSON.stringify(earlyUrl)};
     new EarlyVcpuWorker(new URL(${JSON.stringify(ECHO.href)}));`,
    `import { Vm } from ${JSON.stringify(vmUrl)};
     import { fakeMachineBuilder } from ${JSON.stringify(fakeUrl)};
     Vm.create({ kernel: { name: "k", bytes: new Uint8Array(16) }, cmdline: "", vcpus: 2, memMiB: 128, consoleFd: -1 }, fakeMachineBuilder([]));`,
  ];
  for (const program of programs) {
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", program], { encoding: "utf8", timeout: 20_000 });
    assert.equal(r.error, undefined, `the process did not end by itself: ${r.error?.message}`);
    assert.equal(r.status, 0, r.stderr);
  }
});

function consoleFile() {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-early-"));
  const path = join(dir, "console");
  const fd = openSync(path, "w");
  return { fd, read: () => readFileSync(path, "utf8"), close: () => closeSync(fd) };
}

const text = (s: string): FakeStep[] => [...Buffer.from(s)].map((b) => ({ out: 0x3f8, bytes: [b] }));

test("a VM whose vCPU threads Vm.create started runs, prints and stops as the guest asks", async () => {
  const con = consoleFile();
  try {
    const vm = Vm.create(
      { kernel: { name: "k", bytes: new Uint8Array(16) }, cmdline: "", vcpus: 2, memMiB: 128, consoleFd: con.fd },
      fakeMachineBuilder([[...text("up\n"), { out: 0x64, bytes: [0xfe] }], [{ block: true }]]),
    );
    await vm.start();
    const exit = await within(vm.wait(), 20_000, "the VM stopped");
    assert.deepEqual(exit, { kind: "reset" });
    vm.close();
    assert.equal(con.read(), "up\n");
  } finally {
    con.close();
  }
});

test("a VM made with early vCPU threads and stopped before start ends at once, and start() is then refused", async () => {
  const vm = Vm.create({ kernel: { name: "k", bytes: new Uint8Array(16) }, cmdline: "", vcpus: 1, memMiB: 128, consoleFd: -1 }, fakeMachineBuilder([]));
  vm.stop("test");
  assert.deepEqual(await within(vm.wait(), 10_000, "the VM stopped"), { kind: "stopped", by: "test" });
  vm.close();
  await assert.rejects(vm.start(), /has been closed/);
});
