// virtio-mmio transport, modern interface only (Version 2). virtio 1.2 §4.2.2 (registers),
// §2.1 and §3.1.1 (device status and the driver's initialisation sequence).
//
// The transport is plain data in a SharedArrayBuffer (layout below), so every vCPU worker's MMIO
// bus attaches its own VirtioMmioTransport to one device, the card worker reads the queue set-up
// and publishes interrupts through the same words, and save/restore is a copy of the buffer.
// Register accesses run under the SharedLock; InterruptStatus is also updated with Atomics so a
// card can raise it without the lock.

import type { BusDevice } from "../bus.js";
import { SharedLock } from "../shared-state.js";
import {
  DEVICE_ID_NONE,
  F_VERSION_1,
  INT_CONFIG_CHANGE,
  MMIO_CONFIG,
  MMIO_CONFIG_GENERATION,
  MMIO_DEVICE_FEATURES,
  MMIO_DEVICE_FEATURES_SEL,
  MMIO_DEVICE_ID,
  MMIO_DRIVER_FEATURES,
  MMIO_DRIVER_FEATURES_SEL,
  MMIO_INTERRUPT_ACK,
  MMIO_INTERRUPT_STATUS,
  MMIO_MAGIC,
  MMIO_MAGIC_VALUE,
  MMIO_QUEUE_DESC_HIGH,
  MMIO_QUEUE_DESC_LOW,
  MMIO_QUEUE_DEVICE_HIGH,
  MMIO_QUEUE_DEVICE_LOW,
  MMIO_QUEUE_DRIVER_HIGH,
  MMIO_QUEUE_DRIVER_LOW,
  MMIO_QUEUE_NOTIFY,
  MMIO_QUEUE_NUM,
  MMIO_QUEUE_NUM_MAX,
  MMIO_QUEUE_READY,
  MMIO_QUEUE_SEL,
  MMIO_SHM_LEN_HIGH,
  MMIO_SHM_LEN_LOW,
  MMIO_SHM_BASE_HIGH,
  MMIO_SHM_BASE_LOW,
  MMIO_STATUS,
  MMIO_VENDOR_ID,
  MMIO_VERSION,
  MMIO_VERSION_MODERN,
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FAILED,
  STATUS_FEATURES_OK,
  bit,
} from "./spec.js";
import { isValidQueueSize } from "./queue.js";

/** Queues per device this layout holds (virtio-blk without MQ uses 1). */
export const MAX_QUEUES = 8;
/** Device-specific configuration bytes this layout holds (virtio-blk needs 60). */
export const CONFIG_SPACE_MAX = 256;
/** Bytes of the MMIO window of one device: registers + config space. */
export const MMIO_WINDOW = MMIO_CONFIG + CONFIG_SPACE_MAX;

// Int32 word indices of the shared state.
const W_LOCK = 0;
const W_STATUS = 1;
const W_DEV_FEAT_SEL = 2;
const W_DRV_FEAT_SEL = 3;
const W_QUEUE_SEL = 4;
const W_INT_STATUS = 5;
const W_CONFIG_GEN = 6;
const W_DEVICE_ID = 7;
const W_VENDOR_ID = 8;
const W_NUM_QUEUES = 9;
const W_QUEUE_NUM_MAX = 10;
const W_DEV_FEAT_LO = 11;
const W_DEV_FEAT_HI = 12;
const W_DRV_FEAT_LO = 13;
const W_DRV_FEAT_HI = 14;
/** Bumped on every device reset, so a card can tell its snapshot of the queues went stale. */
const W_RESET_COUNT = 15;
const W_CONFIG_SIZE = 16;
/** Why the device asked for a reset (FailureCode), 0 when it did not. */
const W_FAILURE = 17;
/** Bumped on every status write, so a card can see DRIVER_OK arrive. */
const W_STATUS_WRITES = 18;
/** 1 while the card is in a service pass (touching the rings), 0 otherwise: a reset waits for 0. */
const W_CARD_BUSY = 19;
/** Set while a reset waits in waitServiceIdle: only then does endService wake anyone. */
const W_RESET_WAITING = 20;
/** How long a reset waits for the card's pass to end before it returns anyway. */
const RESET_WAIT_MS = 1000;
const W_QUEUES = 32;
const QUEUE_WORDS = 12;
// Per-queue words.
const Q_NUM = 0;
const Q_READY = 1;
const Q_DESC_LO = 2;
const Q_DESC_HI = 3;
const Q_DRV_LO = 4;
const Q_DRV_HI = 5;
const Q_DEV_LO = 6;
const Q_DEV_HI = 7;
const Q_LAST_AVAIL = 8; // device position (card-owned, kept here for save/restore)
const Q_NEXT_USED = 9;
const W_END = W_QUEUES + QUEUE_WORDS * MAX_QUEUES;
const OFF_CONFIG = W_END * 4;
export const TRANSPORT_STATE_BYTES = OFF_CONFIG + CONFIG_SPACE_MAX;

