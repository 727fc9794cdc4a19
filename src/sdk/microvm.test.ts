// The SDK over the fake machine: console as a stream, pause/resume, metrics, exit and crash
// events, stop; the console never stalls the guest when nobody reads it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { MicroVM } from "./microvm.js";
import { BLOCK, RESET, fakeFactory, fakeKernel, tempDir, text } from "../api/testing.js";
import type { VmExit } from "../vmm/vm.js";

const kernel = () => fakeKernel(tempDir("typervisor-sdk-"));

async function readAll(s: NodeJS.ReadableStream): Promise<string> {
  let out = "";
  for await (const c of s) out += (c as Buffer).toString("utf8");
  return out;
}

test("console is a Readable of guest output that ends with the VM; exit event; metrics", async () => {
  const vm = MicroVM.create({ kernel: kernel(), vcpus: 2, memMiB: 64, vmFactory: fakeFactory([[...text("PROBE hello\n"), RESET]]) });
  assert.equal(vm.state, "created");
  assert.equal(vm.config.cmdline, "console=ttyS0 reboot=k panic=1");
  const exitEvent = new Promise<VmExit>((r) => vm.once("exit", r));
  const out = readAll(vm.console);
  await vm.start();
  assert.deepEqual(await vm.exited, { kind: "reset" });
  assert.deepEqual(await exitEvent, { kind: "reset" });
  assert.equal(await out, "PROBE hello\n");
  assert.equal(vm.state, "stopped");
  const m = vm.metrics();
  assert.equal(m.vcpus.length, 2);
  assert.equal(m.vcpus[0]!.IO_OUT, 13);
  assert.equal(m.console.bytes, 12);
  assert.ok(m.uptimeMs >= 0);
  await assert.rejects(vm.start(), /cannot start a microVM that is stopped/);
});

test("pause, resume and stop; state and events follow", async () => {
  const vm = MicroVM.create({ kernel: kernel(), vmFactory: fakeFactory([[BLOCK]]) });
  const events: string[] = [];
  for (const e of ["start", "pause", "resume", "exit"] as const) vm.on(e, () => events.push(e));
  await assert.rejects(vm.pause(), /cannot pause a microVM that is created/);
  await vm.start();
  assert.equal(vm.state, "running");
  await vm.pause();
  assert.equal(vm.state, "paused");
  assert.equal(vm.vm.state, "paused");
  vm.resume();
  assert.equal(vm.state, "running");
  assert.throws(() => vm.resume(), /cannot resume a microVM that is running/);
  assert.deepEqual(await vm.stop("test"), { kind: "stopped", by: "test" });
  assert.deepEqual(events, ["start", "pause", "resume", "exit"]);
  assert.equal(vm.state, "stopped");
});

test("a crash emits crash as well as exit", async () => {
  const vm = MicroVM.create({ kernel: kernel(), vmFactory: fakeFactory([[{ shutdown: true }]]) });
  const crash = new Promise<VmExit>((r) => vm.once("crash", r));
  await vm.start();
  const exit = await vm.exited;
  assert.equal(exit.kind, "crash");
  assert.equal((await crash).kind, "crash");
});

test("nobody reads the console: the guest still runs to the end, excess output is dropped and counted", async () => {
  const big = "x".repeat(20_000);
  const vm = MicroVM.create({ kernel: kernel(), consoleBufferBytes: 1024, vmFactory: fakeFactory([[...text(big), RESET]]) });
  await vm.start();
  assert.deepEqual(await vm.exited, { kind: "reset" });
  // Let the pipe drain into the (unread) stream.
  await new Promise((r) => setTimeout(r, 100));
  const m = vm.metrics();
  assert.equal(m.console.bytes, big.length);
  assert.ok(m.console.droppedBytes >= big.length - 1024, JSON.stringify(m.console));
  assert.ok(vm.console.readableLength <= 1024);
  vm.console.destroy();
});

test("consoleFd sends output to a descriptor; console is then empty; bad config names the field", async () => {
  const vm = MicroVM.create({ kernel: kernel(), consoleFd: -1, vmFactory: fakeFactory([[...text("hi"), RESET]]) });
  await vm.start();
  await vm.exited;
  assert.equal(await readAll(vm.console), "");
  assert.throws(() => MicroVM.create({ kernel: join(tempDir(), "nope") }), /cannot read the kernel image ".*nope": ENOENT/);
  assert.throws(() => MicroVM.create({ kernel: kernel(), vcpus: 99 }), /vcpus must be an integer from 1 to 8, got 99/);
});
