// The card runtime, VMM side: starts one device backend in its own worker thread, off the vCPU
// threads. The worker maps guest memory itself (from the memfd), waits on the queue-notify
// eventfd (KVM_IOEVENTFD on QueueNotify in production), answers the queues, and raises the
// interrupt by writing the irqfd eventfd (KVM_IRQFD). Everything the two sides share is in
// SharedArrayBuffers: the transport state, the metrics, a control block (stop, rate limits).
// See README.md for what the VMM must register with KVM.

import { Worker } from "node:worker_threads";
import { createPrivateKey, KeyObject } from "node:crypto";
import * as sys from "../sys/index.js";
import { TransportState, type VirtioDeviceInfo } from "../devices/virtio/mmio.js";
import { BLK_CFG_CAPACITY, BLK_SECTOR_SIZE, INT_CONFIG_CHANGE } from "../devices/virtio/spec.js";
import { blkDeviceInfo } from "../devices/virtio/blk/device.js";
import { RNG_MAX_REQUEST_BYTES_DEFAULT, rngDeviceInfo } from "../devices/virtio/rng/device.js";
import { nsmDeviceInfo } from "../devices/virtio/nsm/device.js";
import { chipLoad } from "../security/chip.js";
import { openImage, type OpenedImage } from "./blk-file.js";
import { SharedPcrBank } from "./shared-pcr-bank.js";
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

/** virtio-rng (virtio 1.2 §5.4): entropy from the host CSPRNG. */
export interface RngCardConfig {
  /** Bytes (bandwidth) and requests (ops) per refillTime; absent = unlimited. */
  rateLimiter?: RateLimiterConfig;
  /** Bytes one request gets at most (default 64 KiB). */
  maxRequestBytes?: number;
  queueSize?: number;
}

/** Who signs attestation documents: a chip directory (chipLoad), or its material directly. */
export type NsmSigner =
  | { chipDir: string }
  | {
      /** DER of the leaf (signing) certificate. */
      certificate: Uint8Array;
      /** DER certificates, root first (docs/attestation_process.md §3.2.3). */
      cabundle: Uint8Array[];
      /** The leaf's P-384 private key: a KeyObject, or PKCS#8 DER bytes. */
      signingKey: KeyObject | Uint8Array;
    };

/** virtio-nsm (device ID 33): the guest's Nitro Secure Module over the VM's shared PCR bank. */
export interface NsmCardConfig {
  signer: NsmSigner;
  /** module_id of DescribeNSM and of attestation documents. */
  moduleId: string;
  /** The VM's PCR bank, shared with the VMM (SharedPcrBank.from(measureBoot(...)) before start). */
  pcrs: SharedPcrBank;
  queueSize?: number;
}

export class CardConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CardConfigError";
  }
}

interface CardBase {
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
}

export type CardOptions =
  | (CardBase & { kind: "blk"; config: BlkCardConfig })
  | (CardBase & { kind: "rng"; config?: RngCardConfig })
  | (CardBase & { kind: "nsm"; config: NsmCardConfig });

export type CardKind = CardOptions["kind"];

export interface CardHandle {
  readonly name: string;
  /** Stops the worker; resolves when it has exited. Idempotent. */
  stop(): Promise<void>;
  metrics(): CardMetricsSnapshot;
  /** Replaces the card's rate limiter while it runs (null/absent bucket = unlimited; blk and rng). */
  updateRateLimiter(config: RateLimiterConfig): void;
  /**
   * blk: puts the image at `path` under the running drive (Firecracker's PATCH /drives
   * path_on_host). Opened here with the drive's read-only setting (a missing or unusable file is a
   * DriveConfigError and nothing changes); the worker switches between two requests; then the old
   * image is closed, the capacity in config space updated and a config-change interrupt raised
   * (virtio 1.2 §5.2.4, §4.2.2 ConfigGeneration). Resolves with the new size.
   */
  replaceImage(path: string): Promise<{ sizeBytes: number }>;
  /** Set when the worker died; the device was marked NEEDS_RESET. */
  readonly failure: Error | undefined;
  /** The kernel thread id of the card's worker (its CPU time is /proc/self/task/<tid>/stat). */
  readonly tid: number;
}

// Control block words (Int32): what the VMM tells the worker.
export const CTL_STOP = 0;
export const CTL_LIMITER_GEN = 1;
/** Bumped by the VMM when a new image descriptor waits at CTL_IMAGE_OFFSET (blk). */
export const CTL_IMAGE_GEN = 2;
/** The image generation the worker has switched to. */
export const CTL_IMAGE_ACK = 3;
/**
 * The replacement image's descriptor, -1 when none waits: the worker takes it with an exchange, a
 * timed-out replaceImage withdraws it with a compare-exchange, so exactly one side owns it.
 */
