// One description per virtio device kind (Firecracker's VirtioDevice + one attach path; crosvm's
// proxy, where device-specific operations are messages). Each device folder exports one
// `VirtioDeviceKind`; `kinds.ts` lists them. Nothing outside a device folder branches on the kind:
// the VMM plans slots, the card runtime starts workers, the API reports metrics and forwards
// runtime updates, all through this interface.
//
// A kind is used on two threads:
// - the VMM's (main) thread: `check` at the edge, `open` when the card starts (host resources are
//   opened once, there, so a bad file is a start-up error), `updates` while it runs;
// - the card's worker thread: the module at `model` exports `createModel`, which builds the
//   device model over the worker's own mapping of guest memory from `workerData`; a pooled card,
//   run on the VMM's thread, gets the same module through `loadModel` instead.

import type { GuestMemory } from "../../memory/guest-memory.js";
import type { PollInterest, PollReady } from "../../sys/libc.js";
import type { RateLimiterConfig } from "../../cards/rate-limiter.js";
import type { CardMetricsSnapshot } from "../../cards/metrics.js";
import type { RateLimiter } from "../../cards/rate-limiter.js";
import type { SharedPcrBank } from "../../cards/shared-pcr-bank.js";
import type { VirtioDeviceInfo } from "./mmio.js";
import type { SplitQueue } from "./queue.js";
import type { ProcessResult } from "./blk/device.js";

/** What the VM gives every device when it places it: its identity and its PCR bank. */
export interface DeviceContext {
  /** The VM's id (PCR4). */
  vmId: string;
  /** The VM's PCR bank, shared with the cards (the NSM card extends and reads it). */
  pcrs: SharedPcrBank;
}

/** A device's host resources, opened on the VMM's thread when its card starts. */
export interface OpenedDevice {
  /** Identity, features and config space the transport offers the driver. */
  info: VirtioDeviceInfo;
  /** Plain data for the card worker (structured-cloned; SharedArrayBuffers shared, fds are process-wide). */
  workerData: unknown;
  /** The card's initial rate limiter, if the kind has one. */
  rateLimiter?: RateLimiterConfig;
  /** Runs once the worker has exited: closes what `open` opened. */
  release(): void;
  /** Runs once the worker has its copy of workerData (wipes key bytes). */
  handedOver?(): void;
  /** Per-kind state the kind's `updates` work on (blk: the image now under the drive). */
  state?: unknown;
}

/** What a running card offers a kind's runtime updates. */
export interface CardControl {
  readonly name: string;
  /** The control block shared with the worker: CTL_* words (cards/card.ts), then the kind's own area. */
  readonly control: SharedArrayBuffer;
  /** The device's virtio-mmio state (config space updates, interrupts). */
  readonly transportState: SharedArrayBuffer;
  /** Wakes the worker (it then looks at the control block). */
  wake(): void;
  /** Raises the device's interrupt line (irqfd). */
  interrupt(): void;
  /** True once the worker has exited. */
  readonly exited: boolean;
  /** What `open` returned. */
  readonly opened: OpenedDevice;
}

/** What the card worker gives a model. */
export interface ModelContext<D> {
  mem: GuestMemory;
  data: D;
  /** Counts requests, bytes, errors and throttling into the card's metrics. */
  stats: { request(bytes: number): void; error(): void; throttled(): void };
  limiter: RateLimiter;
  /** The control block (see CardControl.control). */
  control: SharedArrayBuffer;
  /** The features the driver accepted (meaningful once it has set FEATURES_OK). */
  driverFeatures(): bigint;
  /** Bumped by every device reset (a model that keeps per-negotiation state starts over when it changes). */
  resetCount(): number;
}

/**
 * The device model as the card worker drives it. On every wake-up (a kick on any queue, one of
 * its own descriptors ready, a control-block update) the worker calls `onReady` for its ready
 * descriptors, then `beforePass`, then `process` for each queue the driver has made ready, in
 * index order, and raises one interrupt if any queue asks for it.
 */
export interface CardModel {
  /** Answers the available requests of queue `index`. A fatal VirtqueueError propagates (NEEDS_RESET). */
  process(q: SplitQueue, index: number): ProcessResult;
  /** Runs on every wake-up before the queues are served: take the kind's control-block updates. */
  beforePass?(): void;
  /** Host descriptors the model waits on besides the kicks (net: its TAP; vsock: its sockets), and for what; asked on every wake-up. */
  pollFds?(): readonly PollInterest[];
  /** One of `pollFds` is ready (what poll(2) said of it). */
  onReady?(ready: PollReady): void;
}

/** What the module a kind's `model` URL names exports (and VirtioDeviceKind.loadModel gives). */
export interface ModelModule {
  // A method, so each kind's own worker-data type fits (method parameters are bivariant).
  createModel(ctx: ModelContext<unknown>): CardModel;
}

/**
 * A virtio device kind. `I` is one instance as the VM's config gives it (a drive, the entropy
 * device, the NSM, ...), `C` the config its card starts from (the instance plus what the VM adds:
 * its id, its PCR bank). Everything kind-specific lives behind these members.
 */
export interface VirtioDeviceKind<C = unknown, I = C> {
  /** Short name: "blk", "rng", "nsm". */
  readonly kind: string;
  /** This kind's instances in a VM's device config, checked at the edge (throws a DriveConfigError naming the problem). */
  instances(config: VirtioDevicesConfig): I[];
  /** Bus and card name (virtio-blk-<id>, virtio-rng). Unique in a VM. */
  slotName(instance: I): string;
  /** The id by which the API and SDK address an instance (a drive's id), if the kind has one. */
  instanceId?(instance: I): string;
  /** The card config of an instance placed in a VM. */
  cardConfig(instance: I, ctx: DeviceContext): C;
  /**
   * Checks a card config and opens its host resources (on the VMM's thread, so a bad file is a
   * start-up error) and describes the device. `name` is the card's name for messages.
   */
  open(config: C, name: string): OpenedDevice;
  /** The worker-side module (exports `createModel`): a card's worker imports it by this URL. */
  readonly model: URL;
  /**
   * The same module for a card run on the thread that holds this kind (a pooled card): through
   * the kind's own import, not by URL, so the copy of the model a bundle carries (the CLI's,
   * dist/bundle) is the one used, never a second copy of the modules beside it.
   */
  loadModel(): Promise<ModelModule>;
  /** Runtime updates (Firecracker's PATCH on a running device) as named messages. */
  readonly updates?: Readonly<Record<string, (card: CardControl, arg: unknown) => Promise<unknown>>>;
  /** Firecracker-style metric groups for one instance's counters (api/metrics.ts), keyed by group name. */
  metricGroups?(instance: I, m: CardMetricsSnapshot): Record<string, Record<string, number>>;
}

/** A device of some kind, placed in a VM: the kind and its instance config. */
export interface DeviceInstance {
  kind: VirtioDeviceKind<unknown, unknown>;
  instance: unknown;
}

/**
 * Every virtio device of a VM, as its configuration gives them. One field per kind; the kinds
 * read their own (kinds.ts).
 */
export interface VirtioDevicesConfig {
  drives?: readonly import("../../vmm/drives.js").DriveConfig[];
  entropy?: import("../../vmm/drives.js").EntropyConfig;
  nsm?: import("../../vmm/drives.js").NsmConfig;
  /** Network interfaces (virtio-net on a TAP each). */
  net?: readonly import("./net/kind.js").NetConfig[];
  /** The vsock device (virtio-vsock on host Unix sockets, Firecracker's /vsock): at most one. */
  vsock?: import("./vsock/kind.js").VsockConfig;
}
