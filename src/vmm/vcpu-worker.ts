// Entry point of a vCPU worker thread: one per vCPU, blocking in KVM_RUN. It rebuilds its
// handles from plain numbers (file descriptors and the kvm_run address are process-wide),
// attaches its own bus to the shared legacy device state, waits for the start signal, runs
// the exit loop and reports why it stopped.

import { parentPort, workerData } from "node:worker_threads";
import { writeSync } from "node:fs";
import { VcpuFd, VmFd } from "../kvm/index.js";
import { gettid } from "../sys/index.js";
import { Bus } from "../devices/bus.js";
import { VmControl } from "./control.js";
import { attachLegacyDevices, type LegacyStates } from "./legacy.js";
import { runVcpuLoop, type VcpuStop } from "./exit-loop.js";

export interface VcpuWorkerData {
  vcpuId: number;
  vcpuCount: number;
  vcpuFd: number;
  runAddress: bigint;
  runSize: number;
  vmFd: number;
  control: SharedArrayBuffer;
  legacy: LegacyStates;
  /** Where console output goes (a file descriptor of this process), or -1 to drop it. */
  consoleFd: number;
}

export type VcpuWorkerMessage =
  | { type: "ready"; vcpuId: number; tid: number }
  | { type: "stopped"; vcpuId: number; stop: VcpuStop }
  | { type: "error"; vcpuId: number; message: string };

function main(): void {
  const port = parentPort;
  if (port === null) throw new Error("vcpu-worker must run as a worker thread");
  const data = workerData as VcpuWorkerData;
  const control = new VmControl(data.vcpuCount, data.control);
  const vm = VmFd.fromRaw(data.vmFd);
  const vcpu = VcpuFd.fromRaw(data.vcpuId, data.vcpuFd, data.runAddress, data.runSize);

  let pending: VcpuStop | undefined;
  const requestStop = (stop: VcpuStop): void => {
    pending ??= stop;
    control.requestStop();
  };
  const pio = new Bus("pio");
  const mmio = new Bus("mmio");
  attachLegacyDevices(pio, data.legacy, {
    irq: (line) => ({
      trigger: () => {
        // An ISA edge: assert then deassert the line on the in-kernel PIC/IOAPIC.
        vm.irqLine(line, true);
        vm.irqLine(line, false);
      },
    }),
    output: (bytes) => {
      if (data.consoleFd >= 0) writeAll(data.consoleFd, bytes);
    },
    onReset: () => requestStop({ kind: "reset" }),
    onDebugExit: (status) => requestStop({ kind: "debug-exit", status }),
  });

  port.postMessage({ type: "ready", vcpuId: data.vcpuId, tid: gettid() } satisfies VcpuWorkerMessage);
  if (!control.waitForGo()) {
    port.postMessage({ type: "stopped", vcpuId: data.vcpuId, stop: { kind: "stopped" } } satisfies VcpuWorkerMessage);
    return;
  }
  let stop: VcpuStop;
  try {
    stop = runVcpuLoop({
      vcpu,
      pio,
      mmio,
      control,
      pendingStop: () => pending,
      dumpState: () => ({ regs: vcpu.getRegs(), sregs: vcpu.getSregs() }),
    });
  } catch (e) {
    control.requestStop();
    port.postMessage({
      type: "error",
      vcpuId: data.vcpuId,
      message: e instanceof Error ? e.message : String(e),
    } satisfies VcpuWorkerMessage);
    return;
  }
  // Whatever stopped this vCPU stops the VM: the others leave at their next exit or signal.
  control.requestStop();
  port.postMessage({ type: "stopped", vcpuId: data.vcpuId, stop } satisfies VcpuWorkerMessage);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) {
    try {
      off += writeSync(fd, bytes, off);
    } catch (e) {
      // A console that went away (closed pipe) must not stop the guest.
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
      return;
    }
  }
}

main();