/** What the device model tells the transport about itself. */
export interface VirtioDeviceInfo {
  deviceId: number;
  /** Subsystem vendor; 0 unless a device needs one. */
  vendorId?: number;
  /** Offered features; VIRTIO_F_VERSION_1 is always added (modern only). */
  features: bigint;
  numQueues: number;
  /** QueueNumMax for every queue. */
  queueNumMax: number;
  /** Device-specific configuration space (virtio 1.2 §4.2.2 Config). */
  config: Uint8Array;
}

/** QueueSetup with the reset generation and the driver's feature words (TransportState.snapshotQueue). */
export interface QueueSnapshot extends QueueSetup {
  gen: number;
  featLo: number;
  featHi: number;
}

export interface QueueSetup {
  num: number;
  ready: boolean;
  desc: number;
  driver: number;
  device: number;
  lastAvail: number;
  nextUsed: number;
}

/** A new transport state with no device (DeviceID 0); a card fills it in with `setDeviceInfo`. */
export function createTransportState(): SharedArrayBuffer {
  return new SharedArrayBuffer(TRANSPORT_STATE_BYTES);
}

const u64 = (lo: number, hi: number): number => (hi >>> 0) * 2 ** 32 + (lo >>> 0);

/**
 * Typed access to a transport state buffer: used by the MMIO register handler on vCPU workers
 * and by the card runtime. Every method that reads more than one word takes the lock.
 */
export class TransportState {
  readonly lock: SharedLock;
  readonly words: Int32Array;
  readonly config: Uint8Array;

  constructor(readonly sab: SharedArrayBuffer) {
    if (sab.byteLength !== TRANSPORT_STATE_BYTES) {
      throw new RangeError(`virtio-mmio transport state must be ${TRANSPORT_STATE_BYTES} bytes, not ${sab.byteLength}`);
    }
    this.lock = new SharedLock(sab, W_LOCK * 4);
    this.words = new Int32Array(sab, 0, W_END);
    this.config = new Uint8Array(sab, OFF_CONFIG, CONFIG_SPACE_MAX);
  }

  setDeviceInfo(info: VirtioDeviceInfo): void {
    if (info.numQueues < 1 || info.numQueues > MAX_QUEUES) throw new RangeError(`a device has 1 to ${MAX_QUEUES} queues, not ${info.numQueues}`);
    if (!isValidQueueSize(info.queueNumMax)) throw new RangeError(`QueueNumMax ${info.queueNumMax} is not a power of two up to 32768`);
    if (info.config.byteLength > CONFIG_SPACE_MAX) throw new RangeError(`config space of ${info.config.byteLength} bytes is over ${CONFIG_SPACE_MAX}`);
    const features = BigInt.asUintN(64, info.features | bit(F_VERSION_1));
    this.lock.with(() => {
      const w = this.words;
      w[W_DEVICE_ID] = info.deviceId;
      w[W_VENDOR_ID] = info.vendorId ?? 0;
      w[W_DEV_FEAT_LO] = Number(features & 0xffffffffn) | 0;
      w[W_DEV_FEAT_HI] = Number(features >> 32n) | 0;
      w[W_NUM_QUEUES] = info.numQueues;
      w[W_QUEUE_NUM_MAX] = info.queueNumMax;
      w[W_CONFIG_SIZE] = info.config.byteLength;
      this.config.fill(0);
      this.config.set(info.config);
    });
  }

