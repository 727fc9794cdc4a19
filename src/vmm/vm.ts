// A microVM: built from validated config (builder.ts is the one wiring point), run by one
// worker thread per vCPU (or pooled vCPUs: KVM_RUN on libuv's pool, exits here), stopped by the
// guest (reset, debug exit, triple fault), by a signal, or by the caller. The main thread never
// blocks on the guest: it starts and stops workers and feeds console input.

import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import * as sys from "../sys/index.js";
import { Bus } from "../devices/bus.js";
import type { Serial8250 } from "../devices/legacy/serial.js";
import type { I8042 } from "../devices/legacy/i8042.js";
import type { GuestMemory } from "../memory/guest-memory.js";
import { buildKvmMachine, type BootSummary, type KernelSource, type KvmMachineConfig } from "./builder.js";
import type { Machine } from "./machine.js";
import { VmControl, type CounterName } from "./vcpu-control.js";
import { attachLegacyDevices, createLegacyStates, type LegacyStates } from "./legacy.js";
import type { VcpuStop } from "./exit-loop.js";
import type { VcpuWorkerData, VcpuWorkerMessage } from "./vcpu-thread.js";
import { preparePooledVcpu, type PooledVcpuHandle } from "./vcpu-pooled.js";
import { EarlyVcpuWorker } from "./early-worker.js";
import { measureBoot, type PcrBank } from "../security/pcr.js";
import { randomUUID } from "node:crypto";
import type { NetConfig } from "../devices/virtio/net/kind.js";
import { planDevices, devicesCmdline, cardDriveId, type DriveConfig, type EntropyConfig, type IoPath, type NsmConfig } from "./drives.js";
import { startCard, SharedPcrBank, type CardHandle, type CardMetricsSnapshot, type CardOptions, type RateLimiterConfig } from "../cards/index.js";
import { AtaDevice, FileAtaBackend, ATA_SECTOR_SIZE, type AtaMetrics } from "../devices/ata/index.js";
import { spawnDom0, type Dom0Handle } from "../dom0/spawn.js";
import { mapControl, C_BROKEN, C_XENBUS_BACK, type Dom0Metrics, type MappedControl } from "../dom0/control-page.js";

/**
 * Makes the machine a VM runs on from its planned config (builder.ts buildKvmMachine; a fake in
 * tests). `vcpuWorkerUrl`, where the builder knows it before it builds (it is the machine's
 * `workerUrl`), lets Vm.create start dedicated vCPU threads first.
 */
export type MachineBuilder = ((config: KvmMachineConfig) => Machine) & { readonly vcpuWorkerUrl?: URL };

import { MAX_VCPUS, MIN_MEM_MIB, MAX_MEM_MIB } from "./limits.js";
export { MAX_VCPUS, MIN_MEM_MIB, MAX_MEM_MIB };

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
  /** The VM's identity (measured into PCR4); a random UUID when not given. */
  id?: string;
  /**
   * Block drives: virtio-blk served by a card each (the default), or one emulated ATA disk and one
   * Dom0-served xenblk drive (DriveConfig.ioPath).
   */
  drives?: DriveConfig[];
  /** A virtio-rng device fed from the host CSPRNG. */
  entropy?: EntropyConfig;
  /** The guest's NSM device (attestation by the security chip). */
  nsm?: NsmConfig;
  /** Network interfaces: virtio-net on a host TAP each (Firecracker's network-interfaces). */
  net?: NetConfig[];
  /** The vsock device: guest AF_VSOCK flows to host Unix sockets (Firecracker's /vsock). */
  vsock?: import("../devices/virtio/vsock/kind.js").VsockConfig;
  /** DER of the certificate whose signature over PCR0 was verified before boot: measured into PCR8. */
  signingCert?: Uint8Array;
  /** Where the vCPUs' exits are handled (VcpuThreadKind); "dedicated" when not given. */
  vcpuThreads?: VcpuThreadKind;
  /**
   * Where the cards run: "dedicated" (default), a worker thread each; "pooled", on the event loop of
   * the thread that made the VM, each idle card waiting in poll(2) on a thread of libuv's pool
   * (cards/card.ts CardBase.pooled).
   */
  cardThreads?: ThreadKind;
}

/**
 * Where a vCPU (or a card, cardThreads) runs. For a vCPU:
 * "dedicated": a worker thread per vCPU blocks in KVM_RUN and handles its exits (vcpu-thread.ts):
 * the fastest exits, and a V8 isolate per vCPU. "pooled": KVM_RUN on a thread of libuv's pool,
 * the exits on the event loop of the thread that made the VM (vcpu-pooled.ts): no isolate per
 * vCPU, a hop between threads per exit. Each running pooled vCPU holds one pool thread.
 */
