// A pooled vCPU: no thread of its own. Each KVM_RUN is a call on a thread of libuv's pool
// (VcpuHandle.runAsync), and its exits are handled on the event loop of the thread that created
// the VM, between runs. What it saves is the V8 isolate and Node environment of a worker thread
// (~9 MiB and ~30 ms of CPU to start, docs/benchmarks.md); what it costs is a hop between threads
// per exit, and exits that wait while the event loop is busy. Fit for guests that exit rarely
// (device I/O goes to cards by ioeventfd, never through here) and for many small VMs in one
// process; a vCPU thread of its own (vcpu-thread.ts) stays the choice for exit-heavy guests.
//
// A vCPU on the main thread (vcpuThreads "main") is prepared here too: no isolate of its own
// either, but KVM_RUN blocks the thread that made the VM, with no hop per exit (exits as fast as
// on a thread of its own), and a periodic signal to that thread (MAIN_TICK_MS) brings it back to
// its event loop while the guest runs without exits. For one VM with one vCPU in a process of its
// own (`typervisor run --vcpu-threads main`): it holds the event loop up to a tick at a time.

import { writeSync } from "node:fs";
import { SIGUSR2, threadTimer, waitWritable } from "../sys/index.js";
import type { VmControl } from "./vcpu-control.js";
import { runVcpuLoopAsync, runVcpuLoopHere, type VcpuStop } from "./exit-loop.js";
import { attachVcpuBuses } from "./vcpu-buses.js";
import type { OpenedVcpu, VcpuWorkerData } from "./vcpu-thread.js";

/** A vCPU a machine opens on the VMM's own thread, to run pooled (MachineVcpu.openPooled). */
export interface PooledVcpuHandle extends OpenedVcpu {
  /** Interrupts a run in progress on whichever pool thread runs it (after immediate_exit is set). */
  interrupt(): void;
}

/** The largest console write made at once: a pipe that polls writable takes this much without blocking (pipe(7): one page). */
const CONSOLE_CHUNK = 4096;
/** How often a full console is looked at again while the guest waits for it. */
const CONSOLE_RETRY_MS = 2;
/**
 * A vCPU on the main thread: how often the signal interrupts its KVM_RUN (the longest its event
 * loop waits while the guest makes no exits), and how long it handles exits before it gives the
 * event loop a turn.
 */
export const MAIN_TICK_MS = 4;
const MAIN_YIELD_MS = 2;

/**
 * Console output from the event loop, which must never block: bytes go out while the descriptor
 * takes them, the rest waits in order, and the vCPU does not run again until it has gone (a full
 * console holds the guest back, as a slow UART does, and as on a vCPU thread). A stop drops what
 * is still waiting; a console that went away drops everything after it.
 */
class EventLoopConsole {
  private readonly waiting: Uint8Array[] = [];
  private broken = false;

  constructor(
    private readonly fd: number,
    private readonly stopping: () => boolean,
  ) {}

  write(bytes: Uint8Array): void {
    if (this.fd < 0 || this.broken) return;
    this.waiting.push(bytes.slice());
    this.flush();
  }

  /** Undefined when nothing waits; else resolves once it has gone out (or the VM is stopping). */
  drained(): Promise<void> | undefined {
    if (this.waiting.length === 0) return undefined;
    return (async () => {
      while (this.waiting.length > 0) {
        if (this.stopping()) {
          this.waiting.length = 0;
          return;
        }
        await new Promise((r) => setTimeout(r, CONSOLE_RETRY_MS));
        this.flush();
      }
    })();
  }

  private flush(): void {
    while (this.waiting.length > 0) {
      const head = this.waiting[0]!;
      let wrote: number;
      try {
        if (!waitWritable(this.fd, 0)) return;
        wrote = writeSync(this.fd, head, 0, Math.min(head.length, CONSOLE_CHUNK));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") return;
        // A console that went away (closed pipe) must not stop the guest.
        this.broken = true;
        this.waiting.length = 0;
        return;
      }
      if (wrote >= head.length) this.waiting.shift();
      else this.waiting[0] = head.subarray(wrote);
    }
  }
}

/**
 * Attaches a pooled vCPU's buses (as a vCPU thread does) and returns its exit loop, to be run once
 * the VM says go. Rejects as a vCPU thread reports an error: the buses could not be built.
 * `where`: "pooled" (KVM_RUN on libuv's pool) or "main" (KVM_RUN on this thread, see above).
 */
export async function preparePooledVcpu(
  data: VcpuWorkerData,
  opened: PooledVcpuHandle,
  control: VmControl,
  where: "pooled" | "main" = "pooled",
): Promise<{ run(): Promise<VcpuStop> }> {
  const console = new EventLoopConsole(data.consoleFd, () => control.stopRequested);
  const buses = await attachVcpuBuses(data, opened, control, (bytes) => console.write(bytes));
  return {
    async run(): Promise<VcpuStop> {
      const loop = {
        vcpu: opened.vcpu,
        pio: buses.pio,
        mmio: buses.mmio,
        control,
        pendingStop: buses.pendingStop,
        dumpState: opened.dumpState,
        clearImmediateExit: () => opened.clearImmediateExit(),
        beforeRun: () => console.drained(),
      };
      let tick: { stop(): void } | undefined;
      try {
        if (where === "pooled") return await runVcpuLoopAsync(loop);
        tick = threadTimer(SIGUSR2, MAIN_TICK_MS);
        return await runVcpuLoopHere({ ...loop, yieldMs: MAIN_YIELD_MS });
      } finally {
        tick?.stop();
        buses.close();
        // Whatever stopped this vCPU stops the VM: the others leave at their next exit or kick.
        control.requestStop();
      }
    },
  };
}