  get deviceId(): number {
    return Atomics.load(this.words, W_DEVICE_ID);
  }
  get status(): number {
    return Atomics.load(this.words, W_STATUS) & 0xff;
  }
  get resetCount(): number {
    return Atomics.load(this.words, W_RESET_COUNT);
  }
  get statusWrites(): number {
    return Atomics.load(this.words, W_STATUS_WRITES);
  }
  get interruptStatus(): number {
    return Atomics.load(this.words, W_INT_STATUS);
  }
  get failure(): number {
    return Atomics.load(this.words, W_FAILURE);
  }
  get numQueues(): number {
    return Atomics.load(this.words, W_NUM_QUEUES);
  }
  get deviceFeatures(): bigint {
    return BigInt(this.words[W_DEV_FEAT_LO]! >>> 0) | (BigInt(this.words[W_DEV_FEAT_HI]! >>> 0) << 32n);
  }
  /** The features the driver accepted (meaningful once FEATURES_OK is set). */
  get driverFeatures(): bigint {
    return BigInt(this.words[W_DRV_FEAT_LO]! >>> 0) | (BigInt(this.words[W_DRV_FEAT_HI]! >>> 0) << 32n);
  }

  /** Raises InterruptStatus bits (the card does this before writing its irqfd). */
  raiseInterrupt(bits: number): void {
    Atomics.or(this.words, W_INT_STATUS, bits);
  }

  /** Queue `q`'s set-up as the driver left it. Call under `lock` for a consistent snapshot. */
  queue(q: number): QueueSetup {
    const s: QueueSetup = { num: 0, ready: false, desc: 0, driver: 0, device: 0, lastAvail: 0, nextUsed: 0 };
    this.readQueue(q, s);
    return s;
  }

  /** Fills `into` with queue `q`'s set-up words (no lock: callers take it when they need a consistent view). */
  private readQueue(q: number, into: QueueSetup): void {
    const b = W_QUEUES + QUEUE_WORDS * q;
    const w = this.words;
    into.num = w[b + Q_NUM]!;
    into.ready = w[b + Q_READY] === 1;
    into.desc = u64(w[b + Q_DESC_LO]!, w[b + Q_DESC_HI]!);
    into.driver = u64(w[b + Q_DRV_LO]!, w[b + Q_DRV_HI]!);
    into.device = u64(w[b + Q_DEV_LO]!, w[b + Q_DEV_HI]!);
    into.lastAvail = w[b + Q_LAST_AVAIL]! & 0xffff;
    into.nextUsed = w[b + Q_NEXT_USED]! & 0xffff;
  }


  /**
   * Fills `into` with queue `q`'s set-up, the reset generation and the driver's feature words, all
   * under the lock (one consistent view): the card's per-pass snapshot, without allocating.
   */
  snapshotQueue(q: number, into: QueueSnapshot): void {
    const w = this.words;
    this.lock.lock();
    try {
      into.gen = w[W_RESET_COUNT]!;
      into.featLo = w[W_DRV_FEAT_LO]! >>> 0;
      into.featHi = w[W_DRV_FEAT_HI]! >>> 0;
      this.readQueue(q, into);
    } finally {
      this.lock.unlock();
    }
  }


  /** Stores the device's ring position for queue `q`. Call under `lock`. */
  setQueuePosition(q: number, lastAvail: number, nextUsed: number): void {
    const b = W_QUEUES + QUEUE_WORDS * q;
    this.words[b + Q_LAST_AVAIL] = lastAvail & 0xffff;
    this.words[b + Q_NEXT_USED] = nextUsed & 0xffff;
  }

  /**
   * The device failed: sets DEVICE_NEEDS_RESET and the config-change interrupt bit (virtio 1.2
   * §2.1.2, §4.2.2 InterruptStatus). With `generation` (a resetCount the caller saw), only if no
   * reset came since: a pass that outlived a reset must not fail the fresh device. Returns whether
   * it did; the caller then signals the interrupt.
   */
  markNeedsReset(failure: number, generation?: number): boolean {
    return this.lock.with(() => {
      if (generation !== undefined && this.words[W_RESET_COUNT] !== generation) return false;
      this.words[W_STATUS] = this.words[W_STATUS]! | STATUS_DEVICE_NEEDS_RESET;
      this.words[W_FAILURE] = failure;
      this.raiseInterrupt(INT_CONFIG_CHANGE);
      return true;
    });
  }

