// A microVM: created from validated config by `Vm.create` (the one wiring point), run by one
// worker thread per vCPU, stopped by the guest (reset, debug exit, triple fault), by a signal,
// or by the caller. The main thread never blocks on the guest: it only starts and stops
// workers and feeds console input.

import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import { Kvm, VmFd, VcpuFd } from "../kvm/index.js";
import * as sys from "../sys/index.js";
import { Bus } from "../devices/bus.js";
import type { Serial8250 } from "../devices/legacy/serial.js";
import { createMemfdGuestMemory, type MemfdGuestMemory } from "../memory/create.js";
import { configureVm, configureVcpus, type BootSummary, type KernelSource } from "./builder.js";
import { VmControl, type CounterName } from "./control.js";
import { attachLegacyDevices, createLegacyStates, type LegacyStates } from "./legacy.js";
import type { VcpuStop } from "./exit-loop.js";
import type { VcpuWorkerData, VcpuWorkerMessage } from "./vcpu-worker.js";
import { memoryLayout, parseKernelImage } from "../arch/x86_64/index.js";

export const MAX_VCPUS = 8;
export const MIN_MEM_MIB = 16;
export const MAX_MEM_MIB = 64 * 1024;

export interface VmConfig {
  kernel: KernelSource;
  initrd?: KernelSource;
  cmdline: string;
  vcpus: number;
  memMiB: number;
  /** Console output: a file descriptor of this process, or -1 to discard. */
  consoleFd: number;
  /** Boot entry: the Linux 64-bit protocol (default) or PVH. */
  bootProtocol?: "linux64" | "pvh";
  /** KVM device node (tests point it elsewhere). */
  kvmPath?: string;
}

/** How the VM ended. */
export type VmExit =
  | { kind: "reset" } // the guest reset the machine (i8042 0xfe, KVM reset event)
  | { kind: "debug-exit"; status: number } // the guest wrote its status to the debug-exit port
  | { kind: "poweroff" }
  | { kind: "halted" }
  | { kind: "stopped"; by: string } // stopped by the VMM's user (API, SDK, signal)
  | { kind: "crash"; vcpu: number; reason: string; detail: string; state?: unknown }
  | { kind: "error"; vcpu: number; message: string };

export class VmConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VmConfigError";
  }
}

export function validateVmConfig(c: VmConfig): void {
  if (!Number.isInteger(c.vcpus) || c.vcpus < 1 || c.vcpus > MAX_VCPUS) {
    throw new VmConfigError(`vcpus must be an integer from 1 to ${MAX_VCPUS}, got ${c.vcpus}`);
  }
  if (!Number.isInteger(c.memMiB) || c.memMiB < MIN_MEM_MIB || c.memMiB > MAX_MEM_MIB) {
    throw new VmConfigError(`memory must be an integer from ${MIN_MEM_MIB} to ${MAX_MEM_MIB} MiB, got ${c.memMiB}`);
  }
}

interface VcpuSlot {
  fd: VcpuFd;
  worker?: Worker;
  tid?: number;
  done: boolean;
}

export class Vm extends EventEmitter {
  readonly control: VmControl;
  readonly boot: BootSummary;
  private readonly legacy: LegacyStates;
  private readonly serial: Serial8250;
  private readonly slots: VcpuSlot[];
  private exitInfo: VmExit | undefined;
  private stopBy: string | undefined;
  private readonly exited: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  private started = false;
  private closed = false;
  readonly startedAt = Date.now();

