// The card runtime, VMM side: starts one device backend in its own worker thread, off the vCPU
// threads (or pooled, on this thread's event loop: CardBase.pooled). The card maps guest memory
// itself (from the memfd), waits on the queue-notify eventfd (KVM_IOEVENTFD on QueueNotify in
// production), answers the queues, and raises the interrupt by writing the irqfd eventfd (KVM_IRQFD). Everything the two sides share is in
// SharedArrayBuffers: the transport state, the metrics, a control block (stop, rate limits).
// See README.md for what the VMM must register with KVM.

import { Worker } from "node:worker_threads";
import { gettid } from "../sys/index.js";
import { signalEventfd } from "./notify.js";
import { TransportState } from "../devices/virtio/mmio.js";
import { INT_CONFIG_CHANGE } from "../devices/virtio/spec.js";
import type { KindConfigs } from "../devices/virtio/kinds.js";
import type { CardControl, ModelModule, OpenedDevice, VirtioDeviceKind } from "../devices/virtio/device-kind.js";
import { CardMetrics, type CardMetricsSnapshot } from "./metrics.js";
import { CardConfigError } from "./errors.js";
import { CTL_BYTES, CTL_STOP, CTL_WORDS, writeLimiterConfig } from "./control-block.js";
import type { RateLimiterConfig } from "./rate-limiter.js";

export { CardConfigError, signalEventfd };
export type { BlkCardConfig } from "../devices/virtio/blk/kind.js";
export type { RngCardConfig } from "../devices/virtio/rng/kind.js";
export type { NsmCardConfig, NsmSigner } from "../devices/virtio/nsm/kind.js";

/** One RAM region of the guest as it lies in the memfd. */
export interface CardRegion {
  gpa: number;
  size: number;
  fdOffset: number;
}

export interface CardBase {
  /** The memfd behind guest RAM (src/memory/create.ts). */
  memfd: number;
  regions: CardRegion[];
  /** The device's virtio-mmio state, shared with every vCPU worker's transport. */
  transportState: SharedArrayBuffer;
  /** eventfd the guest's QueueNotify write signals (ioeventfd). */
  notifyFd: number;
  /** eventfd that raises the device's interrupt (irqfd). */
  irqFd: number;
  /** Card name in errors and metrics (default: the kind). */
  name?: string;
  /** How long the card keeps polling the rings after work, ms (default card-loop.ts POLL_MS; 0: never). */
  pollMs?: number;
  /**
   * Run the card on this thread's event loop instead of a worker thread of its own: each wait a
   * poll(2) on a thread of libuv's pool (held while the card is idle), the work between waits on
   * this thread, no polling phase. Saves the worker's V8 isolate (~9 MiB); costs a hop between
   * threads per wake-up and shares the event loop. Default false.
   */
  pooled?: boolean;
}

/** A card of one of the kinds devices/virtio/kinds.ts lists, with that kind's card config. */
export type CardOptions = { [K in keyof KindConfigs]: CardBase & { kind: K } & (undefined extends KindConfigs[K] ? { config?: KindConfigs[K] } : { config: KindConfigs[K] }) }[keyof KindConfigs];

export type CardKind = CardOptions["kind"];

/** A card's kind and config alone, without the wiring (memory, transport, eventfds) its host supplies. */
export type CardKindOptions = CardOptions extends infer O ? (O extends CardOptions ? Omit<O, keyof CardBase> : never) : never;

export interface CardHandle {
  readonly name: string;
  /** Stops the worker; resolves when it has exited. Idempotent. */
  stop(): Promise<void>;
  metrics(): CardMetricsSnapshot;
  /** Replaces the card's rate limiter while it runs (null/absent bucket = unlimited). */
  updateRateLimiter(config: RateLimiterConfig): void;
  /**
   * A runtime update the card's kind defines (device-kind.ts `updates`), e.g. blk's "path": another
   * image under the running drive. Rejects with a CardConfigError when the kind has no such update.
   */
  update(name: string, arg: unknown): Promise<unknown>;
  /** blk: the "path" update (Firecracker's PATCH /drives path_on_host); resolves with the new size. */
  replaceImage(path: string): Promise<{ sizeBytes: number }>;
  /** Set when the worker died; the device was marked NEEDS_RESET. */
  readonly failure: Error | undefined;
  /** The kernel thread id of the card's worker (its CPU time is /proc/self/task/<tid>/stat). */
  readonly tid: number;
}