export type ThreadKind = "dedicated" | "pooled";
export const THREAD_KINDS: readonly ThreadKind[] = ["dedicated", "pooled"];

/**
 * Where a vCPU runs: a ThreadKind, or "main": KVM_RUN blocks the thread that made the VM and the
 * exits are handled there, between turns of its event loop, a periodic signal bringing it back
 * while the guest makes no exits (vcpu-pooled.ts): no isolate per vCPU and no hop per exit, for
 * one vCPU of a VM that has its process to itself (the event loop waits up to a tick at a time).
 */
export type VcpuThreadKind = ThreadKind | "main";
export const VCPU_THREAD_KINDS: readonly VcpuThreadKind[] = ["dedicated", "pooled", "main"];

/** libuv's default pool size (uv_threadpool.c: when UV_THREADPOOL_SIZE is not set). */
const UV_DEFAULT_POOL = 4;
/** libuv's largest pool (uv_threadpool.c MAX_THREADPOOL_SIZE). */
const UV_MAX_POOL = 1024;

/** The size libuv gives its pool in this process: read from UV_THREADPOOL_SIZE as libuv does when it starts it. */
export function threadPoolSize(): number {
  const n = Number.parseInt(process.env.UV_THREADPOOL_SIZE ?? "", 10);
  if (!Number.isFinite(n) || n <= 0) return UV_DEFAULT_POOL;
  return Math.min(n, UV_MAX_POOL);
}

/** Threads of libuv's pool held by the VMs of this process that run (a pooled vCPU or card holds one while its VM runs). */
let poolThreadsHeld = 0;

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
  const kinds = (key: "vcpuThreads" | "cardThreads", allowed: readonly string[]): void => {
    const v = c[key];
    if (v !== undefined && !allowed.includes(v)) {
      throw new VmConfigError(`${key} must be ${allowed.map((t) => `"${t}"`).join(" or ")}, got ${JSON.stringify(v)}`);
    }
  };
  kinds("vcpuThreads", VCPU_THREAD_KINDS);
  kinds("cardThreads", THREAD_KINDS);
  if (c.vcpuThreads === "main" && c.vcpus !== 1) {
    throw new VmConfigError(`vcpuThreads "main" runs one vCPU on the thread that made the VM: vcpus must be 1, got ${c.vcpus} (use "dedicated" or "pooled")`);
  }
}

export type VmState = "created" | "running" | "paused" | "stopped";

/**
 * The VM's lifecycle, the one state machine of a microVM (MicroVM and the API server read
 * `Vm.state` and listen to these events; neither keeps a state of its own): each allowed
 * transition and the event it emits. `created → running` once every vCPU is released,
 * `running → paused` once every vCPU is parked, `paused → running` on resume, and any state
 * `→ stopped` once every vCPU thread and back end has ended (with the VmExit).
 */
export const VM_TRANSITIONS: Readonly<Record<VmState, Readonly<Partial<Record<VmState, "start" | "pause" | "resume" | "exit">>>>> = {
  created: { running: "start", stopped: "exit" },
  running: { paused: "pause", stopped: "exit" },
  paused: { running: "resume", stopped: "exit" },
  stopped: {},
};

/**
 * A drive's counters, whatever its I/O path. The card counters (requests, bytes, errors, ...) are
 * filled for every path, so consumers that know only cards (the API's metrics) keep working:
 * emulated: requests = ATA commands, bytes = sectors moved x 512, kicks and interrupts not counted;
 * dom0: requests and bytes as Dom0 answered them, kicks = doorbell notifications it consumed,
 * interrupts = irqfd notifications it sent, needsReset = 1 once its ring is given up or the
 * process died on its own. The path's own counters come beside them.
 */
export interface DriveMetricsSnapshot extends CardMetricsSnapshot {
  ioPath: IoPath;
  ata?: AtaMetrics;
  /** The back end's counters, its CPU seconds since it became ready, its pid and xenbus state (blkif.ts XenbusState*). */
  dom0?: Dom0Metrics & { cpuSeconds: number; pid: number; xenbusState: number };
}

/** The running Dom0 back end of the dom0 drive, and the VM's own mapping of its control page. */
interface RunningDom0 {
  handle: Dom0Handle;
  /** Mapped by the VM (not the handle's mapping): metrics stay readable after the process is gone. */
  control: MappedControl;
  cpuMicros0: number;
  stopping: boolean;
}

