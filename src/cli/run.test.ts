// `typervisor run` in this process, over the fake machine (no /dev/kvm): the VM is built and
// driven by MicroVM — the test reaches the VM only through MicroVM.create, so a run that built a
// Vm itself would fail here — and the SDK's typed errors, the VM's end, signals and console input
// map to the exit statuses and one-line messages HELP documents.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { PassThrough } from "node:stream";
import { attachConsoleInput } from "./run.js";
import { main, EXIT_OK, EXIT_GUEST_FAILURE, EXIT_USAGE, EXIT_CRASH, EXIT_HOST } from "./main.js";
import { MicroVM, type MicroVMConfig } from "../sdk/microvm.js";
import { HostError, KernelImageError, KvmUnavailableError, MicroVMConfigError, ProbeNotBuiltError } from "../sdk/errors.js";
import { BLOCK, RESET, fakeFactory, fakeImage, fakeKernel, tempDir, text } from "../api/testing.js";
import type { FakeStep } from "../vmm/testing/fake-machine.js";
import { KernelFormatError } from "../arch/x86_64/errors.js";
import { ImageSignatureError, signImage } from "../security/image.js";
import { chipInit, chipLoad } from "../security/chip.js";
import { bootMeasurements, PCR_IMAGE, PCR_SIGNER } from "../security/pcr.js";
import { DEFAULT_LINUX_CMDLINE } from "../sdk/defaults.js";

const createOriginal = MicroVM.create.bind(MicroVM);

/** MicroVM.create as `run` calls it, building on a fake machine whose vCPU 0 replays `script`; records each call and MicroVM. */
function fakeCreate(t: TestContext, script: FakeStep[]) {
  const made: Array<{ config: MicroVMConfig; vm: MicroVM }> = [];
  t.mock.method(MicroVM, "create", (config: MicroVMConfig) => {
    // Recorded before building, so that a call that throws is counted too.
    const call = { config } as { config: MicroVMConfig; vm: MicroVM };
    made.push(call);
    call.vm = createOriginal({ ...config, vmFactory: fakeFactory([script]) });
    return call.vm;
  });
  return made;
}

/** Everything written to stderr while the test runs. */
function captureStderr(t: TestContext): () => string {
  const w = t.mock.method(process.stderr, "write", () => true);
  return () => w.mock.calls.map((c) => String(c.arguments[0])).join("");
}

function oneLine(err: string, re: RegExp): void {
  assert.match(err, re);
  assert.equal(err.trimEnd().split("\n").length, 1, `one line, got: ${err}`);
}

test("run builds the VM with MicroVM.create (kernel and initrd bytes, root args, console fd, drives) and ends with its exit", async (t) => {
  const dir = tempDir("typervisor-run-");
  const kernel = fakeKernel(dir);
  const initrd = join(dir, "initrd");
  writeFileSync(initrd, "an initrd");
  const disk = fakeImage(dir, "root.img");
  const consoleOut = join(dir, "console.out");
  const made = fakeCreate(t, [...text("hello\n"), RESET]);
  const status = await main([
    "run", "--kernel", kernel, "--initrd", initrd, "--drive", `path=${disk},root,id=rootfs`, "--vcpus", "1", "--mem", "64", "--console", `file:${consoleOut}`,
  ]);
  assert.equal(status, EXIT_OK);
  assert.equal(made.length, 1, "one MicroVM");
  const { config, vm } = made[0]!;
  assert.deepEqual(config.kernel, { name: kernel, bytes: new Uint8Array(readFileSync(kernel)) });
  assert.deepEqual(config.initrd, { name: initrd, bytes: new Uint8Array(Buffer.from("an initrd")) });
  assert.equal(config.cmdline, `${DEFAULT_LINUX_CMDLINE} root=/dev/vda rw`, "the SDK's default for a kernel, with the root drive's arguments");
  assert.equal(config.bootProtocol, "linux64");
  assert.deepEqual(config.drives, [{ id: "rootfs", path: disk, readOnly: false }]);
  assert.equal(typeof config.consoleFd, "number");
  assert.equal(config.imageSignature, undefined);
  assert.equal(readFileSync(consoleOut, "utf8"), "hello\n", "guest output went to the console file");
  assert.equal(vm.state, "stopped");
  assert.deepEqual(vm.exit, { kind: "reset" });
});

