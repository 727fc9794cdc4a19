// The body of a vCPU worker thread, whatever backs the vCPU: it attaches its own bus to the
// shared legacy device state, reports its thread id (the main thread kicks it with a signal),
// waits for the start signal, runs the exit loop and reports why it stopped. It imports only what
// every exit loop needs (the legacy devices, the virtio register file); the emulated disk and the
// dom0 doorbell are imported by the workers of a VM that has them (each worker is an isolate of
// its own: what it imports, it compiles and keeps, per vCPU).

import { parentPort, workerData } from "node:worker_threads";
import { writeSync } from "node:fs";
import type { VcpuHandle } from "../kvm/hypervisor.js";
import { gettid, waitWritable } from "../sys/index.js";
import { VmControl } from "./vcpu-control.js";
import type { LegacyStates } from "./legacy.js";
import { runVcpuLoop, type VcpuStop } from "./exit-loop.js";
import { attachVcpuBuses, type VcpuBuses } from "./vcpu-buses.js";

export interface VcpuWorkerData {
  vcpuId: number;
  vcpuCount: number;
  control: SharedArrayBuffer;
  legacy: LegacyStates;
  /** Where console output goes (a file descriptor of this process), or -1 to drop it. */
  consoleFd: number;
  /** What the backend needs to open this vCPU (MachineVcpu.backend). */
  backend: unknown;
  /** Virtio-mmio windows to put on this vCPU's MMIO bus (their cards run elsewhere). */
  virtio: Array<{ name: string; base: number; state: SharedArrayBuffer; notifyFd: number }>;
  /** The emulated ATA drive: shared device state and the VMM's image descriptor (process-wide). */
  ata?: { port: number; irq: number; state: SharedArrayBuffer; imageFd: number; sizeBytes: number; readOnly: boolean };
  /** The dom0 drive's doorbell: the back end's control page (a memfd) and the notify eventfd. */
  dom0?: { port: number; controlFd: number; notifyFd: number };
}

export type VcpuWorkerMessage =
  | { type: "ready"; vcpuId: number; tid: number }
  | { type: "stopped"; vcpuId: number; stop: VcpuStop }
  | { type: "error"; vcpuId: number; message: string };

export interface OpenedVcpu {
  vcpu: VcpuHandle;
  irqLine(line: number, level: boolean): void;
  /** Registers for a crash report. */
  dumpState?(): unknown;
  /** Clears the kick flag (kvm_run.immediate_exit) after a pause. */
  clearImmediateExit(): void;
}

export async function runVcpuThread(open: (backend: unknown, vcpuId: number) => OpenedVcpu): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error("a vCPU thread must run as a worker thread");
  // A thread started before its VM was built (early-worker.ts) gets its data as its first message.
  const data = (workerData ?? (await new Promise((resolve) => port.once("message", resolve)))) as VcpuWorkerData;
  const post = (m: VcpuWorkerMessage) => port.postMessage(m);
  const control = new VmControl(data.vcpuCount, data.control);

  let opened: OpenedVcpu;
  try {
    opened = open(data.backend, data.vcpuId);
  } catch (e) {
    control.requestStop();
    post({ type: "error", vcpuId: data.vcpuId, message: e instanceof Error ? e.message : String(e) });
    return;
  }
  let buses: VcpuBuses;
  try {
    buses = await attachVcpuBuses(data, opened, control, (bytes) => {
      if (data.consoleFd >= 0) writeConsole(data.consoleFd, bytes, () => control.stopRequested);
    });
  } catch (e) {
    control.requestStop();
    post({ type: "error", vcpuId: data.vcpuId, message: e instanceof Error ? e.message : String(e) });
    return;
  }
  const { pio, mmio } = buses;
  // The mapping outlives every doorbell write of this thread: unmapped once the loop is over.
  const unmapControl = (): void => buses.close();

  post({ type: "ready", vcpuId: data.vcpuId, tid: gettid() });
  if (!control.waitForGo()) {
    unmapControl();
    post({ type: "stopped", vcpuId: data.vcpuId, stop: { kind: "stopped" } });
    return;
  }
  let stop: VcpuStop;
  try {
    stop = runVcpuLoop({
      vcpu: opened.vcpu,
      pio,
      mmio,
      control,
      pendingStop: buses.pendingStop,
      dumpState: opened.dumpState,
      clearImmediateExit: () => opened.clearImmediateExit(),
    });
  } catch (e) {
    unmapControl();
    control.requestStop();
    post({ type: "error", vcpuId: data.vcpuId, message: e instanceof Error ? e.message : String(e) });
    return;
  }
  unmapControl();
  // Whatever stopped this vCPU stops the VM: the others leave at their next exit or kick.
  control.requestStop();
  post({ type: "stopped", vcpuId: data.vcpuId, stop });
}

/** How long one wait for console room lasts before the stop flag is looked at again. */
const CONSOLE_WAIT_MS = 50;

/**
 * Guest console output, on the vCPU thread. A reader that stalls (a full pipe or terminal) holds
 * the guest back, as a slow UART would, but never a stop: the wait for room is a poll(2) that
 * the stop's SIGUSR2 kick ends (a blocking write(2) would be restarted, SA_RESTART), and output
 * still unwritten when the VM is stopping is dropped.
 */
function writeConsole(fd: number, bytes: Uint8Array, stopping: () => boolean): void {
  let off = 0;
  while (off < bytes.length) {
    try {
      if (!waitWritable(fd, CONSOLE_WAIT_MS)) {
        if (stopping()) return;
        continue;
      }
      off += writeSync(fd, bytes, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
      // A console that went away (closed pipe) must not stop the guest.
      return;
    }
  }
}
