// The SDK's typed errors: each kind of failure a user meets through MicroVM is its own exported
// class with one sentence, and the lower layer's error stays reachable as `cause`. The KVM
// failures use the real builder with a /dev/kvm path that does not exist (so no KVM is needed);
// the rest run over the fake machine.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { constants } from "node:os";
import * as pkg from "../index.js";
import { MicroVM, probeKernelPath } from "./microvm.js";
import {
  HostError, KernelImageError, KvmUnavailableError, MicroVMConfigError, MicroVMError, MicroVMStateError, ProbeNotBuiltError,
  AttestationUnavailableError, toMicroVMError,
} from "./errors.js";
import { BLOCK, fakeFactory, fakeImage, fakeKernel, tempDir } from "../api/testing.js";
import { Vm, VmConfigError } from "../vmm/vm.js";
import { buildKvmMachine } from "../vmm/builder.js";
import { KvmError } from "../kvm/errors.js";
import { SysError } from "../sys/errors.js";
import { BootSetupError, KernelFormatError } from "../arch/x86_64/errors.js";
import { DriveConfigError } from "../cards/index.js";
import { probePath } from "../probe/path.js";
import type { VmFactory } from "./microvm.js";

/** One sentence: a single line, not empty, no stack or dump glued on. */
function oneSentence(e: Error): void {
  assert.ok(e.message.length > 0 && !e.message.includes("\n"), `one line: ${JSON.stringify(e.message)}`);
}

/** Asserts `fn` throws an error of class `cls` whose message matches `re`, and returns it. */
function caught<T extends Error>(fn: () => unknown, cls: new (...args: never[]) => T, re: RegExp): T {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
  assert.ok(err instanceof MicroVMError, "every SDK error is a MicroVMError");
  assert.equal(err.name, cls.name);
  assert.match(err.message, re);
  oneSentence(err);
  return err;
}

/** A factory that builds on the real KVM builder, but opens `kvmPath` instead of /dev/kvm. */
const kvmAt = (kvmPath: string): VmFactory => (c) => Vm.create(c, (mc) => buildKvmMachine({ ...mc, kvmPath }));
const throwing = (e: unknown): VmFactory => () => {
  throw e;
};

test("every error class is exported from the package entry, under its own name", () => {
  const classes = { MicroVMError, MicroVMConfigError, KernelImageError, ProbeNotBuiltError, KvmUnavailableError, HostError, MicroVMStateError, AttestationUnavailableError };
  for (const [name, cls] of Object.entries(classes)) {
    assert.equal((pkg as Record<string, unknown>)[name], cls, `${name} is exported from src/index.ts`);
    assert.equal(cls.name, name);
  }
  assert.equal(typeof pkg.ImageSignatureError, "function", "the security layer's typed errors are exported too");
  assert.equal(typeof pkg.AttestationInputError, "function");
});

test("a kernel path that does not exist: KernelImageError naming the path and ENOENT, the fs error as cause", () => {
  const path = join(tempDir("typervisor-err-"), "vmlinux-missing");
  const e = caught(() => MicroVM.create({ kernel: path }), KernelImageError, /^cannot read the kernel image ".*vmlinux-missing": ENOENT \(no such file\)$/);
  assert.equal(e.image, "kernel");
  assert.equal(e.path, path);
  assert.equal((e.cause as NodeJS.ErrnoException).code, "ENOENT");
});

test("a kernel that is a directory, and a missing initrd: KernelImageError with the reason", () => {
  const dir = tempDir("typervisor-err-");
  caught(() => MicroVM.create({ kernel: dir }), KernelImageError, /^cannot read the kernel image ".*": EISDIR \(it is a directory\)$/);
  const e = caught(
    () => MicroVM.create({ kernel: fakeKernel(dir), initrd: join(dir, "initrd.img"), vmFactory: fakeFactory() }),
    KernelImageError,
    /^cannot read the initrd image ".*initrd\.img": ENOENT \(no such file\)$/,
  );
  assert.equal(e.image, "initrd");
});