  private constructor(
    readonly config: VmConfig,
    private readonly kvm: Kvm,
    private readonly vmFd: VmFd,
    private readonly mem: MemfdGuestMemory,
    vcpus: VcpuFd[],
    boot: BootSummary,
  ) {
    super();
    this.control = new VmControl(vcpus.length);
    this.boot = boot;
    this.slots = vcpus.map((fd) => ({ fd, done: false }));
    this.legacy = createLegacyStates();
    // The main thread's view of the UART, for console input; vCPU workers attach their own
    // device objects to the same shared state.
    const { serial } = attachLegacyDevices(new Bus("pio-main"), this.legacy, {
      irq: (line) => ({
        trigger: () => {
          this.vmFd.irqLine(line, true);
          this.vmFd.irqLine(line, false);
        },
      }),
      output: () => {},
      onReset: () => {},
      onDebugExit: () => {},
    });
    this.serial = serial;
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /** Builds a VM ready to start: KVM objects, memory, the loaded kernel, configured vCPUs. */
  static create(config: VmConfig): Vm {
    validateVmConfig(config);
    // A file that is not a kernel is refused before any KVM object exists.
    parseKernelImage(config.kernel.bytes);
    const kvm = Kvm.open(config.kvmPath);
    let vmFd: VmFd | undefined;
    let mem: MemfdGuestMemory | undefined;
    const vcpus: VcpuFd[] = [];
    try {
      vmFd = kvm.createVm();
      mem = createMemfdGuestMemory(memoryLayout(config.memMiB * 1024 * 1024));
      configureVm(kvm, vmFd, mem.memory);
      for (let i = 0; i < config.vcpus; i++) vcpus.push(vmFd.createVcpu(i));
      const boot = configureVcpus(kvm, vcpus, mem.memory, config);
      return new Vm(config, kvm, vmFd, mem, vcpus, boot);
    } catch (e) {
      for (const v of vcpus) v.close();
      mem?.close();
      vmFd?.close();
      kvm.close();
      throw e;
    }
  }

  /** Starts every vCPU. Resolves once all of them are running. */
  async start(): Promise<void> {
    if (this.started) throw new Error("the VM has already been started");
    this.started = true;
    // KVM_RUN returns EINTR on the kick signal only if it has a handler (its default action
    // would end the process).
    sys.installSignalHandler("SIGUSR2");
    const ready: Array<Promise<void>> = [];
    for (const slot of this.slots) {
      const data: VcpuWorkerData = {
        vcpuId: slot.fd.id,
        vcpuCount: this.slots.length,
        vcpuFd: slot.fd.fd,
        runAddress: slot.fd.runAddress,
        runSize: slot.fd.runSize,
        vmFd: this.vmFd.fd,
        control: this.control.sab,
        legacy: this.legacy,
        consoleFd: this.config.consoleFd,
      };
      const worker = new Worker(new URL("./vcpu-worker.js", import.meta.url), { workerData: data });
      slot.worker = worker;
      ready.push(
        new Promise<void>((resolve, reject) => {
          worker.on("message", (m: VcpuWorkerMessage) => {
            if (m.type === "ready") {
              slot.tid = m.tid;
              resolve();
            } else if (m.type === "stopped") {
              this.onVcpuStopped(m.vcpuId, m.stop);
            } else {
              this.finish({ kind: "error", vcpu: m.vcpuId, message: m.message });
              this.onVcpuDone(m.vcpuId);
            }
          });
          worker.on("error", (err) => {
            reject(err);
            this.finish({ kind: "error", vcpu: slot.fd.id, message: err.message });
            this.onVcpuDone(slot.fd.id);
          });
          worker.on("exit", () => {
            if (!slot.done) this.onVcpuDone(slot.fd.id);
          });
        }),
      );
    }
    await Promise.all(ready);
    this.control.go();
    this.emit("start");
  }

  /** Console input for the guest's UART. Returns the bytes accepted. */
  sendConsoleInput(bytes: Uint8Array): number {
    return this.serial.enqueueInput(bytes);
  }

  /** Asks every vCPU to stop; `wait()` resolves when they have. */
  stop(by = "request"): void {
    this.stopBy ??= by;
    this.control.requestStop();
    this.kickAll();
  }

  /** Resolves with how the VM ended, once every vCPU thread has stopped. */
  wait(): Promise<VmExit> {
    return this.exited;
  }

  /** Exit counters of every vCPU. */
  exitCounters(): Array<Record<CounterName, number>> {
    return this.slots.map((_, i) => this.control.snapshot(i));
  }

  get guestMemory() {
    return this.mem.memory;
  }

  /** Releases KVM objects and guest memory. Only after `wait()` resolved (or if never started). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.slots) s.fd.close();
    this.mem.close();
    this.vmFd.close();
    this.kvm.close();
  }

  private kickAll(): void {
    const pid = process.pid;
    for (const slot of this.slots) {
      if (slot.done) continue;
      // immediate_exit makes the next KVM_RUN return at once; the signal interrupts a
      // KVM_RUN already in progress (it returns EINTR). DESIGN.md §6.
      slot.fd.kvmRun.immediateExit = 1;
      if (slot.tid !== undefined) {
        try {
          sys.tgkill(pid, slot.tid, sys.SIGUSR2);
        } catch {
          // The thread already left (ESRCH): nothing to interrupt.
        }
      }
    }
  }

  private onVcpuStopped(vcpu: number, stop: VcpuStop): void {
    this.finish(stop.kind === "stopped" ? { kind: "stopped", by: this.stopBy ?? "request" } : stop.kind === "crash" ? { ...stop, vcpu } : stop);
    // One vCPU stopping stops the VM: wake the others out of KVM_RUN.
    this.kickAll();
    this.onVcpuDone(vcpu);
  }

  private onVcpuDone(vcpu: number): void {
    const slot = this.slots[vcpu];
    if (slot === undefined || slot.done) return;
    slot.done = true;
    this.kickAll();
    if (this.slots.every((s) => s.done)) {
      const exit = this.exitInfo ?? { kind: "stopped", by: this.stopBy ?? "request" };
      this.exitInfo = exit;
      this.emit("exit", exit);
      this.resolveExit(exit);
    }
  }

  /** Records the first reason the VM ended; later ones (the other vCPUs' "stopped") don't replace it. */
  private finish(exit: VmExit): void {
    if (this.exitInfo === undefined || (this.exitInfo.kind === "stopped" && exit.kind !== "stopped")) {
      this.exitInfo = exit;
    }
  }
}