/** How long pause() waits for every vCPU to park before it gives up. */
const PAUSE_TIMEOUT_MS = 5000;

interface VcpuSlot {
  id: number;
  /** Its dedicated thread, started by Vm.create and waiting for its data until start(). */
  early?: EarlyVcpuWorker;
  worker?: Worker;
  tid?: number;
  /** A pooled vCPU: opened on this thread, run on libuv's pool. */
  pooled?: PooledVcpuHandle;
  done: boolean;
}

export class Vm extends EventEmitter {
  readonly control: VmControl;
  private readonly legacy: LegacyStates;
  private readonly serial: Serial8250;
  private readonly i8042: I8042;
  private readonly slots: VcpuSlot[];
  private exitInfo: VmExit | undefined;
  private stopBy: string | undefined;
  private readonly exited: Promise<VmExit>;
  private resolveExit!: (e: VmExit) => void;
  /** Where the VM is in its life (VM_TRANSITIONS); changed only by `moveTo`. */
  private phase: VmState = "created";
  /** start() has been called (and has not failed): a second call is refused. */
  private started = false;
  /** The pause() under way, until every vCPU has parked (a second call waits for the same one). */
  private pausing: Promise<void> | undefined;
  private closed = false;
  /** What this VM holds of libuv's pool (taken in start), given back once it has ended or failed to start. */
  private poolHeld = 0;
  startedAt: number | undefined;
  /** Running cards by slot name (virtio-blk-<drive id>, virtio-rng, virtio-nsm). */
  private readonly cards = new Map<string, CardHandle>();
  /** The dom0 drive's back end, from start() until close(). */
  private dom0: RunningDom0 | undefined;
  /** The main thread's view of the emulated drive (metrics only; the vCPU workers do the I/O). */
  private readonly ata: AtaDevice | undefined;
  /** The VM's identity (PCR4). */
  readonly id: string;
  /**
   * The security chip's PCRs for this VM: measured boot (PCR0/1/2/4) done before any vCPU runs,
   * PCRs 0-15 locked; 16-31 are the guest's to extend (through the NSM card, which shares this
   * bank: what the guest extends, host-side attestation sees).
   */
  readonly pcrs: SharedPcrBank;

  /** Wraps a built machine; `Vm.create` is the usual way in. */
  constructor(
    private readonly machine: Machine,
    private readonly consoleFd: number,
    measured?: { id: string; pcrs: PcrBank },
    private readonly vcpuThreads: VcpuThreadKind = "dedicated",
    private readonly cardThreads: ThreadKind = "dedicated",
    early: readonly EarlyVcpuWorker[] = [],
  ) {
    super();
    this.id = measured?.id ?? randomUUID();
    this.pcrs = SharedPcrBank.from(measured?.pcrs ?? measureBoot({ kernel: new Uint8Array(0), cmdline: "", vmId: this.id }));
    this.control = new VmControl(machine.vcpus.length);
    this.slots = machine.vcpus.map((v) => ({ id: v.id, done: false }));
    // Threads started for this machine's worker script, one per vCPU; any other is not this VM's.
    early.forEach((w, i) => {
      const slot = this.slots[i];
      if (slot !== undefined && vcpuThreads === "dedicated" && w.url.href === machine.workerUrl.href) slot.early = w;
      else w.discard();
    });
    this.legacy = createLegacyStates();
    // The main thread's view of the UART, for console input; vCPU workers attach their own
    // device objects to the same shared state.
    const { serial, i8042 } = attachLegacyDevices(new Bus("pio-main"), this.legacy, {
      irq: (line) => ({
        trigger: () => {
          machine.irqLine(line, true);
          machine.irqLine(line, false);
        },
      }),
      output: () => {},
      onReset: () => {},
      onDebugExit: () => {},
    });
    this.serial = serial;
    this.i8042 = i8042;
    const a = machine.ata;
    this.ata = a === undefined ? undefined : new AtaDevice(a.state, new FileAtaBackend(a.imageFd, a.sizeBytes, a.readOnly), { trigger: () => {} });
    this.exited = new Promise((resolve) => (this.resolveExit = resolve));
  }