test("run without --kernel asks MicroVM for the probe guest and its default command line; --console none discards output", async (t) => {
  // The probe is read by MicroVM (ProbeNotBuiltError is its to throw); the fake machine does not load it.
  const made = fakeCreate(t, [RESET]);
  assert.equal(await main(["run", "--console", "none"]), EXIT_OK);
  assert.equal(made[0]!.config.kernel, "probe");
  assert.equal(made[0]!.config.cmdline, "probe.run=demo");
  assert.equal(made[0]!.config.consoleFd, -1);
});

test("--signature/--trust: MicroVM checks the signature (imageSignature) and measures the certificate into PCR8; a bad one is exit 2 in one line", async (t) => {
  const dir = tempDir("typervisor-run-");
  const kernel = fakeKernel(dir);
  chipInit(join(dir, "chip"));
  const chip = chipLoad(join(dir, "chip"));
  const cmdline = "console=ttyS0 signed=1";
  const pcr0 = bootMeasurements({ kernel: new Uint8Array(readFileSync(kernel)), cmdline, vmId: "" }).get(PCR_IMAGE)!;
  const { signature, certificate } = signImage({ pcr0, key: chip.leafKey, cert: chip.leaf.der });
  writeFileSync(join(dir, "sig"), signature);
  writeFileSync(join(dir, "cert.der"), certificate);
  const made = fakeCreate(t, [RESET]);
  const args = (c: string) => ["run", "--kernel", kernel, "--cmdline", c, "--console", "none", "--signature", join(dir, "sig"), "--trust", join(dir, "cert.der"), "--require-signed"];
  assert.equal(await main(args(cmdline)), EXIT_OK);
  assert.deepEqual(made[0]!.config.imageSignature, { signature: new Uint8Array(signature), trust: new Uint8Array(certificate) });
  const sha384 = (b: Uint8Array) => createHash("sha384").update(b).digest();
  assert.deepEqual(Buffer.from(made[0]!.vm.vm.pcrs.get(PCR_SIGNER)), sha384(Buffer.concat([Buffer.alloc(48), sha384(certificate)])));

  const err = captureStderr(t);
  assert.equal(await main(args("console=ttyS0 signed=0")), EXIT_USAGE);
  oneLine(err(), /^typervisor: refusing to boot: the image signature does not verify \(pcr0: /);
  assert.equal(made.length, 2, "the refusal came from MicroVM.create");
});

test("how the VM ended, through MicroVM, is the exit status", async (t) => {
  const cases: Array<[FakeStep[], number, RegExp | undefined]> = [
    [[{ out: 0xf4, bytes: [0] }], EXIT_OK, undefined],
    [[{ out: 0xf4, bytes: [3] }], EXIT_GUEST_FAILURE, /the guest reported failure \(status 3\)/],
    [[{ shutdown: true }], EXIT_CRASH, /guest crashed on vCPU 0/],
    [[{ fail: "KVM_RUN failed: EFAULT" }], EXIT_HOST, /vCPU 0 failed: KVM_RUN failed: EFAULT/],
  ];
  for (const [script, status, re] of cases) {
    await t.test(`exit ${status}`, async (t) => {
      fakeCreate(t, script);
      const err = captureStderr(t);
      assert.equal(await main(["run", "--kernel", fakeKernel(tempDir("typervisor-run-")), "--console", "none"]), status);
      if (re !== undefined) assert.match(err(), re);
      else assert.equal(err(), "");
    });
  }
});

test("SIGINT and SIGTERM stop the MicroVM (130, 143); the handlers are gone afterwards", async (t) => {
  for (const [sig, status] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    const made = fakeCreate(t, [BLOCK]);
    const before = new Set(process.listeners(sig));
    const done = main(["run", "--kernel", fakeKernel(tempDir("typervisor-run-")), "--console", "none"]);
    // Send the signal to run's own handler only (the test runner may have its own).
    while (made.length === 0 || made[0]!.vm.state !== "running") await new Promise((r) => setTimeout(r, 5));
    const added = process.listeners(sig).filter((l) => !before.has(l));
    assert.equal(added.length, 1);
    (added[0] as (s: NodeJS.Signals) => void)(sig);
    assert.equal(await done, status);
    assert.deepEqual(made[0]!.vm.exit, { kind: "stopped", by: `signal ${sig}` });
    assert.deepEqual(new Set(process.listeners(sig)), before);
    t.mock.restoreAll();
  }
});

test("MicroVM.create's typed errors map to HELP's exit statuses in one line; a bug is thrown", async (t) => {
  const kernel = fakeKernel(tempDir("typervisor-run-"));
  const cases: Array<[Error, number, RegExp]> = [
    [new MicroVMConfigError("vcpus must be an integer from 1 to 8, got 9"), EXIT_USAGE, /^typervisor: vcpus must be/],
    [new KernelImageError("the kernel image ... cannot be booted", "kernel", kernel, { cause: new KernelFormatError("not a kernel image: no ELF magic") }), EXIT_USAGE, /^typervisor: .*vmlinux: not a kernel image: no ELF magic$/m],
    [new ImageSignatureError("signature", "bad"), EXIT_USAGE, /^typervisor: refusing to boot: /],
    [new KvmUnavailableError("this host cannot run microVMs: cannot open /dev/kvm: ENOENT", "ENOENT"), EXIT_HOST, /\/dev\/kvm/],
    [new HostError("the host refused what the microVM needs: mmap: ENOMEM", "ENOMEM"), EXIT_HOST, /ENOMEM/],
    [new ProbeNotBuiltError("the probe guest is not built (x is missing)", "x"), EXIT_HOST, /the probe guest is not built/],
  ];
  for (const [e, status, re] of cases) {
    const create = t.mock.method(MicroVM, "create", () => {
      throw e;
    });
    const err = captureStderr(t);
    assert.equal(await main(["run", "--kernel", kernel, "--console", "none"]), status, e.name);
    oneLine(err(), re);
    assert.equal(create.mock.callCount(), 1);
    t.mock.restoreAll();
  }
  t.mock.method(MicroVM, "create", () => {
    throw new TypeError("a bug");
  });
  await assert.rejects(main(["run", "--kernel", kernel, "--console", "none"]), TypeError);
});

test("a VM that cannot start is stopped and reported: exit 4, one line", async (t) => {
  const made: MicroVM[] = [];
  t.mock.method(MicroVM, "create", (config: MicroVMConfig) => {
    const vm = createOriginal({ ...config, vmFactory: fakeFactory([[BLOCK]]) });
    vm.vm.start = () => Promise.reject(new Error("no threads"));
    made.push(vm);
    return vm;
  });
  const err = captureStderr(t);
  assert.equal(await main(["run", "--kernel", fakeKernel(tempDir("typervisor-run-")), "--console", "none"]), EXIT_HOST);
  oneLine(err(), /^typervisor: cannot start the VM: no threads$/m);
  assert.deepEqual(made[0]!.exit, { kind: "stopped", by: "start failed" });
});

test("console input on a terminal goes to MicroVM.write; Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A x stops the VM", async (t) => {
  const vm = createOriginal({ kernel: fakeKernel(tempDir("typervisor-run-")), consoleFd: -1, vmFactory: fakeFactory([[BLOCK]]) });
  const write = t.mock.method(vm, "write");
  const modes: boolean[] = [];
  const stdin = Object.assign(new PassThrough(), {
    isTTY: true,
    setRawMode(on: boolean) {
      modes.push(on);
      return this;
    },
  }) as unknown as NodeJS.ReadStream;
  const restore = attachConsoleInput(vm, stdin);
  assert.deepEqual(modes, [true], "raw mode");
  await vm.start();
  stdin.write(Buffer.from([0x61, 0x01, 0x01, 0x01, 0x79]));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(write.mock.calls.map((c) => [...(c.arguments[0] as Uint8Array)]), [[0x61], [0x01], [0x01], [0x79]]);
  assert.ok(write.mock.calls.every((c) => c.result === 1), "the UART took each byte");
  stdin.write(Buffer.from([0x01, 0x78]));
  assert.deepEqual(await vm.exited, { kind: "stopped", by: "console escape" });
  restore();
  assert.deepEqual(modes, [true, false], "raw mode undone");
});
