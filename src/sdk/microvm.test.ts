// The SDK over the fake machine: console as a stream, pause/resume, metrics, exit and crash
// events, stop; the console never stalls the guest when nobody reads it; drives and their
// metrics; attest() against the security chip.

import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { VsockConnectError } from "./vsock.js";
import { MicroVM, AttestationUnavailableError } from "./microvm.js";
import { MicroVMConfigError } from "./errors.js";
import { BLOCK, RESET, fakeFactory, fakeImage, fakeKernel, tempDir, text } from "../api/testing.js";
import { CHIP_FILES, chipInit } from "../security/chip.js";
import { verifyAttestation } from "../security/attestation.js";
import type { VmConfig, VmExit } from "../vmm/vm.js";

const kernel = () => fakeKernel(tempDir("typervisor-sdk-"));

async function readAll(s: NodeJS.ReadableStream): Promise<string> {
  let out = "";
  for await (const c of s) out += (c as Buffer).toString("utf8");
  return out;
}

test("console is a Readable of guest output that ends with the VM; exit event; metrics", async () => {
  const vm = MicroVM.create({ kernel: kernel(), vcpus: 2, memMiB: 64, vmFactory: fakeFactory([[...text("PROBE hello\n"), RESET]]) });
  assert.equal(vm.state, "created");
  assert.equal(vm.config.cmdline, "console=ttyS0 reboot=k panic=1 pci=off", "the default Linux command line (sdk/defaults.ts), the same as the CLI's and the API's");
  const exitEvent = new Promise<VmExit>((r) => vm.once("exit", r));
  const out = readAll(vm.console);
  assert.equal(vm.metrics().uptimeMs, 0, "0 before start");
  const t0 = Date.now();
  await vm.start();
  assert.deepEqual(await vm.exited, { kind: "reset" });
  assert.deepEqual(await exitEvent, { kind: "reset" });
  assert.equal(await out, "PROBE hello\n");
  assert.equal(vm.state, "stopped");
  const tm0 = Date.now();
  const m = vm.metrics();
  const tm1 = Date.now();
  assert.equal(m.vcpus.length, 2);
  assert.equal(m.vcpus[0]!.IO_OUT, 13);
  assert.equal(m.console.bytes, 12);
  // Milliseconds since the vCPUs were released: startedAt lies within start(), uptime within metrics().
  const startedAt = vm.vm.startedAt!;
  assert.ok(startedAt >= t0 && startedAt <= tm0, `startedAt ${startedAt} within [${t0}, ${tm0}]`);
  assert.ok(m.uptimeMs >= tm0 - startedAt && m.uptimeMs <= tm1 - startedAt, `uptimeMs ${m.uptimeMs} within [${tm0 - startedAt}, ${tm1 - startedAt}]`);
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
  assert.throws(
    () => MicroVM.create({ kernel: kernel(), vcpuThreads: "shared" as "pooled" }),
    /vcpuThreads must be "dedicated" or "pooled" or "main", got "shared"/,
  );
  assert.throws(
    () => MicroVM.create({ kernel: kernel(), vcpus: 2, vcpuThreads: "main" }),
    /vcpuThreads "main" runs one vCPU on the thread that made the VM: vcpus must be 1, got 2/,
  );
});

test("drives: the VM gets them in order with real cards; metrics() has one entry per drive", async () => {
  const dir = tempDir("typervisor-sdk-");
  const vm = MicroVM.create({
    kernel: fakeKernel(dir),
    drives: [{ id: "rootfs", path: fakeImage(dir, "root.img") }, { id: "data", path: fakeImage(dir, "data.img"), readOnly: true }],
    vmFactory: fakeFactory([[BLOCK]]),
  });
  assert.deepEqual(vm.config.drives.map((d) => d.id), ["rootfs", "data"]);
  await vm.start();
  const m = vm.metrics();
  assert.deepEqual(Object.keys(m.drives), ["rootfs", "data"]);
  assert.equal(m.drives["rootfs"]!.requests, 0);
  // While it runs: another image under a drive, new limits; a bad path or drive id is an error.
  await vm.updateDrive("rootfs", { path: fakeImage(dir, "root2.img", 128 * 1024), rateLimiter: { ops: { size: 100, refillTime: 1000 } } });
  await assert.rejects(vm.updateDrive("rootfs", { path: join(dir, "gone.img") }), /gone\.img does not exist/);
  await assert.rejects(vm.updateDrive("nope", { rateLimiter: {} }), /no running drive "nope"/);
  await vm.stop("test");
  await assert.rejects(vm.updateDrive("rootfs", { rateLimiter: {} }), /cannot update a drive of a microVM that is stopped/);
  assert.throws(
    () => MicroVM.create({ kernel: fakeKernel(dir), drives: [{ id: "gone", path: join(dir, "gone.img") }], vmFactory: fakeFactory() }),
    /drive gone: virtio-blk image .*gone\.img does not exist/,
  );
});