test("a file that is not a kernel: KernelImageError from the builder's KernelFormatError, before any KVM object", () => {
  const dir = tempDir("typervisor-err-");
  const kernel = fakeKernel(dir);
  // The builder parses the image before it opens KVM: the missing device is never reached.
  const e = caught(() => MicroVM.create({ kernel, vmFactory: kvmAt(join(dir, "no-kvm")) }), KernelImageError, /^the kernel image ".*vmlinux" cannot be booted: not a kernel image: /);
  assert.ok(e.cause instanceof KernelFormatError);
  assert.equal(e.path, kernel);
});

test("no /dev/kvm: KvmUnavailableError with the errno and what to do; KvmError as cause", () => {
  const dir = tempDir("typervisor-err-");
  const e = caught(
    () => MicroVM.create({ kernel: probePath(), vmFactory: kvmAt(join(dir, "kvm")) }),
    KvmUnavailableError,
    /^this host cannot run microVMs: .*\/kvm not available: ENOENT \(no such device node: this host has no KVM/,
  );
  assert.equal(e.code, "ENOENT");
  assert.ok(e.cause instanceof KvmError);
  // A missing capability is the same kind of failure.
  const cap = caught(() => MicroVM.create({ kernel: fakeKernel(dir), vmFactory: throwing(new KvmError("KVM is missing required capabilities: KVM_CAP_IRQFD")) }), KvmUnavailableError, /^this host cannot run microVMs: KVM is missing required capabilities: KVM_CAP_IRQFD$/);
  assert.equal(cap.code, undefined);
});

test("a failed system call while building: HostError with the call and errno", () => {
  const dir = tempDir("typervisor-err-");
  const e = caught(() => MicroVM.create({ kernel: fakeKernel(dir), vmFactory: throwing(new SysError("memfd_create", constants.errno.ENOMEM)) }), HostError, /^the host refused what the microVM needs: memfd_create failed: ENOMEM$/);
  assert.equal(e.code, "ENOMEM");
  assert.ok(e.cause instanceof SysError);
});

test("bad config: MicroVMConfigError naming the field, the VM layer's error as cause", () => {
  const dir = tempDir("typervisor-err-");
  const kernel = fakeKernel(dir);
  const vcpus = caught(() => MicroVM.create({ kernel, vcpus: 99, vmFactory: fakeFactory() }), MicroVMConfigError, /^vcpus must be an integer from 1 to 8, got 99$/);
  assert.ok(vcpus.cause instanceof VmConfigError);
  const drive = caught(() => MicroVM.create({ kernel, drives: [{ id: "gone", path: join(dir, "gone.img") }], vmFactory: fakeFactory() }), MicroVMConfigError, /^drive gone: virtio-blk image .*gone\.img does not exist/);
  assert.ok(drive.cause instanceof DriveConfigError);
  const boot = caught(() => MicroVM.create({ kernel, vmFactory: throwing(new BootSetupError("kernel command line is 5000 bytes; this kernel accepts at most 2047")) }), MicroVMConfigError, /^the kernel image ".*vmlinux" cannot boot in this microVM: kernel command line is 5000 bytes/);
  assert.ok(boot.cause instanceof BootSetupError);
  // Values a JavaScript caller can pass that the types forbid.
  caught(() => MicroVM.create(null as never), MicroVMConfigError, /^MicroVM\.create needs a config object/);
  caught(() => MicroVM.create({} as never), MicroVMConfigError, /^kernel is required: a path, "probe" or \{ name, bytes \}$/);
  caught(() => MicroVM.create({ kernel: 42 as never }), MicroVMConfigError, /^kernel must be a path, "probe" or \{ name, bytes: Uint8Array \}, got number 42$/);
  caught(() => MicroVM.create({ kernel: "" }), MicroVMConfigError, /^kernel must be a path or "probe", got an empty string$/);
  caught(() => MicroVM.create({ kernel, drives: {} as never }), MicroVMConfigError, /^drives must be an array, got object$/);
  caught(() => MicroVM.create({ kernel, nsm: { moduleId: "" }, vmFactory: fakeFactory() }), MicroVMConfigError, /^nsm\.moduleId must be a non-empty string$/);
});

test("the probe guest not built: ProbeNotBuiltError says which file is missing and how to build it", () => {
  const root = tempDir("typervisor-err-");
  mkdirSync(join(root, "guest"));
  const e = caught(() => probeKernelPath(root), ProbeNotBuiltError, /^the probe guest is not built \(.*guest\/build\/probe\.elf is missing\): build it with "make -C .*\/guest build\/probe\.elf" \(needs gcc and make\)$/);
  assert.equal(e.path, join(root, "guest/build/probe.elf"));
  mkdirSync(join(root, "guest/build"));
  writeFileSync(join(root, "guest/build/probe.elf"), "");
  assert.equal(probeKernelPath(root), join(root, "guest/build/probe.elf"));
});

test("calls the state does not allow: MicroVMStateError with the state", async () => {
  const dir = tempDir("typervisor-err-");
  const vm = MicroVM.create({ kernel: fakeKernel(dir), drives: [{ id: "rootfs", path: fakeImage(dir, "root.img") }], vmFactory: fakeFactory([[BLOCK]]) });
  await assert.rejects(vm.pause(), (e: unknown) => e instanceof MicroVMStateError && e.state === "created" && e.message === "cannot pause a microVM that is created");
  assert.throws(() => vm.resume(), (e: unknown) => e instanceof MicroVMStateError && e.message === "cannot resume a microVM that is created");
  await assert.rejects(vm.updateDrive("rootfs", { rateLimiter: {} }), MicroVMStateError);
  await vm.start();
  await assert.rejects(vm.start(), (e: unknown) => e instanceof MicroVMStateError && e.state === "running");
  // Arguments naming what the VM does not have, or an image that is not there.
  await assert.rejects(vm.updateDrive("nope", { rateLimiter: {} }), (e: unknown) => e instanceof MicroVMConfigError && /^no running drive "nope"$/.test(e.message));
  await assert.rejects(
    vm.updateDrive("rootfs", { path: join(dir, "gone.img") }),
    (e: unknown) => e instanceof MicroVMConfigError && e.cause instanceof DriveConfigError && /gone\.img does not exist/.test(e.message),
  );
  await assert.rejects(vm.updateNetworkInterface("eth0", { txRateLimiter: {} }), (e: unknown) => e instanceof MicroVMConfigError && /^no running net device "eth0"$/.test(e.message));
  await vm.stop("test");
  assert.throws(() => vm.attest(), (e: unknown) => e instanceof MicroVMStateError && e.state === "stopped" && e.message === "cannot attest a microVM that is stopped");
});

test("toMicroVMError: SDK errors pass; unknown errors stay themselves while building, become HostError at start and pause", () => {
  const sdk = new MicroVMConfigError("x");
  assert.equal(toMicroVMError(sdk, { during: "start" }), sdk);
  const bug = new TypeError("a bug");
  assert.equal(toMicroVMError(bug, { during: "create" }), bug, "a bug keeps its own class and stack");
  assert.equal(toMicroVMError("not an error", { during: "start" }), "not an error");
  const start = toMicroVMError(new Error("vCPU worker exited with code 1"), { during: "start" });
  assert.ok(start instanceof HostError && start.message === "the microVM could not start: vCPU worker exited with code 1");
  const pause = toMicroVMError(new Error("pause: the vCPUs did not park within 5000 ms"), { during: "pause" });
  assert.ok(pause instanceof HostError && /^the microVM could not pause: /.test(pause.message));
  // During an update, only the VM's plain "no such device" errors are the caller's; a bug is not.
  assert.ok(toMicroVMError(new Error("no running drive \"x\""), { during: "update" }) instanceof MicroVMConfigError);
  assert.equal(toMicroVMError(bug, { during: "update" }), bug);
  assert.ok(toMicroVMError(new KernelFormatError("no magic"), { during: "create" }) instanceof KernelImageError);
});
