// The KVM_RUN loop of one vCPU and the dispatch of its exits. It runs on the vCPU's worker
// thread (or, for a pooled vCPU, on the event loop while KVM_RUN runs on a pool thread; or, for a
// vCPU on the main thread, between turns of its event loop); nothing here blocks except KVM_RUN
// itself. Only legacy port I/O and config-space
// MMIO are handled here: device I/O proper is a card's job, off this thread.

import type { VcpuHandle } from "../kvm/hypervisor.js";
import type { Bus } from "../devices/bus.js";
import type { VcpuExit } from "../kvm/types.js";
import { Counter, type VmControl } from "./vcpu-control.js";

/** Why a vCPU stopped. `crash` kinds carry what is needed to diagnose the guest. */
export type VcpuStop =
  | { kind: "reset" } // i8042 reset or KVM_SYSTEM_EVENT_RESET: a clean, guest-requested stop
  | { kind: "debug-exit"; status: number } // the guest wrote its status to the debug-exit port
  | { kind: "poweroff" } // KVM_SYSTEM_EVENT_SHUTDOWN
  | { kind: "halted" } // KVM_EXIT_HLT (only without the in-kernel irqchip)
  | { kind: "stopped" } // the VMM asked this vCPU to stop
  | { kind: "crash"; reason: string; detail: string; state?: unknown };

// linux/kvm.h: KVM_SYSTEM_EVENT_*
const SYSTEM_EVENT_SHUTDOWN = 1;
const SYSTEM_EVENT_RESET = 2;
const SYSTEM_EVENT_CRASH = 3;