test("attest(): a Nitro document over the fake machine verifies against the chip root; PCR4 = SHA384(0^48 || SHA384(vm id))", async () => {
  const dir = tempDir("typervisor-sdk-");
  const chipDir = join(dir, "chip");
  const { chip } = chipInit(chipDir);
  const vm = MicroVM.create({ kernel: fakeKernel(dir), id: "sdk-vm-7", chipDir, vmFactory: fakeFactory([[BLOCK]]) });
  assert.equal(vm.id, "sdk-vm-7");
  assert.equal(vm.config.id, "sdk-vm-7");
  await vm.start();
  const nonce = new Uint8Array([1, 2, 3, 4]);
  const doc = vm.attest({ nonce, userData: new Uint8Array(Buffer.from("ud")), publicKey: new Uint8Array([9]) });
  const v = verifyAttestation(doc, { root: chip.root.der, nonce, maxAgeSeconds: 60 });
  assert.ok(v.ok, JSON.stringify(v));
  assert.equal(v.document.module_id, "sdk-vm-7");
  const sha384 = (b: Uint8Array) => new Uint8Array(createHash("sha384").update(b).digest());
  const pcr4 = sha384(Buffer.concat([new Uint8Array(48), sha384(Buffer.from("sdk-vm-7", "utf8"))]));
  assert.deepEqual(v.document.pcrs.get(4), pcr4);
  assert.deepEqual(v.document.pcrs.get(4), vm.vm.pcrs.get(4));
  assert.deepEqual(v.document.public_key, new Uint8Array([9]));
  // A verifier that expects another VM's identity rejects it.
  const other = verifyAttestation(doc, { root: chip.root.der, expectedPcrs: new Map([[4, Buffer.from(sha384(Buffer.from("x"))).toString("hex")]]) });
  assert.equal(other.ok, false);
  assert.throws(() => vm.attest({ nonce: new Uint8Array(513) }), /nonce is 513 bytes; at most 512/);
  await vm.stop("test");
  assert.throws(() => vm.attest(), /cannot attest a microVM that is stopped/);
});

test("attest() without a chip identity throws AttestationUnavailableError telling to run typervisor chip init", async () => {
  const dir = tempDir("typervisor-sdk-");
  const vm = MicroVM.create({ kernel: fakeKernel(dir), chipDir: join(dir, "nowhere"), vmFactory: fakeFactory([[BLOCK]]) });
  await vm.start();
  assert.throws(() => vm.attest(), (e: unknown) => e instanceof AttestationUnavailableError && /no security chip identity at .*nowhere: run "typervisor chip init"/.test(e.message));
  // An empty directory is no identity either; a partial one is reported as unusable, naming the file.
  const empty = join(dir, "empty");
  mkdirSync(empty, { mode: 0o700 });
  const vm2 = MicroVM.create({ kernel: fakeKernel(dir), chipDir: empty, vmFactory: fakeFactory([[BLOCK]]) });
  assert.throws(() => vm2.attest(), /no security chip identity at .*empty: run "typervisor chip init"/);
  const partial = join(dir, "partial");
  chipInit(partial);
  unlinkSync(join(partial, CHIP_FILES.leafKey));
  const vm3 = MicroVM.create({ kernel: fakeKernel(dir), chipDir: partial, vmFactory: fakeFactory([[BLOCK]]) });
  assert.throws(() => vm3.attest(), (e: unknown) => e instanceof AttestationUnavailableError && /is unusable: .*is missing/.test(e.message));
  await vm.stop("test");
  await vm2.stop("test");
  await vm3.stop("test");
  // The default chip directory follows $TYPERVISOR_CHIP_DIR, as `typervisor chip`.
  const saved = process.env["TYPERVISOR_CHIP_DIR"];
  process.env["TYPERVISOR_CHIP_DIR"] = join(dir, "from-env");
  try {
    const vm4 = MicroVM.create({ kernel: fakeKernel(dir), vmFactory: fakeFactory([[BLOCK]]) });
    assert.equal(vm4.config.chipDir, join(dir, "from-env"));
    await vm4.stop("test");
  } finally {
    if (saved === undefined) delete process.env["TYPERVISOR_CHIP_DIR"];
    else process.env["TYPERVISOR_CHIP_DIR"] = saved;
  }
});