/** What the worker receives (workerData): plain data, structured-cloned (SharedArrayBuffers shared). */
export interface CardWorkerData {
  name: string;
  /** The kind's module (device-kind.ts `model`): the worker imports it and calls its createModel. */
  model: string;
  /** The kind's own worker data (OpenedDevice.workerData). */
  data: unknown;
  /** Queues the device has (its VirtioDeviceInfo): the worker serves each on every wake-up. */
  numQueues: number;
  memfd: number;
  regions: CardRegion[];
  transportState: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  control: SharedArrayBuffer;
  notifyFd: number;
  irqFd: number;
  pollMs?: number;
}

/**
 * Starts a card. Per kind, on this thread: blk opens the image (a missing or unwritable image
 * rejects with a DriveConfigError naming it); nsm loads the chip (ChipError) or checks the given
 * key (CardConfigError); rng checks its limits. Then writes the device identity, features and
 * config into `transportState` (do this before the vCPUs run) and starts the worker; resolves
 * once the worker has mapped guest memory and waits for kicks.
 */
export async function startCard(opts: CardOptions): Promise<CardHandle> {
  // The kinds are imported here, not at the top: a process that starts no card never loads them,
  // and a card's worker needs its own kind's model (CardWorkerData.model), not every kind.
  const { virtioKind } = await import("../devices/virtio/kinds.js");
  return startKindCard(virtioKind(opts.kind), opts.config, opts);
}

/** Starts a card of `kind` (any VirtioDeviceKind, listed in kinds.ts or not) with `config`, wired as `opts` says. */
export async function startKindCard<C>(kind: VirtioDeviceKind<C, unknown>, config: C, opts: CardBase): Promise<CardHandle> {
  const name = opts.name ?? kind.kind;
  const prepared: OpenedDevice = kind.open(config, name);
  const control = new SharedArrayBuffer(CTL_BYTES);
  const metrics = new CardMetrics();
  const transport = new TransportState(opts.transportState);
  let runner: CardRunner;
  try {
    writeLimiterConfig(control, prepared.rateLimiter);
    transport.setDeviceInfo(prepared.info);
    const data: CardWorkerData = {
      name,
      model: kind.model.href,
      data: prepared.workerData,
      numQueues: prepared.info.numQueues,
      memfd: opts.memfd,
      regions: opts.regions,
      transportState: opts.transportState,
      metrics: metrics.sab,
      control,
      notifyFd: opts.notifyFd,
      irqFd: opts.irqFd,
      ...(opts.pollMs !== undefined ? { pollMs: opts.pollMs } : {}),
    };
    runner = opts.pooled === true ? await pooledRunner(data, await kind.loadModel()) : workerRunner(data, name);
  } catch (e) {
    prepared.release();
    throw e;
  } finally {
    // workerData was cloned when the Worker was constructed (or never will be): wipe key bytes here.
    prepared.handedOver?.();
  }

  let failure: Error | undefined;
  let exited = false;
  const exit = runner.exited.then(() => {
    exited = true;
    prepared.release();
  });
  // A card that dies marks its device NEEDS_RESET and tells the guest; the VM runs on.
  runner.onError((e) => {
    failure = e;
    transport.markNeedsReset(1);
    metrics.add("needsReset");
    try {
      signalEventfd(opts.irqFd);
    } catch {
      // The irqfd is gone only when the VM is being torn down; nobody is left to notify.
    }
  });

  const tid = await runner.ready.catch((e: unknown) => {
    throw failure ?? e;
  });

  const ctl = new Int32Array(control, 0, CTL_WORDS);
  const cardControl: CardControl = {
    name,
    control,
    transportState: opts.transportState,
    wake: () => signalEventfd(opts.notifyFd),
    interrupt: () => signalEventfd(opts.irqFd),
    get exited() {
      return exited;
    },
    opened: prepared,
  };
  const update = async (what: string, arg: unknown): Promise<unknown> => {
    const run = kind.updates?.[what];
    if (run === undefined) throw new CardConfigError(`card ${name}: a ${kind.kind} card has no "${what}" update`);
    if (exited) throw new CardConfigError(`card ${name} has stopped`);
    return run(cardControl, arg);
  };
  return {
    name,
    tid,
    update,
    replaceImage: async (path: string) => (await update("path", path)) as { sizeBytes: number },
    get failure() {
      return failure;
    },
    metrics: () => metrics.snapshot(),
    updateRateLimiter(config: RateLimiterConfig) {
      writeLimiterConfig(control, config);
      if (!exited) signalEventfd(opts.notifyFd); // wake the worker to pick it up
    },
    async stop() {
      if (!exited) {
        Atomics.store(ctl, CTL_STOP, 1);
        signalEventfd(opts.notifyFd);
      }
      await exit;
    },
  };
}