  /**
   * Ends a card's pass over the device set up at reset generation `generation`: stores the queue
   * position and raises `interrupt` bits, both only if no reset came since (§2.4: after a reset the
   * device presents its initial state). Returns whether it did.
   */
  finishPass(generation: number, q: number, lastAvail: number, nextUsed: number, interrupt: number): boolean {
    this.lock.lock(); // not lock.with: no closure per pass
    try {
      if (this.words[W_RESET_COUNT] !== generation) return false;
      this.setQueuePosition(q, lastAvail, nextUsed);
      if (interrupt !== 0) this.raiseInterrupt(interrupt);
      return true;
    } finally {
      this.lock.unlock();
    }
  }

  /** Replaces config bytes the device changed and bumps ConfigGeneration (virtio 1.2 §2.5.1, §4.2.2). */
  updateConfig(offset: number, bytes: Uint8Array): void {
    this.lock.with(() => {
      this.config.set(bytes, offset);
      this.words[W_CONFIG_GEN] = (this.words[W_CONFIG_GEN]! + 1) | 0;
    });
    this.raiseInterrupt(INT_CONFIG_CHANGE);
  }

  /**
   * The card starts a pass over the rings. Call before looking at the status: with the store
   * first (sequentially consistent), either the card sees a reset's Status = 0 and does nothing,
   * or the reset sees the card busy and waits for endService() (waitServiceIdle).
   */
  beginService(): void {
    Atomics.store(this.words, W_CARD_BUSY, 1);
  }

  /** The card's pass is over: nothing of this device's rings is touched until the next beginService(). */
  endService(): void {
    Atomics.store(this.words, W_CARD_BUSY, 0);
    // A notify takes a lock in V8 (most of a polling card's time, measured): only when a reset
    // waits. Both sides store, then load (sequentially consistent): the resetter either sees
    // BUSY = 0 or is seen waiting here.
    if (Atomics.load(this.words, W_RESET_WAITING) !== 0) Atomics.notify(this.words, W_CARD_BUSY);
  }

  /**
   * After a reset, waits (outside the lock) until the card is out of its pass, so that when the
   * driver's Status = 0 write completes the device no longer writes the rings the driver is about
   * to free (virtio 1.2 §2.4: the device presents 0 once the reset is done). Bounded: a card stuck
   * in I/O for longer than RESET_WAIT_MS does not hold the vCPU. Returns false when it gave up.
   */
  waitServiceIdle(timeoutMs = RESET_WAIT_MS): boolean {
    const end = performance.now() + timeoutMs;
    Atomics.add(this.words, W_RESET_WAITING, 1);
    try {
      while (Atomics.load(this.words, W_CARD_BUSY) !== 0) {
        const left = end - performance.now();
        if (left <= 0) return false;
        Atomics.wait(this.words, W_CARD_BUSY, 1, left);
      }
      return true;
    } finally {
      Atomics.sub(this.words, W_RESET_WAITING, 1);
    }
  }

  /** Device reset (driver wrote 0 to Status): everything the driver set goes back to its initial value. §2.4 */
  resetLocked(): void {
    const w = this.words;
    w[W_STATUS] = 0;
    w[W_DEV_FEAT_SEL] = 0;
    w[W_DRV_FEAT_SEL] = 0;
    w[W_QUEUE_SEL] = 0;
    w[W_DRV_FEAT_LO] = 0;
    w[W_DRV_FEAT_HI] = 0;
    w[W_FAILURE] = 0;
    Atomics.store(w, W_INT_STATUS, 0);
    w.fill(0, W_QUEUES, W_END);
    w[W_RESET_COUNT] = (w[W_RESET_COUNT]! + 1) | 0;
  }
}

/** How a guest write to QueueNotify reaches the card when no ioeventfd caught it. */
export type QueueNotifier = (queue: number) => void;

/**
 * The register file of one virtio-mmio device as a BusDevice: one per vCPU worker per device,
 * all over the same state. Control registers take 32-bit aligned accesses only (virtio 1.2
 * §4.2.2.2); other widths read as zero and are dropped. Config space takes any width.
 */
export class VirtioMmioTransport implements BusDevice {
  readonly state: TransportState;

  constructor(
    state: SharedArrayBuffer | TransportState,
    private readonly notify: QueueNotifier,
  ) {
    this.state = state instanceof TransportState ? state : new TransportState(state);
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    const s = this.state;
    if (offset >= MMIO_CONFIG) {
      const off = offset - MMIO_CONFIG;
      s.lock.with(() => {
        const size = s.words[W_CONFIG_SIZE]!;
        // Bytes past the config the device has read as zero.
        for (let i = 0; i < data.length; i++) if (off + i < size) data[i] = s.config[off + i]!;
      });
      return;
    }
    if (data.length !== 4 || offset % 4 !== 0) return;
    const v = s.lock.with(() => this.readRegister(offset));
    new DataView(data.buffer, data.byteOffset, 4).setUint32(0, v >>> 0, true);
  }