export const CTL_IMAGE_FD = 4;
export const CTL_WORDS = 6; // even: the Float64 areas below stay 8-byte aligned
// Limiter parameters (Float64 after the Int32 words): bw size, burst, refill; ops size, burst, refill. 0 size = none.
export const CTL_LIMITER_OFFSET = CTL_WORDS * 4;
// The replacement image's size in bytes (Float64).
export const CTL_IMAGE_OFFSET = CTL_LIMITER_OFFSET + 6 * 8;
export const CTL_BYTES = CTL_IMAGE_OFFSET + 8;
/** How long replaceImage waits for the worker to take the new image. */
const IMAGE_SWAP_TIMEOUT_MS = 10_000;

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

interface WorkerBase {
  name: string;
  memfd: number;
  regions: CardRegion[];
  transportState: SharedArrayBuffer;
  metrics: SharedArrayBuffer;
  control: SharedArrayBuffer;
  notifyFd: number;
  irqFd: number;
}

/** What the worker receives (workerData): plain data, structured-cloned (SharedArrayBuffers shared). */
export type CardWorkerData =
  | (WorkerBase & { kind: "blk"; imageFd: number; sizeBytes: number; readOnly: boolean; id: string })
  | (WorkerBase & { kind: "rng"; maxRequestBytes: number })
  | (WorkerBase & {
      kind: "nsm";
      moduleId: string;
      pcrBank: SharedArrayBuffer;
      certificate: Uint8Array;
      cabundle: Uint8Array[];
      /** PKCS#8 DER of the signing key; the main thread's copy is zeroed once the worker has it. */
      signingKeyPkcs8: Uint8Array;
    });

type KindData = { [K in CardWorkerData["kind"]]: Omit<Extract<CardWorkerData, { kind: K }>, keyof WorkerBase> }[CardWorkerData["kind"]];

interface Prepared {
  info: VirtioDeviceInfo;
  data: KindData;
  rateLimiter: RateLimiterConfig | undefined;
  /** blk: the image now under the drive (replaceImage changes it) and how it is opened. */
  image?: { current: OpenedImage; readOnly: boolean };
  /** Runs when the worker has exited (closes what the card opened). */
  release(): void;
  /** Runs once the worker has its copy of workerData (wipes key bytes). */
  handedOver(): void;
}

function resolveSigner(signer: NsmSigner): { certificate: Uint8Array; cabundle: Uint8Array[]; key: KeyObject } {
  if ("chipDir" in signer) {
    const chip = chipLoad(signer.chipDir); // ChipError names the file at fault
    return { certificate: chip.leaf.der, cabundle: [chip.root.der], key: chip.leafKey };
  }
  let key: KeyObject;
  try {
    key =
      signer.signingKey instanceof KeyObject
        ? signer.signingKey
        : createPrivateKey({ key: Buffer.from(signer.signingKey), format: "der", type: "pkcs8" });
  } catch (e) {
    throw new CardConfigError(`nsm signer: signingKey is not a PKCS#8 DER private key (${(e as Error).message})`);
  }
  if (key.type !== "private" || key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new CardConfigError("nsm signer: signingKey must be a P-384 EC private key (ES384)");
  }
  if (signer.certificate.length === 0 || signer.cabundle.length === 0) {
    throw new CardConfigError("nsm signer: a leaf certificate and a cabundle with at least the root are required");
  }
  return { certificate: signer.certificate, cabundle: signer.cabundle, key };
}

/** Per kind: opens what the card needs (on this thread, so config errors are start-up errors) and its device identity. */
function prepare(opts: CardOptions): Prepared {
  const none = (): void => {};
  switch (opts.kind) {
    case "blk": {
      const readOnly = opts.config.readOnly ?? false;
      const image = openImage(opts.config.path, readOnly);
      const held = { current: image, readOnly };
      try {
        return {
          info: blkDeviceInfo(image.sizeBytes, { readOnly, queueSize: opts.config.queueSize }),
          data: { kind: "blk", imageFd: image.fd, sizeBytes: image.sizeBytes, readOnly, id: opts.config.id ?? opts.name ?? "blk" },
          rateLimiter: opts.config.rateLimiter,
          image: held,
          release: () => held.current.close(),
          handedOver: none,
        };
      } catch (e) {
        image.close();
        throw e;
      }
    }
    case "rng": {
      const max = opts.config?.maxRequestBytes ?? RNG_MAX_REQUEST_BYTES_DEFAULT;
      if (!Number.isSafeInteger(max) || max < 1) throw new CardConfigError(`rng maxRequestBytes must be a positive integer, not ${max}`);
      return {
        info: rngDeviceInfo({ queueSize: opts.config?.queueSize }),
        data: { kind: "rng", maxRequestBytes: max },
        rateLimiter: opts.config?.rateLimiter,
        release: none,
        handedOver: none,
      };
    }
    case "nsm": {
      const c = opts.config;
      if (!(c.pcrs instanceof SharedPcrBank)) throw new CardConfigError("nsm pcrs must be a SharedPcrBank (src/cards/shared-pcr-bank.ts)");
      if (typeof c.moduleId !== "string" || c.moduleId.length === 0) throw new CardConfigError("nsm moduleId must be a non-empty string");
      const s = resolveSigner(c.signer);
      const pkcs8 = new Uint8Array(s.key.export({ format: "der", type: "pkcs8" }));
      return {
        info: nsmDeviceInfo({ queueSize: c.queueSize }),
        data: { kind: "nsm", moduleId: c.moduleId, pcrBank: c.pcrs.sab, certificate: s.certificate, cabundle: s.cabundle, signingKeyPkcs8: pkcs8 },
        rateLimiter: undefined,
        release: none,
        handedOver: () => pkcs8.fill(0),
      };
    }
  }
}