/** Raises a config-change interrupt for a device whose state the VMM changed (for completeness of the contract). */
export function notifyConfigChange(transportState: SharedArrayBuffer, irqFd: number): void {
  new TransportState(transportState).raiseInterrupt(INT_CONFIG_CHANGE);
  signalEventfd(irqFd);
}

/** Where a card's loop runs: its own worker thread, or this thread's event loop (pooled). */
interface CardRunner {
  /** Resolves with the kernel thread id running the card once it waits for kicks; rejects if it ended first. */
  ready: Promise<number>;
  /** Resolves once the card's loop has ended (stopped or failed) and released guest RAM. */
  exited: Promise<void>;
  /** Called once if the loop fails. */
  onError(cb: (e: Error) => void): void;
}

function workerRunner(data: CardWorkerData, name: string): CardRunner {
  const worker = new Worker(new URL("./card-worker.js", import.meta.url), { workerData: data, name: `card-${name}` });
  const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
  const ready = new Promise<number>((resolve, reject) => {
    const onExit = (): void => reject(new Error(`card ${name} exited before it was ready`));
    worker.once("message", (m: unknown) => {
      worker.off("exit", onExit);
      const r = m as { ready?: unknown; tid?: unknown } | null;
      if (r !== null && r.ready === true && typeof r.tid === "number") resolve(r.tid);
      else reject(new Error(`card ${name}: unexpected first message ${JSON.stringify(m)}`));
    });
    worker.once("exit", onExit);
  });
  return {
    ready,
    exited,
    onError: (cb) => worker.on("error", (e) => cb(e instanceof Error ? e : new Error(String(e)))),
  };
}

async function pooledRunner(data: CardWorkerData, model: ModelModule): Promise<CardRunner> {
  // Loaded here: a process whose cards all run in workers never compiles the loop on this thread.
  const { openCardLoop } = await import("./card-loop.js");
  // A copy, as a worker would get (SharedArrayBuffers stay shared): the kind wipes what it handed
  // over (key bytes) once the card has it.
  const loop = await openCardLoop(structuredClone(data), true, model);
  let failed: Error | undefined;
  let onError: ((e: Error) => void) | undefined;
  const exited = loop.runAsync().then(
    () => loop.finish(),
    (e: unknown) => {
      loop.finish();
      failed = e instanceof Error ? e : new Error(String(e));
      onError?.(failed);
    },
  );
  return {
    ready: Promise.resolve(gettid()),
    exited,
    onError: (cb) => {
      onError = cb;
      if (failed !== undefined) cb(failed);
    },
  };
}