  /** Builds a KVM-backed VM ready to start: KVM objects, memory, the loaded kernel, vCPUs. */
  /**
   * The one way from validated config to a VM: checks the config, plans every device, measures the
   * boot, and has `build` make the machine (KVM by default; tests plug a fake machine in here, below
   * everything above).
   */
  static create(config: VmConfig, build: MachineBuilder = buildKvmMachine): Vm {
    validateVmConfig(config);
    // Dedicated vCPU threads start now and start up while the boot is measured and the machine
    // built (early-worker.ts); start() hands them their data.
    const url = build.vcpuWorkerUrl;
    const early = (config.vcpuThreads ?? "dedicated") === "dedicated" && url !== undefined ? Array.from({ length: config.vcpus }, () => new EarlyVcpuWorker(url)) : [];
    try {
      return Vm.createWith(config, build, early);
    } catch (e) {
      for (const w of early) w.discard();
      throw e;
    }
  }

  private static createWith(config: VmConfig, build: MachineBuilder, early: readonly EarlyVcpuWorker[]): Vm {
    // Each device kind reads its own field of the config (devices/virtio/kinds.ts).
    const plan = planDevices(config);
    const id = config.id ?? randomUUID();
    // Measured boot, before any vCPU exists (DESIGN.md §5): the kernel and initrd bytes and the
    // command line as the user gave it. The device descriptions the VMM appends for its own
    // devices (virtio slots, typervisor_ata, typervisor_xenblk) are not measured (they follow from
    // the VM's configuration, not the image).
    const pcrs = measureBoot({
      kernel: config.kernel.bytes,
      initrd: config.initrd?.bytes,
      cmdline: config.cmdline,
      vmId: id,
      signingCert: config.signingCert,
    });
    const devices = devicesCmdline(plan);
    const cmdline = devices === "" ? config.cmdline : `${config.cmdline} ${devices}`.trim();
    const machine = build({ ...config, cmdline, deviceSlots: plan.virtio, legacyDrives: { ata: plan.ata, dom0: plan.dom0 } });
    return new Vm(machine, config.consoleFd, { id, pcrs }, config.vcpuThreads, config.cardThreads, early);
  }

  /** Where the VM is in its life: the one state of the lifecycle (VM_TRANSITIONS). */
  get state(): VmState {
    return this.phase;
  }

  /** How the VM ended, once it has (state "stopped"). */
  get exit(): VmExit | undefined {
    return this.phase === "stopped" ? this.exitInfo : undefined;
  }

  /** The one place the state changes: refuses a transition VM_TRANSITIONS lacks (a bug), emits its event. */
  private moveTo(next: VmState, ...args: unknown[]): void {
    const event = VM_TRANSITIONS[this.phase][next];
    if (event === undefined) throw new Error(`the VM cannot go from ${this.phase} to ${next}`);
    this.phase = next;
    this.emit(event, ...args);
  }

  /**
   * Parks every vCPU outside KVM_RUN (guest time stops; devices and the API keep running).
   * Resolves once all of them are parked; the state is "paused" from then on (it stays
   * "running" while they park, and a second call meanwhile waits for the same pause).
   */
  async pause(): Promise<void> {
    if (this.pausing !== undefined) return this.pausing;
    if (this.phase !== "running") throw new Error(`cannot pause a VM that is ${this.phase}`);
    this.pausing = this.park().finally(() => (this.pausing = undefined));
    return this.pausing;
  }