  write(offset: number, data: Uint8Array): void {
    // Config space: virtio-blk's only writable field (writeback) needs CONFIG_WCE, which we do not offer.
    if (offset >= MMIO_CONFIG) return;
    if (data.length !== 4 || offset % 4 !== 0) return;
    const v = new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true);
    if (offset === MMIO_QUEUE_NOTIFY) {
      // The value is the queue index (no VIRTIO_F_NOTIFICATION_DATA). §4.2.2 QueueNotify
      if (v < this.state.numQueues) this.notify(v);
      return;
    }
    if (offset === MMIO_INTERRUPT_ACK) {
      Atomics.and(this.state.words, W_INT_STATUS, ~v);
      return;
    }
    this.state.lock.with(() => this.writeRegister(offset, v));
    // A reset completes only once the card has left the rings (outside the lock, which the card's
    // pass may need to finish).
    if (offset === MMIO_STATUS && v === 0) this.state.waitServiceIdle();
  }

  private readRegister(offset: number): number {
    const w = this.state.words;
    const q = W_QUEUES + QUEUE_WORDS * w[W_QUEUE_SEL]!;
    const queueValid = w[W_QUEUE_SEL]! < w[W_NUM_QUEUES]!;
    switch (offset) {
      case MMIO_MAGIC_VALUE:
        return MMIO_MAGIC;
      case MMIO_VERSION:
        return MMIO_VERSION_MODERN;
      case MMIO_DEVICE_ID:
        return w[W_DEVICE_ID]!;
      case MMIO_VENDOR_ID:
        return w[W_VENDOR_ID]!;
      case MMIO_DEVICE_FEATURES: {
        const sel = w[W_DEV_FEAT_SEL]!;
        return sel === 0 ? w[W_DEV_FEAT_LO]! : sel === 1 ? w[W_DEV_FEAT_HI]! : 0;
      }
      case MMIO_QUEUE_NUM_MAX:
        // 0 for a queue that does not exist. §4.2.2 QueueNumMax
        return queueValid ? w[W_QUEUE_NUM_MAX]! : 0;
      case MMIO_QUEUE_READY:
        return queueValid ? w[q + Q_READY]! : 0;
      case MMIO_INTERRUPT_STATUS:
        return Atomics.load(w, W_INT_STATUS);
      case MMIO_STATUS:
        return w[W_STATUS]! & 0xff;
      case MMIO_CONFIG_GENERATION:
        return w[W_CONFIG_GEN]!;
      // No shared memory regions: their length reads as all ones. §4.2.2 SHMLenLow/High
      case MMIO_SHM_LEN_LOW:
      case MMIO_SHM_LEN_HIGH:
      case MMIO_SHM_BASE_LOW:
      case MMIO_SHM_BASE_HIGH:
        return 0xffffffff;
      default:
        // Write-only and reserved registers (and the legacy ones, §4.2.4) read as zero.
        return 0;
    }
  }

  private writeRegister(offset: number, v: number): void {
    const s = this.state;
    const w = s.words;
    const status = w[W_STATUS]!;
    // Queue registers may change between FEATURES_OK and DRIVER_OK only. §3.1.1 step 7, §4.2.3.2
    const queueSetup = (status & STATUS_FEATURES_OK) !== 0 && (status & STATUS_DRIVER_OK) === 0 && w[W_QUEUE_SEL]! < w[W_NUM_QUEUES]!;
    const q = W_QUEUES + QUEUE_WORDS * w[W_QUEUE_SEL]!;
    const setQueueWord = (word: number): void => {
      if (queueSetup && w[q + Q_READY] === 0) w[q + word] = v | 0;
    };
    switch (offset) {
      case MMIO_DEVICE_FEATURES_SEL:
        w[W_DEV_FEAT_SEL] = v | 0;
        return;
      case MMIO_DRIVER_FEATURES_SEL:
        w[W_DRV_FEAT_SEL] = v | 0;
        return;
      case MMIO_DRIVER_FEATURES: {
        // Only while negotiating: after DRIVER, before FEATURES_OK. §3.1.1 steps 3–5
        if ((status & STATUS_DRIVER) === 0 || (status & STATUS_FEATURES_OK) !== 0) return;
        const sel = w[W_DRV_FEAT_SEL]!;
        if (sel === 0) w[W_DRV_FEAT_LO] = v | 0;
        else if (sel === 1) w[W_DRV_FEAT_HI] = v | 0;
        return;
      }
      case MMIO_QUEUE_SEL:
        // Kept even when out of range: QueueNumMax then reads 0, telling the driver there is no such queue.
        w[W_QUEUE_SEL] = Math.min(v, MAX_QUEUES) | 0;
        return;
      case MMIO_QUEUE_NUM:
        // A split queue's size is a power of two no larger than QueueNumMax. §2.7, §4.2.2 QueueNum
        if (isValidQueueSize(v) && v <= w[W_QUEUE_NUM_MAX]!) setQueueWord(Q_NUM);
        return;
      case MMIO_QUEUE_DESC_LOW:
        return setQueueWord(Q_DESC_LO);
      case MMIO_QUEUE_DESC_HIGH:
        return setQueueWord(Q_DESC_HI);
      case MMIO_QUEUE_DRIVER_LOW:
        return setQueueWord(Q_DRV_LO);
      case MMIO_QUEUE_DRIVER_HIGH:
        return setQueueWord(Q_DRV_HI);
      case MMIO_QUEUE_DEVICE_LOW:
        return setQueueWord(Q_DEV_LO);
      case MMIO_QUEUE_DEVICE_HIGH:
        return setQueueWord(Q_DEV_HI);
      case MMIO_QUEUE_READY:
        if (!queueSetup) return;
        if (v === 1 && w[q + Q_NUM]! !== 0) w[q + Q_READY] = 1;
        else if (v === 0) w[q + Q_READY] = 0;
        return;
      case MMIO_STATUS:
        this.writeStatus(v & 0xff);
        return;
      default:
        // Read-only, reserved and legacy registers (GuestPageSize, QueueAlign, QueuePFN: §4.2.4): dropped.
        return;
    }
  }

  /** The device status state machine. virtio 1.2 §2.1, §3.1.1, §4.2.3.1. */
  private writeStatus(v: number): void {
    const s = this.state;
    const w = s.words;
    w[W_STATUS_WRITES] = (w[W_STATUS_WRITES]! + 1) | 0;
    if (v === 0) {
      s.resetLocked();
      return;
    }
    const old = w[W_STATUS]!;
    // DEVICE_NEEDS_RESET is the device's to set; the driver cannot set or clear it.
    const needsReset = old & STATUS_DEVICE_NEEDS_RESET;
    const want = v & ~STATUS_DEVICE_NEEDS_RESET;
    const cur = old & ~STATUS_DEVICE_NEEDS_RESET;
    if (w[W_DEVICE_ID] === DEVICE_ID_NONE) return;
    // The driver never clears a bit except by reset (§2.1.1): such a write is ignored.
    if ((want & cur) !== cur) return;
    const added = want & ~cur;
    if ((added & STATUS_FAILED) !== 0) {
      w[W_STATUS] = old | STATUS_FAILED;
      return;
    }
    let next = cur;
    const ordered: Array<[number, number]> = [
      [STATUS_ACKNOWLEDGE, 0],
      [STATUS_DRIVER, STATUS_ACKNOWLEDGE],
      [STATUS_FEATURES_OK, STATUS_ACKNOWLEDGE | STATUS_DRIVER],
      [STATUS_DRIVER_OK, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK],
    ];
    for (const [flag, needs] of ordered) {
      if ((added & flag) === 0) continue;
      if ((next & needs) !== needs) return; // out of order (§3.1.1): ignored
      if (flag === STATUS_FEATURES_OK && !this.featuresAcceptable()) {
        // FEATURES_OK stays clear; the driver reads Status back and gives up. §3.1.1 step 6, §2.2.2
        w[W_STATUS] = next | needsReset;
        return;
      }
      next |= flag;
    }
    w[W_STATUS] = next | needsReset;
  }

  /** The driver's features are a subset of the device's and include VERSION_1 (modern only, §6.1). */
  private featuresAcceptable(): boolean {
    const drv = this.state.driverFeatures;
    return (drv & ~this.state.deviceFeatures) === 0n && (drv & bit(F_VERSION_1)) !== 0n;
  }
}