export interface ExitLoopOptions {
  vcpu: VcpuHandle;
  pio: Bus;
  mmio: Bus;
  control: VmControl;
  /** A stop a device asked for on this thread (reset, debug exit), checked after every exit. */
  pendingStop: () => VcpuStop | undefined;
  /** Registers and special registers, read when the guest crashes. */
  dumpState?: () => unknown;
  /** Clears kvm_run.immediate_exit, set by the VMM to kick this vCPU (pause), before it runs again. */
  clearImmediateExit?: () => void;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/**
 * KVM_RUN errors that mean "run again": EINTR (a signal or immediate_exit: stop, pause), and
 * EAGAIN, which an application processor gets when it leaves KVM_MP_STATE_UNINITIALIZED or
 * INIT_RECEIVED (the BSP's INIT/SIPI, or any wake-up while it waits for one): the kernel then
 * returns to userspace instead of entering the guest (arch/x86/kvm/x86.c, kvm_arch_vcpu_ioctl_run;
 * Firecracker's vcpu.rs treats EAGAIN as handled too).
 */
function retryCode(e: unknown): "EINTR" | "EAGAIN" | undefined {
  const code = typeof e === "object" && e !== null ? (e as { code?: unknown }).code : undefined;
  return code === "EINTR" || code === "EAGAIN" ? code : undefined;
}

/** What the loop does next, before it enters the guest: stop, park, or run. */
const PARK = Symbol("park");
const RUN = Symbol("run");

/**
 * The steps of the exit loop apart from the run itself, so the loop on a vCPU's own thread
 * (runVcpuLoop: KVM_RUN blocks it) and the loop of a pooled vCPU (runVcpuLoopAsync: KVM_RUN on a
 * pool thread, the exits handled on the event loop) are one loop.
 */
function loopSteps(opts: ExitLoopOptions) {
  const { vcpu, pio, mmio, control } = opts;
  const counters = control.row(vcpu.id);
  const crash = (reason: string, detail: string): VcpuStop => ({
    kind: "crash",
    reason,
    detail,
    state: safeDump(opts.dumpState),
  });
  return {
    /** Before each run: a stop to return, PARK (pause requested) or RUN. */
    next(): VcpuStop | typeof PARK | typeof RUN {
      if (control.stopRequested) return opts.pendingStop() ?? { kind: "stopped" };
      return control.pauseRequested ? PARK : RUN;
    },
    /** After parking: clear the kick before looking at the flags again (a new pause request after this is seen at the top, or by KVM through a new kick). */
    unparked(): void {
      opts.clearImmediateExit?.();
    },
    /** A failed run: true to run again (signal, immediate_exit, an AP's EAGAIN), false to rethrow. */
    retry(e: unknown): boolean {
      const retry = retryCode(e);
      if (retry === undefined) return false;
      if (retry === "EINTR") {
        counters[Counter.INTERRUPTED]!++;
        // Clear the kick now, as Firecracker does: the VMM raises its flags before it sets
        // immediate_exit, so they are visible at the top of the loop. Left set (a resume that
        // came before this vCPU parked, a pause that timed out), every later KVM_RUN would
        // return EINTR at once, forever, with the guest frozen.
        opts.clearImmediateExit?.();
      }
      return true;
    },
    /** After a run: dispatch the exit; a stop to return, or undefined to go on. */
    exited(): VcpuStop | undefined {
      const stop = dispatch(vcpu.kvmRun.decode(), pio, mmio, counters, crash);
      return opts.pendingStop() ?? stop;
    },
  };
}

export function runVcpuLoop(opts: ExitLoopOptions): VcpuStop {
  const steps = loopSteps(opts);
  for (;;) {
    const next = steps.next();
    if (next === PARK) {
      opts.control.park();
      steps.unparked();
      continue;
    }
    if (next !== RUN) return next;
    try {
      opts.vcpu.run();
    } catch (e) {
      if (steps.retry(e)) continue;
      throw e;
    }
    const stop = steps.exited();
    if (stop !== undefined) return stop;
  }
}

/**
 * The same loop for a pooled vCPU: each KVM_RUN on a thread of libuv's pool (VcpuHandle.runAsync),
 * each exit handled on the caller's event loop between runs, a pause waited for without blocking.
 * `beforeRun` is awaited before every run (a full console holds the guest back, as a slow UART).
 */
export async function runVcpuLoopAsync(opts: ExitLoopOptions & { beforeRun?: () => Promise<void> | undefined }): Promise<VcpuStop> {
  const { vcpu } = opts;
  if (vcpu.runAsync === undefined) throw new Error(`vCPU ${vcpu.id} cannot run on a pool thread`);
  const steps = loopSteps(opts);
  for (;;) {
    const wait = opts.beforeRun?.();
    if (wait !== undefined) await wait;
    const next = steps.next();
    if (next === PARK) {
      await opts.control.parkAsync();
      steps.unparked();
      continue;
    }
    if (next !== RUN) return next;
    try {
      await vcpu.runAsync();
    } catch (e) {
      if (steps.retry(e)) continue;
      throw e;
    }
    const stop = steps.exited();
    if (stop !== undefined) return stop;
  }
}

/**
 * The same loop for a vCPU on the thread that made the VM (vcpuThreads "main"): KVM_RUN blocks this
 * thread, as on a vCPU thread of its own, and every `yieldMs` (and after every interrupted run)
 * the loop gives the event loop a turn, so timers, console input, the API and the cards' messages
 * are served in between. What brings a guest that makes no exits back here is the caller's
 * periodic signal (sys.threadTimer): KVM_RUN returns EINTR on it. `beforeRun` as for
 * runVcpuLoopAsync.
 */
export async function runVcpuLoopHere(opts: ExitLoopOptions & { beforeRun?: () => Promise<void> | undefined; yieldMs: number }): Promise<VcpuStop> {
  const steps = loopSteps(opts);
  const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  // The caller (the VM's start) goes on before the guest first blocks this thread.
  await turn();
  let since = performance.now();
  for (;;) {
    const wait = opts.beforeRun?.();
    if (wait !== undefined) {
      await wait;
      since = performance.now();
    }
    const next = steps.next();
    if (next === PARK) {
      await opts.control.parkAsync();
      steps.unparked();
      since = performance.now();
      continue;
    }
    if (next !== RUN) return next;
    let interrupted = false;
    try {
      opts.vcpu.run();
    } catch (e) {
      if (!steps.retry(e)) throw e;
      interrupted = true;
    }
    if (!interrupted) {
      const stop = steps.exited();
      if (stop !== undefined) return stop;
    }
    if (interrupted || performance.now() - since >= opts.yieldMs) {
      await turn();
      since = performance.now();
    }
  }
}

function dispatch(
  exit: VcpuExit,
  pio: Bus,
  mmio: Bus,
  counters: Float64Array,
  crash: (reason: string, detail: string) => VcpuStop,
): VcpuStop | undefined {
  switch (exit.kind) {
    case "io": {
      // String I/O (rep ins/outs) arrives as `count` elements of `size` bytes.
      const { port, size, count, data } = exit;
      for (let i = 0; i < count; i++) {
        const element = data.subarray(i * size, (i + 1) * size);
        const handled = exit.direction === "out" ? pio.write(port, element) : pio.read(port, element);
        if (!handled) counters[Counter.UNHANDLED_IO]!++;
      }
      counters[exit.direction === "out" ? Counter.IO_OUT : Counter.IO_IN]!++;
      return undefined;
    }
    case "mmio": {
      const data = exit.data.subarray(0, exit.len);
      const handled = exit.isWrite ? mmio.write(exit.address, data) : mmio.read(exit.address, data);
      if (!handled) {
        counters[Counter.UNHANDLED_MMIO]!++;
        if (!exit.isWrite) data.fill(0xff);
      }
      counters[exit.isWrite ? Counter.MMIO_WRITE : Counter.MMIO_READ]!++;
      return undefined;
    }
    case "intr":
      counters[Counter.INTERRUPTED]!++;
      return undefined;
    case "hlt":
      counters[Counter.OTHER]!++;
      return { kind: "halted" };
    case "shutdown":
      counters[Counter.OTHER]!++;
      return crash("triple fault", "KVM_EXIT_SHUTDOWN: the guest triple-faulted");
    case "system_event":
      counters[Counter.OTHER]!++;
      if (exit.type === SYSTEM_EVENT_RESET) return { kind: "reset" };
      if (exit.type === SYSTEM_EVENT_SHUTDOWN) return { kind: "poweroff" };
      if (exit.type === SYSTEM_EVENT_CRASH) return crash("guest crash", "KVM_SYSTEM_EVENT_CRASH");
      return crash("system event", `KVM_EXIT_SYSTEM_EVENT type ${exit.type}`);
    case "internal_error":
      counters[Counter.OTHER]!++;
      return crash(
        "internal error",
        `KVM_EXIT_INTERNAL_ERROR suberror ${exit.suberror}` +
          (exit.data.length > 0 ? ` data [${exit.data.map(hex).join(", ")}]` : "") +
          (exit.suberror === 1 ? " (emulation failure: an instruction KVM could not emulate)" : ""),
      );
    case "fail_entry":
      counters[Counter.OTHER]!++;
      return crash(
        "entry failed",
        `KVM_EXIT_FAIL_ENTRY hardware reason ${hex(exit.hardwareEntryFailureReason)} on cpu ${exit.cpu}`,
      );
    case "debug":
      counters[Counter.OTHER]!++;
      return undefined;
    case "unknown":
      counters[Counter.OTHER]!++;
      return crash("unexpected exit", `unhandled KVM exit reason ${exit.reason}`);
  }
}

function safeDump(dump: (() => unknown) | undefined): unknown {
  if (dump === undefined) return undefined;
  try {
    return dump();
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}