test("entropy: {} and nsm: true with a chip: the VM starts cards virtio-rng and virtio-nsm; metrics().devices has both", async () => {
  const dir = tempDir("typervisor-sdk-");
  const chipDir = join(dir, "chip");
  chipInit(chipDir);
  const vm = MicroVM.create({ kernel: fakeKernel(dir), entropy: {}, nsm: true, chipDir, vmFactory: fakeFactory([[BLOCK]]) });
  assert.deepEqual(vm.config.entropy, {});
  assert.deepEqual(vm.config.nsm, { chipDir });
  await vm.start();
  assert.deepEqual(Object.keys(vm.vm.deviceMetrics()).sort(), ["virtio-nsm", "virtio-rng"]);
  const m = vm.metrics();
  assert.deepEqual(Object.keys(m.devices).sort(), ["virtio-nsm", "virtio-rng"]);
  assert.equal(m.devices["virtio-rng"]!.needsReset, 0);
  assert.deepEqual(m.drives, {});
  await vm.stop("test");
});

test("nsm: { moduleId } reaches the VM; entropy's rate limiter too; nsm false or absent gives no device", async () => {
  const dir = tempDir("typervisor-sdk-");
  const chipDir = join(dir, "chip");
  chipInit(chipDir);
  const configs: VmConfig[] = [];
  const inner = fakeFactory([[BLOCK]]);
  const factory = (c: VmConfig) => {
    configs.push(c);
    return inner(c);
  };
  const rateLimiter = { ops: { size: 100, refillTime: 1000 } };
  const vm = MicroVM.create({ kernel: fakeKernel(dir), entropy: { rateLimiter }, nsm: { moduleId: "enclave-1" }, chipDir, vmFactory: factory });
  assert.deepEqual(configs[0]!.nsm, { chipDir, moduleId: "enclave-1" });
  assert.deepEqual(configs[0]!.entropy, { rateLimiter });
  await vm.start();
  assert.deepEqual(Object.keys(vm.metrics().devices).sort(), ["virtio-nsm", "virtio-rng"]);
  await vm.stop("test");
  const plain = MicroVM.create({ kernel: fakeKernel(dir), nsm: false, chipDir, vmFactory: factory });
  assert.equal(configs[1]!.nsm, undefined);
  assert.equal(configs[1]!.entropy, undefined);
  assert.equal(plain.config.nsm, undefined);
  await plain.start();
  assert.deepEqual(plain.metrics().devices, {});
  await plain.stop("test");
});

test("nsm without a chip identity: create() throws a MicroVMConfigError naming the chip (the VM's DriveConfigError its cause); a bad moduleId is refused", () => {
  const dir = tempDir("typervisor-sdk-");
  assert.throws(
    () => MicroVM.create({ kernel: fakeKernel(dir), nsm: true, chipDir: join(dir, "nochip"), vmFactory: fakeFactory() }),
    (e: unknown) =>
      e instanceof MicroVMConfigError && /^nsm: no chip identity at .*nochip/.test(e.message) && (e.cause as Error).name === "DriveConfigError",
  );
  assert.throws(() => MicroVM.create({ kernel: fakeKernel(dir), nsm: { moduleId: "" }, chipDir: join(dir, "nochip"), vmFactory: fakeFactory() }), /nsm\.moduleId must be a non-empty string/);
});

test("vsock: connect(port) reaches the card's socket; a guest that never accepts is a VsockConnectError; no device is a MicroVMConfigError", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-sdk-vsock-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const plain = MicroVM.create({ kernel: kernel(), vmFactory: fakeFactory([[BLOCK]]) });
  await assert.rejects(plain.vsock.connect(52), (e: unknown) => e instanceof MicroVMConfigError && /no vsock device/.test((e as Error).message));
  const vm = MicroVM.create({ kernel: kernel(), vsock: { guestCid: 3, udsPath: join(dir, "v.sock") }, vmFactory: fakeFactory([[BLOCK]]) });
  await vm.start();
  t.after(() => vm.stop("test"));
  // The fake guest has no driver: the card sends its REQUEST nowhere and the connection times out.
  await assert.rejects(vm.vsock.connect(52, { timeoutMs: 300 }), (e: unknown) => e instanceof VsockConnectError && /port 52/.test((e as Error).message));
});

test("state, exit and events are the Vm's own: driving the Vm underneath moves the MicroVM with it", async () => {
  const vm = MicroVM.create({ kernel: kernel(), vmFactory: fakeFactory([[BLOCK]]) });
  const events: Array<[string, string]> = [];
  for (const e of ["start", "pause", "resume", "exit"] as const) vm.on(e, () => events.push([e, vm.state]));
  await vm.vm.start();
  assert.equal(vm.state, "running");
  await vm.vm.pause();
  assert.equal(vm.state, "paused");
  await assert.rejects(vm.pause(), /cannot pause a microVM that is paused/);
  vm.resume();
  assert.equal(vm.vm.state, "running");
  vm.vm.stop("under the SDK");
  const exit = await vm.exited;
  assert.deepEqual(exit, { kind: "stopped", by: "under the SDK" });
  assert.equal(vm.state, "stopped");
  assert.deepEqual(vm.exit, exit);
  assert.deepEqual(events, [["start", "running"], ["pause", "paused"], ["resume", "running"], ["exit", "stopped"]]);
});
