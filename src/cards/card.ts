// The card runtime, VMM side: starts one device backend in its own worker thread, off the vCPU
// threads. The worker maps guest memory itself (from the memfd), waits on the queue-notify
// eventfd (KVM_IOEVENTFD on QueueNotify in production), answers the queues, and raises the
// interrupt by writing the irqfd eventfd (KVM_IRQFD). Everything the two sides share is in
// SharedArrayBuffers: the transport state, the metrics, a control block (stop, rate limits).
// See README.md for what the VMM must register with KVM.

import { Worker } from "node:worker_threads";
import * as sys from "../sys/index.js";
import { TransportState } from "../devices/virtio/mmio.js";
import { INT_CONFIG_CHANGE } from "../devices/virtio/spec.js";
import { blkDeviceInfo } from "../devices/virtio/blk/device.js";
import { openImage } from "./blk-file.js";
import { CardMetrics, type CardMetricsSnapshot } from "./metrics.js";
import { validateBucket, type RateLimiterConfig, type TokenBucketConfig } from "./rate-limiter.js";

/** One RAM region of the guest as it lies in the memfd. */
export interface CardRegion {
  gpa: number;
  size: number;
  fdOffset: number;
}

export interface BlkCardConfig {
  /** Raw image file. */
  path: string;
  readOnly?: boolean;
  /** GET_ID answer (≤ 20 bytes). */
  id?: string;
  rateLimiter?: RateLimiterConfig;
  queueSize?: number;
}

export interface CardOptions {
  kind: "blk";
  /** The memfd behind guest RAM (src/memory/create.ts). */
  memfd: number;
  regions: CardRegion[];
  /** The device's virtio-mmio state, shared with every vCPU worker's transport. */
  transportState: SharedArrayBuffer;
  /** eventfd the guest's QueueNotify write signals (ioeventfd). */
  notifyFd: number;
  /** eventfd that raises the device's interrupt (irqfd). */
  irqFd: number;
  config: BlkCardConfig;
  /** Card name in errors and metrics (default "blk"). */
  name?: string;
}

export interface CardHandle {
  readonly name: string;
  /** Stops the worker; resolves when it has exited. Idempotent. */
  stop(): Promise<void>;
  metrics(): CardMetricsSnapshot;
  /** Replaces the drive's rate limiter while it runs (null/absent bucket = unlimited). */
  updateRateLimiter(config: RateLimiterConfig): void;
  /** Set when the worker died; the device was marked NEEDS_RESET. */
  readonly failure: Error | undefined;
}

// Control block words (Int32): what the VMM tells the worker.
export const CTL_STOP = 0;
export const CTL_LIMITER_GEN = 1;
export const CTL_WORDS = 4;
// Limiter parameters (Float64 after the Int32 words): bw size, burst, refill; ops size, burst, refill. 0 size = none.
export const CTL_LIMITER_OFFSET = CTL_WORDS * 4;
export const CTL_BYTES = CTL_LIMITER_OFFSET + 6 * 8;

export function writeLimiterConfig(ctl: SharedArrayBuffer, config: RateLimiterConfig | undefined): void {
  const f = new Float64Array(ctl, CTL_LIMITER_OFFSET, 6);
  const put = (at: number, b: TokenBucketConfig | null | undefined, what: string): void => {
    if (b) validateBucket(what, b);
    f[at] = b ? b.size : 0;
    f[at + 1] = b ? (b.oneTimeBurst ?? 0) : 0;
    f[at + 2] = b ? b.refillTime : 0;
  };
  put(0, config?.bandwidth, "bandwidth");
  put(3, config?.ops, "ops");
  Atomics.add(new Int32Array(ctl, 0, CTL_WORDS), CTL_LIMITER_GEN, 1);
}

export function readLimiterConfig(ctl: SharedArrayBuffer): RateLimiterConfig {
  const f = new Float64Array(ctl, CTL_LIMITER_OFFSET, 6);
  const get = (at: number): TokenBucketConfig | null =>
    f[at]! > 0 ? { size: f[at]!, oneTimeBurst: f[at + 1]!, refillTime: f[at + 2]! } : null;
  return { bandwidth: get(0), ops: get(3) };
}

/** What the worker receives (workerData). */
export interface CardWorkerData {
  kind: "blk";
  name: string;
  memfd: number;
  regions: CardRegion[];
  transportState: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  control: SharedArrayBuffer;
  notifyFd: number;
  irqFd: number;
  imageFd: number;
  sizeBytes: number;
  readOnly: boolean;
  id: string;
}

/** Signals an eventfd once (8-byte counter add, eventfd(2)). */
export function signalEventfd(fd: number): void {
  const one = new Uint8Array(8);
  one[0] = 1;
  sys.write(fd, one);
}

/**
 * Starts a card. For a blk card: opens the image (a missing or unwritable image rejects with a
 * DriveConfigError naming it), writes the device identity, features and config into
 * `transportState` (do this before the vCPUs run), then starts the worker; resolves once the
 * worker has mapped guest memory and waits for kicks.
 */
export async function startCard(opts: CardOptions): Promise<CardHandle> {
  const name = opts.name ?? opts.kind;
  const readOnly = opts.config.readOnly ?? false;
  const image = openImage(opts.config.path, readOnly);
  const control = new SharedArrayBuffer(CTL_BYTES);
  const metrics = new CardMetrics();
  const transport = new TransportState(opts.transportState);
  let worker: Worker;
  try {
    writeLimiterConfig(control, opts.config.rateLimiter);
    transport.setDeviceInfo(blkDeviceInfo(image.sizeBytes, { readOnly, queueSize: opts.config.queueSize }));
    const data: CardWorkerData = {
      kind: opts.kind,
      name,
      memfd: opts.memfd,
      regions: opts.regions,
      transportState: opts.transportState,
      metrics: metrics.sab,
      control,
      notifyFd: opts.notifyFd,
      irqFd: opts.irqFd,
      imageFd: image.fd,
      sizeBytes: image.sizeBytes,
      readOnly,
      id: opts.config.id ?? name,
    };
    worker = new Worker(new URL("./card-worker.js", import.meta.url), { workerData: data, name: `card-${name}` });
  } catch (e) {
    image.close();
    throw e;
  }

  let failure: Error | undefined;
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    worker.once("exit", () => {
      exited = true;
      image.close();
      resolve();
    });
  });
  // A card that dies marks its device NEEDS_RESET and tells the guest; the VM runs on.
  worker.on("error", (e) => {
    failure = e instanceof Error ? e : new Error(String(e));
    transport.markNeedsReset(1);
    metrics.add("needsReset");
    try {
      signalEventfd(opts.irqFd);
    } catch {
      // The irqfd is gone only when the VM is being torn down; nobody is left to notify.
    }
  });

  await new Promise<void>((resolve, reject) => {
    const onExit = (): void => reject(failure ?? new Error(`card ${name} exited before it was ready`));
    worker.once("message", (m: unknown) => {
      worker.off("exit", onExit);
      if (m === "ready") resolve();
      else reject(new Error(`card ${name}: unexpected first message ${JSON.stringify(m)}`));
    });
    worker.once("exit", onExit);
  });

  const ctl = new Int32Array(control, 0, CTL_WORDS);
  return {
    name,
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
