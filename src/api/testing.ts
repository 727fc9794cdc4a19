// Test helpers for the API and SDK: VM factories over the fake machine (no /dev/kvm), a kernel
// file for boot-source, and a temporary socket path.

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { Vm } from "../vmm/vm.js";
import { measureBoot } from "../security/pcr.js";
import { fakeMachine, type FakeStep } from "../vmm/testing/fake-machine.js";
import type { VmFactory } from "../sdk/microvm.js";

export const BLOCK: FakeStep = { block: true };
export const RESET: FakeStep = { out: 0x64, bytes: [0xfe] };
/** Serial output of `s`, one port write per byte. */
export const text = (s: string): FakeStep[] => [...Buffer.from(s)].map((b) => ({ out: 0x3f8, bytes: [b] }));

/**
 * Each VM built gets a fake machine whose vCPU i replays `scripts[i]` (vCPUs beyond run until
 * stopped), with real cards for `config.drives`, `config.entropy` and `config.nsm`, and the boot measurements `Vm.create` makes
 * (PCR0/1/2 over the given kernel, initrd and command line; PCR4 over `config.id` or a UUID).
 */
export function fakeFactory(scripts: FakeStep[][] = [[BLOCK]], built: Vm[] = []): VmFactory {
  return (config) => {
    const perVcpu = Array.from({ length: config.vcpus }, (_, i) => scripts[i] ?? [BLOCK]);
    const id = config.id ?? randomUUID();
    const pcrs = measureBoot({ kernel: config.kernel.bytes, initrd: config.initrd?.bytes, cmdline: config.cmdline, vmId: id, signingCert: config.signingCert });
    const vm = new Vm(fakeMachine(perVcpu, { drives: config.drives ?? [], entropy: config.entropy, nsm: config.nsm }), config.consoleFd, { id, pcrs });
    built.push(vm);
    return vm;
  };
}

export function tempDir(prefix = "typervisor-api-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A raw image of `bytes` bytes (zeros) for a drive. */
export function fakeImage(dir: string, name = "disk.img", bytes = 64 * 1024): string {
  const p = join(dir, name);
  writeFileSync(p, Buffer.alloc(bytes));
  return p;
}

/** A file that stands for a kernel image (the fake machine does not load it). */
export function fakeKernel(dir: string): string {
  const p = join(dir, "vmlinux");
  writeFileSync(p, Buffer.from("not a kernel: the fake machine does not load it"));
  return p;
}