/** Signals an eventfd once (8-byte counter add, eventfd(2)). */
export function signalEventfd(fd: number): void {
  sys.write(fd, ONE);
}

/** The 8-byte counter increment an eventfd write adds (one per thread: module state is per isolate). */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/**
 * Starts a card. Per kind, on this thread: blk opens the image (a missing or unwritable image
 * rejects with a DriveConfigError naming it); nsm loads the chip (ChipError) or checks the given
 * key (CardConfigError); rng checks its limits. Then writes the device identity, features and
 * config into `transportState` (do this before the vCPUs run) and starts the worker; resolves
 * once the worker has mapped guest memory and waits for kicks.
 */
export async function startCard(opts: CardOptions): Promise<CardHandle> {
  const name = opts.name ?? opts.kind;
  const prepared = prepare(opts);
  const control = new SharedArrayBuffer(CTL_BYTES);
  const metrics = new CardMetrics();
  const transport = new TransportState(opts.transportState);
  let worker: Worker;
  try {
    writeLimiterConfig(control, prepared.rateLimiter);
    transport.setDeviceInfo(prepared.info);
    const data = {
      ...prepared.data,
      name,
      memfd: opts.memfd,
      regions: opts.regions,
      transportState: opts.transportState,
      metrics: metrics.sab,
      control,
      notifyFd: opts.notifyFd,
      irqFd: opts.irqFd,
    } as CardWorkerData;
    worker = new Worker(new URL("./card-worker.js", import.meta.url), { workerData: data, name: `card-${name}` });
  } catch (e) {
    prepared.release();
    throw e;
  } finally {
    // workerData was cloned when the Worker was constructed (or never will be): wipe key bytes here.
    prepared.handedOver();
  }

  let failure: Error | undefined;
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    worker.once("exit", () => {
      exited = true;
      prepared.release();
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

  const tid = await new Promise<number>((resolve, reject) => {
    const onExit = (): void => reject(failure ?? new Error(`card ${name} exited before it was ready`));
    worker.once("message", (m: unknown) => {
      worker.off("exit", onExit);
      const ready = m as { ready?: unknown; tid?: unknown } | null;
      if (ready !== null && ready.ready === true && typeof ready.tid === "number") resolve(ready.tid);
      else reject(new Error(`card ${name}: unexpected first message ${JSON.stringify(m)}`));
    });
    worker.once("exit", onExit);
  });

  const ctl = new Int32Array(control, 0, CTL_WORDS);
  Atomics.store(ctl, CTL_IMAGE_FD, -1);
  let swapping = false;
  return {
    name,
    tid,
    async replaceImage(path: string) {
      const held = prepared.image;
      if (held === undefined) throw new CardConfigError(`card ${name}: only a blk card has an image to replace`);
      if (exited) throw new CardConfigError(`card ${name} has stopped`);
      if (swapping) throw new CardConfigError(`card ${name}: an image replacement is already under way`);
      swapping = true;
      try {
        const next = openImage(path, held.readOnly); // DriveConfigError names the file; nothing changed
        new Float64Array(control, CTL_IMAGE_OFFSET, 1)[0] = next.sizeBytes;
        Atomics.store(ctl, CTL_IMAGE_FD, next.fd);
        const gen = Atomics.add(ctl, CTL_IMAGE_GEN, 1) + 1;
        signalEventfd(opts.notifyFd); // wake the worker to take it
        const deadline = Date.now() + IMAGE_SWAP_TIMEOUT_MS;
        while (Atomics.load(ctl, CTL_IMAGE_ACK) !== gen) {
          // Gave up (a pass stuck in slow I/O, or the worker gone): withdraw the descriptor unless the
          // worker took it meanwhile — then it is the drive's image now and the swap goes on.
          if ((exited || Date.now() > deadline) && Atomics.compareExchange(ctl, CTL_IMAGE_FD, next.fd, -1) === next.fd) {
            next.close(); // the generation stays spent: the worker acknowledges it finding no descriptor
            throw new CardConfigError(`card ${name}: the worker did not take the new image ${path}${exited ? " (it stopped)" : " in time"}`);
          }
          if (exited) break; // took it, then stopped: release() closes it as the current image
          await new Promise((r) => setTimeout(r, 1)); // the worker takes it at its next pass boundary
        }
        held.current.close();
        held.current = next;
        const capacity = new Uint8Array(8);
        new DataView(capacity.buffer).setBigUint64(0, BigInt(Math.floor(next.sizeBytes / BLK_SECTOR_SIZE)), true);
        transport.updateConfig(BLK_CFG_CAPACITY, capacity); // bumps ConfigGeneration, raises the config-change bit
        signalEventfd(opts.irqFd);
        return { sizeBytes: next.sizeBytes };
      } finally {
        swapping = false;
      }
    },
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
