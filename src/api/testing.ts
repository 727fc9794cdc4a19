// Test helpers for the API and SDK: VM factories over the fake machine (no /dev/kvm), a kernel
// file for boot-source, and a temporary socket path.

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Vm } from "../vmm/vm.js";
import { fakeMachineBuilder, type FakeStep } from "../vmm/testing/fake-machine.js";
import type { VmFactory } from "../sdk/microvm.js";

export const BLOCK: FakeStep = { block: true };
export const RESET: FakeStep = { out: 0x64, bytes: [0xfe] };
/** Serial output of `s`, one port write per byte. */
export const text = (s: string): FakeStep[] => [...Buffer.from(s)].map((b) => ({ out: 0x3f8, bytes: [b] }));

/**
 * Each VM is built by Vm.create itself — the same checks, device plan, boot measurements and
 * command line as on KVM — on a fake machine whose vCPU i replays `scripts[i]` (vCPUs beyond run
 * until stopped), with real cards for every device the config names.
 */
export function fakeFactory(scripts: FakeStep[][] = [[BLOCK]], built: Vm[] = []): VmFactory {
  return (config) => {
    const vm = Vm.create(config, fakeMachineBuilder(scripts));
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