  private async park(): Promise<void> {
    this.control.requestPause();
    this.kickAll();
    const deadline = Date.now() + PAUSE_TIMEOUT_MS;
    while (this.control.parked < this.slots.filter((s) => !s.done).length && !this.control.stopRequested) {
      if (Date.now() > deadline) {
        this.control.requestResume();
        throw new Error(`pause: the vCPUs did not park within ${PAUSE_TIMEOUT_MS} ms`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    // A VM asked to stop meanwhile is ending, not paused: it goes on to stopped.
    if (this.phase === "running" && !this.control.stopRequested) this.moveTo("paused");
  }

  /** Lets the vCPUs run again after pause(). */
  resume(): void {
    if (this.phase !== "paused") throw new Error(`cannot resume a VM that is ${this.phase}`);
    this.control.requestResume();
    this.moveTo("running");
  }

  get boot(): BootSummary {
    return this.machine.boot;
  }

  get guestMemory(): GuestMemory {
    return this.machine.memory;
  }

  /** Starts every vCPU. Resolves once all of them are running. */
  async start(): Promise<void> {
    if (this.started) throw new Error("the VM has already been started");
    if (this.closed) throw new Error("the VM has been closed");
    const pooled = this.vcpuThreads === "pooled";
    if (this.vcpuThreads === "main" && this.slots.length !== 1) {
      throw new VmConfigError(`vcpuThreads "main" runs one vCPU on this thread: this VM has ${this.slots.length}`);
    }
    // What this VM holds of libuv's pool while it runs: a thread per pooled vCPU and per pooled card.
    const demand = (pooled ? this.slots.length : 0) + (this.cardThreads === "pooled" ? this.machine.virtio.length : 0);
    if (demand > 0) this.checkPool(demand);
    poolThreadsHeld += demand;
    this.poolHeld = demand;
    this.started = true;
    // KVM_RUN returns EINTR on the kick signal only if it has a handler (its default action
    // would end the process).
    sys.installSignalHandler("SIGUSR2");
    // Cards first: each writes its device's identity and config space into the transport
    // state, which the guest may read from its first instruction on. The Dom0 back end too: it
    // must be waiting on its doorbell before the guest's front end connects.
    try {
      await this.startCards();
      await this.startDom0();
    } catch (e) {
      await this.stopBackends();
      this.cards.clear();
      this.started = false;
      this.releasePool();
      this.discardEarlyThreads();
      throw e;
    }
    const ata = this.machine.ata;
    const dom0 = this.machine.dom0;
    const ready = this.slots.map((slot, i) => {
      const data: VcpuWorkerData = {
        vcpuId: slot.id,
        vcpuCount: this.slots.length,
        control: this.control.sab,
        legacy: this.legacy,
        consoleFd: this.consoleFd,
        backend: this.machine.vcpus[i]!.backend,
        virtio: this.machine.virtio.map((v) => ({ name: v.name, base: v.base, state: v.state, notifyFd: v.notifyFd })),
        ...(ata !== undefined
          ? { ata: { port: ata.port, irq: ata.irq, state: ata.state, imageFd: ata.imageFd, sizeBytes: ata.sizeBytes, readOnly: ata.readOnly } }
          : {}),
        ...(dom0 !== undefined && this.dom0 !== undefined
          ? { dom0: { port: dom0.port, controlFd: this.dom0.handle.controlFd, notifyFd: dom0.notifyFd } }
          : {}),
      };
      if (this.vcpuThreads !== "dedicated") return this.preparePooled(slot, i, data, this.vcpuThreads);
      let worker: Worker;
      const early = slot.early;
      slot.early = undefined;
      try {
        worker = early?.take(data) ?? new Worker(this.machine.workerUrl, { workerData: data });
      } catch (e) {
        // As for a thread that fails once started: recorded, and the VM stops.
        this.finish({ kind: "error", vcpu: slot.id, message: e instanceof Error ? e.message : String(e) });
        this.onVcpuDone(slot);
        return Promise.resolve(undefined);
      }
      slot.worker = worker;
      return new Promise<undefined>((resolve) => {
        worker.on("message", (m: VcpuWorkerMessage) => {
          if (m.type === "ready") {
            slot.tid = m.tid;
            resolve(undefined);
          } else if (m.type === "stopped") {
            this.onVcpuStopped(slot, m.stop);
          } else {
            this.finish({ kind: "error", vcpu: m.vcpuId, message: m.message });
            this.onVcpuDone(slot);
          }
        });
        worker.on("error", (err) => {
          this.finish({ kind: "error", vcpu: slot.id, message: err.message });
          this.onVcpuDone(slot);
        });
        worker.on("exit", () => this.onVcpuDone(slot));
        // A worker that dies before it is ready must not hold start() forever.
        this.exited.then(() => resolve(undefined));
      });
    });
    const runs = await Promise.all(ready);
    if (this.phase === "created" && this.exitInfo === undefined && !this.slots.some((s) => s.done)) {
      this.startedAt = Date.now();
      this.control.go();
      this.moveTo("running");
    } else {
      this.stop("start failed");
    }
    // Pooled vCPUs start their exit loops now (after a failed start, to see the stop and end).
    for (const run of runs) run?.();
  }

  /** Refuses pooled vCPUs and cards that would hold every thread of libuv's pool (file I/O and DNS need one too). */
  private checkPool(demand: number): void {
    const size = threadPoolSize();
    const wanted = poolThreadsHeld + demand;
    if (wanted > size - 1) {
      throw new Error(
        `pooled vCPUs and cards: ${wanted} would hold ${size > wanted ? "" : "all of "}libuv's ${size}-thread pool (each running pooled vCPU or card holds one, ` +
          `and one must stay free): start the process with UV_THREADPOOL_SIZE of at least ${wanted + 1} (up to ${UV_MAX_POOL}), ` +
          `or use dedicated threads`,
      );
    }
  }

  private releasePool(): void {
    poolThreadsHeld -= this.poolHeld;
    this.poolHeld = 0;
  }

  /**
   * Opens slot i's vCPU on this thread and builds its buses; resolves with what starts its exit
   * loop once the VM says go (or undefined when it could not be prepared: the VM then ends with
   * the error, as for a vCPU thread that failed).
   */
  private async preparePooled(slot: VcpuSlot, i: number, data: VcpuWorkerData, where: "pooled" | "main"): Promise<(() => void) | undefined> {
    // As for a vCPU thread's error: recorded, and the VM stops (onVcpuDone).
    const fail = (e: unknown): void => {
      this.finish({ kind: "error", vcpu: slot.id, message: e instanceof Error ? e.message : String(e) });
      this.onVcpuDone(slot);
    };
    try {
      const open = this.machine.vcpus[i]!.openPooled;
      if (open === undefined) throw new Error("this machine cannot run pooled vCPUs");
      const handle = open();
      const prepared = await preparePooledVcpu(data, handle, this.control, where);
      // A kick finds a pooled vCPU on whichever pool thread runs it; one on this thread is not in
      // KVM_RUN while this thread kicks it (immediate_exit is enough).
      if (where === "pooled") slot.pooled = handle;
      return () => {
        prepared.run().then((stop) => this.onVcpuStopped(slot, stop), fail);
      };
    } catch (e) {
      fail(e);
      return undefined;
    }
  }

  /** Console input for the guest's UART. Returns the bytes accepted. */
  sendConsoleInput(bytes: Uint8Array): number {
    return this.serial.enqueueInput(bytes);
  }

  /**
   * Presses Ctrl+Alt+Del on the guest's keyboard (Firecracker's SendCtrlAltDel): the i8042 gets
   * the scan codes and raises IRQ 1. A Linux guest then reboots (with `reboot=k`, through the
   * i8042 reset, which stops the VM).
   */
  sendCtrlAltDel(): void {
    if (this.state !== "running" && this.state !== "paused") throw new Error(`cannot send Ctrl+Alt+Del to a VM that is ${this.state}`);
    if (!this.i8042.sendCtrlAltDel()) throw new Error("the i8042 keyboard buffer is full: the guest is not reading its keyboard");
  }

  /** Asks every vCPU to stop; `wait()` resolves when they have. */
  stop(by = "request"): void {
    this.stopBy ??= by;
    this.control.requestStop();
    this.kickAll();
    if (!this.started) this.settle();
  }

  /** Resolves with how the VM ended, once every vCPU thread has stopped. */
  wait(): Promise<VmExit> {
    return this.exited;
  }

  /**
   * Counters of every drive, by drive id: each card drive once its card runs, the emulated drive
   * always, the dom0 drive once its back end has started (and after it stopped: the last values).
   */
  driveMetrics(): Record<string, DriveMetricsSnapshot> {
    const out: Record<string, DriveMetricsSnapshot> = {};
    for (const slot of this.machine.virtio) {
      const id = cardDriveId(slot.device);
      const card = this.cards.get(slot.name);
      if (id !== undefined && card !== undefined) out[id] = { ...card.metrics(), ioPath: "card" };
    }
    if (this.ata !== undefined && this.machine.ata !== undefined) {
      const m = this.ata.metrics();
      out[this.machine.ata.drive.id] = {
        ioPath: "emulated",
        requests: m.commands,
        bytes: (m.sectorsRead + m.sectorsWritten) * ATA_SECTOR_SIZE,
        errors: m.errors,
        throttled: 0,
        kicks: 0,
        interrupts: 0,
        needsReset: 0,
        cpuMicros: 0,
        ata: m,
      };
    }
    const d = this.dom0;
    if (d !== undefined && this.machine.dom0 !== undefined) {
      // Read through the VM's own mapping only: the handle unmaps its page when the process stops.
      const m = d.control.page.metrics();
      const died = !d.stopping && !d.handle.alive();
      const broken = Atomics.load(d.control.page.ints, C_BROKEN) !== 0;
      out[this.machine.dom0.drive.id] = {
        ioPath: "dom0",
        requests: m.requests,
        bytes: m.bytes,
        errors: m.errors,
        throttled: 0,
        kicks: m.notifyIn,
        interrupts: m.notifyOut,
        needsReset: died || broken ? 1 : 0,
        cpuMicros: m.cpuMicros - d.cpuMicros0,
        dom0: { ...m, cpuSeconds: (m.cpuMicros - d.cpuMicros0) / 1e6, pid: d.handle.pid, xenbusState: Atomics.load(d.control.page.ints, C_XENBUS_BACK) },
      };
    }
    return out;
  }

  /** Counters of every card, by card name (virtio-blk-<id>, virtio-rng, virtio-nsm). */
  deviceMetrics(): Record<string, CardMetricsSnapshot> {
    const out: Record<string, CardMetricsSnapshot> = {};
    for (const card of this.cards.values()) out[card.name] = card.metrics();
    return out;
  }

  /** Each running card's metric groups, as its kind names and fills them (the API's metrics line). */
  deviceMetricGroups(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const slot of this.machine.virtio) {
      const card = this.cards.get(slot.name);
      if (card !== undefined) Object.assign(out, slot.device.kind.metricGroups?.(slot.device.instance, card.metrics()));
    }
    return out;
  }

  /** The running card of a virtio-blk drive, or an error naming why there is none. */
  private driveCard(driveId: string, notOnOtherPaths: string): CardHandle {
    const slot = this.machine.virtio.find((v) => cardDriveId(v.device) === driveId);
    const card = slot === undefined ? undefined : this.cards.get(slot.name);
    if (card === undefined) {
      const other = [this.machine.ata, this.machine.dom0].find((x) => x?.drive.id === driveId);
      if (other !== undefined) throw new Error(`drive "${driveId}" uses the ${other.drive.ioPath} I/O path: ${notOnOtherPaths}`);
      throw new Error(`no running drive "${driveId}"`);
    }
    return card;
  }

  /**
   * Replaces the rate limiter of the running device of kind `kind` whose id is `id` (a network
   * interface's iface_id), or throws naming why there is none.
   */
  updateDeviceRateLimiter(kind: string, id: string, config: RateLimiterConfig): void {
    this.deviceCard(kind, id).updateRateLimiter(config);
  }

  /** A runtime update the device's kind defines (device-kind.ts `updates`), e.g. net's "rxRateLimiter". */
  updateDevice(kind: string, id: string, update: string, arg: unknown): Promise<unknown> {
    return this.deviceCard(kind, id).update(update, arg);
  }

  /** The running card of the device of kind `kind` whose id is `id`, or an error naming why there is none. */
  private deviceCard(kind: string, id: string): CardHandle {
    const slot = this.machine.virtio.find((v) => v.device.kind.kind === kind && v.device.kind.instanceId?.(v.device.instance) === id);
    const card = slot === undefined ? undefined : this.cards.get(slot.name);
    if (card === undefined) throw new Error(`no running ${kind} device "${id}"`);
    return card;
  }

  /** Replaces a drive's rate limiter while the VM runs (Firecracker's PATCH /drives semantics). */
  updateDriveRateLimiter(driveId: string, config: RateLimiterConfig): void {
    this.driveCard(driveId, "rate limiters are a card feature").updateRateLimiter(config);
  }

  /**
   * Puts the image at `path` under a running virtio-blk drive (Firecracker's PATCH /drives
   * path_on_host): the card switches between two requests and tells the guest the new capacity
   * (config change). A missing or unusable file rejects with a DriveConfigError; nothing changes.
   */
  async updateDrivePath(driveId: string, path: string): Promise<{ sizeBytes: number }> {
    return this.driveCard(driveId, "replacing its image while the VM runs is a card feature").replaceImage(path);
  }


  private async startCards(): Promise<void> {
    const memfd = this.machine.guestMemfd;
    const slots = this.machine.virtio;
    // All at once: each card's start-up (a worker thread's, for a dedicated card) runs beside the
    // others' and beside the vCPU threads' (Vm.create started those).
    const started = await Promise.allSettled(
      slots.map(async (slot) => {
        if (memfd === undefined) throw new Error("this machine's guest memory cannot be mapped by a card");
        const common = {
          name: slot.name,
          memfd: memfd.fd,
          regions: memfd.regions,
          transportState: slot.state,
          notifyFd: slot.notifyFd,
          irqFd: slot.irqFd,
        };
        const d = slot.device;
        // The kind turns its instance into its card's config (the NSM adds the VM's id and PCR bank).
        const options = {
          ...common,
          ...(this.cardThreads === "pooled" ? { pooled: true } : {}),
          kind: d.kind.kind,
          config: d.kind.cardConfig(d.instance, { vmId: this.id, pcrs: this.pcrs }),
        } as CardOptions;
        return startCard(options);
      }),
    );
    // Those that started are stopped by start()'s failure path; the first failure, in slot order, is the error.
    started.forEach((r, i) => {
      if (r.status === "fulfilled") this.cards.set(slots[i]!.name, r.value);
    });
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed !== undefined) throw failed.reason;
  }

  /**
   * Spawns the Dom0 back end of the dom0 drive: it maps guest RAM from the memfd, owns the image,
   * and blocks on the doorbell eventfd (DESIGN.md §1's contrast, src/dom0).
   */
  private async startDom0(): Promise<void> {
    const slot = this.machine.dom0;
    if (slot === undefined) return;
    const memfd = this.machine.guestMemfd;
    if (memfd === undefined) throw new Error("this machine's guest memory cannot be mapped by a Dom0 process");
    const handle = await spawnDom0({
      memfd: memfd.fd,
      regions: memfd.regions,
      ringGpa: slot.ringGpa,
      imagePath: slot.drive.path,
      notifyFd: slot.notifyFd,
      irqFd: slot.irqFd,
      readOnly: slot.drive.readOnly === true,
    });
    let control: MappedControl;
    try {
      control = mapControl(handle.controlFd);
    } catch (e) {
      await handle.stop();
      throw e;
    }
    // The same baseline as the handle's cpuSeconds(): the child's CPU time when it became ready.
    this.dom0 = { handle, control, cpuMicros0: control.page.metrics().cpuMicros, stopping: false };
  }

  /** Stops every card and the Dom0 back end; resolves when they have exited. */
  private async stopBackends(): Promise<void> {
    const d = this.dom0;
    if (d !== undefined) d.stopping = true;
    await Promise.allSettled([...[...this.cards.values()].map((c) => c.stop()), ...(d !== undefined ? [d.handle.stop()] : [])]);
  }

  /** Exit counters of every vCPU. */
  exitCounters(): Array<Record<CounterName, number>> {
    return this.slots.map((_, i) => this.control.snapshot(i));
  }

  /** Releases KVM objects and guest memory. Refused while vCPU threads still run. */
  close(): void {
    if (this.closed) return;
    if (this.started && !this.slots.every((s) => s.done)) {
      throw new Error("close() while vCPUs are running: stop() and await wait() first");
    }
    this.closed = true;
    this.discardEarlyThreads();
    this.dom0?.control.unmap();
    this.machine.close();
  }

  private kickAll(): void {
    const pid = process.pid;
    this.slots.forEach((slot, i) => {
      if (slot.done) return;
      // immediate_exit makes the next KVM_RUN return at once; the signal interrupts a
      // KVM_RUN already in progress (it returns EINTR). DESIGN.md §6.
      this.machine.vcpus[i]!.setImmediateExit(1);
      // A pooled vCPU runs on whichever pool thread took the call: its handle finds it.
      slot.pooled?.interrupt();
      if (slot.tid !== undefined) {
        try {
          sys.tgkill(pid, slot.tid, sys.SIGUSR2);
        } catch {
          // The thread already left (ESRCH): nothing to interrupt.
        }
      }
    });
  }

  private onVcpuStopped(slot: VcpuSlot, stop: VcpuStop): void {
    this.finish(
      stop.kind === "stopped"
        ? { kind: "stopped", by: this.stopBy ?? "request" }
        : stop.kind === "crash"
          ? { ...stop, vcpu: slot.id }
          : stop,
    );
    this.onVcpuDone(slot);
  }

  private onVcpuDone(slot: VcpuSlot): void {
    if (slot.done) return;
    slot.done = true;
    // One vCPU stopping stops the VM: wake the others out of KVM_RUN.
    this.control.requestStop();
    this.kickAll();
    // The VM has ended once every vCPU thread has and the cards and Dom0 have finished their work.
    if (this.slots.every((s) => s.done)) void this.stopBackends().then(() => this.settle());
  }

  private settle(): void {
    if (this.phase === "stopped") return;
    this.releasePool();
    this.discardEarlyThreads();
    const exit = this.exitInfo ?? { kind: "stopped", by: this.stopBy ?? "request" };
    this.exitInfo = exit;
    this.moveTo("stopped", exit);
    this.resolveExit(exit);
  }

  /** Ends the vCPU threads Vm.create started that start() has not taken (the VM stopped or was closed first, or start failed). */
  private discardEarlyThreads(): void {
    for (const slot of this.slots) {
      slot.early?.discard();
      slot.early = undefined;
    }
  }

  /** Records the first reason the VM ended; another vCPU's plain "stopped" does not replace it. */
  private finish(exit: VmExit): void {
    if (this.exitInfo === undefined || (this.exitInfo.kind === "stopped" && exit.kind !== "stopped")) {
      this.exitInfo = exit;
    }
  }
}
