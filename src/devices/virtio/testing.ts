// The driver side of a split virtqueue and of the virtio-mmio init sequence, for tests: lays
// out rings in a GuestMemory the way a guest driver would (virtio 1.2 §2.7.13, §3.1.1).

import type { GuestMemory } from "../../memory/guest-memory.js";
import type { BusDevice } from "../bus.js";
import { queueAreaSizes, type QueueLayout } from "./queue.js";
import {
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  DESC_SIZE,
  MMIO_DRIVER_FEATURES,
  MMIO_DRIVER_FEATURES_SEL,
  MMIO_DEVICE_FEATURES,
  MMIO_DEVICE_FEATURES_SEL,
  MMIO_QUEUE_DESC_HIGH,
  MMIO_QUEUE_DESC_LOW,
  MMIO_QUEUE_DEVICE_HIGH,
  MMIO_QUEUE_DEVICE_LOW,
  MMIO_QUEUE_DRIVER_HIGH,
  MMIO_QUEUE_DRIVER_LOW,
  MMIO_QUEUE_NUM,
  MMIO_QUEUE_READY,
  MMIO_QUEUE_SEL,
  MMIO_STATUS,
  STATUS_ACKNOWLEDGE,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  USED_ELEM_SIZE,
} from "./spec.js";

export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

/** Rings for a queue of `size` placed at `base` (each part aligned as §2.7 requires). */
export function layoutAt(base: number, size: number, extra: Partial<QueueLayout> = {}): QueueLayout {
  const s = queueAreaSizes(size);
  const desc = base;
  const avail = desc + s.desc;
  const used = (avail + s.avail + 3) & ~3;
  return { size, desc, avail, used, eventIdx: false, indirect: false, ...extra };
}

export class TestDriver {
  private nextFree = 0;
  availIdx = 0;
  private seenUsed = 0;

  constructor(
    readonly mem: GuestMemory,
    readonly layout: QueueLayout,
  ) {}

  /** Writes a chain into consecutive free descriptors; returns its head. */
  addChain(bufs: Buf[]): number {
    const head = this.nextFree;
    bufs.forEach((b, i) => {
      const idx = (head + i) % this.layout.size;
      const at = this.layout.desc + DESC_SIZE * idx;
      const last = i === bufs.length - 1;
      this.writeDesc(at, b.addr, b.len, (b.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT), (idx + 1) % this.layout.size);
    });
    this.nextFree = (head + bufs.length) % this.layout.size;
    return head;
  }

  /** Writes `bufs` as an indirect table at `table` and one INDIRECT descriptor naming it; returns its index. */
  addIndirect(table: number, bufs: Buf[]): number {
    bufs.forEach((b, i) => {
      const last = i === bufs.length - 1;
      this.writeDesc(table + DESC_SIZE * i, b.addr, b.len, (b.write ? DESC_F_WRITE : 0) | (last ? 0 : DESC_F_NEXT), i + 1);
    });
    const head = this.nextFree;
    this.writeDesc(this.layout.desc + DESC_SIZE * head, table, DESC_SIZE * bufs.length, DESC_F_INDIRECT, 0);
    this.nextFree = (head + 1) % this.layout.size;
    return head;
  }

  writeDesc(at: number, addr: number | bigint, len: number, flags: number, next: number): void {
    this.mem.writeU64(at, BigInt(addr));
    this.mem.writeU32(at + 8, len);
    this.mem.writeU16(at + 12, flags);
    this.mem.writeU16(at + 14, next);
  }

  /** Puts `head` in the avail ring and bumps avail.idx. */
  publish(head: number): void {
    this.mem.writeU16(this.layout.avail + 4 + 2 * (this.availIdx % this.layout.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.mem.writeU16(this.layout.avail + 2, this.availIdx);
  }

  usedIdx(): number {
    return this.mem.readU16(this.layout.used + 2);
  }

  /** Used elements published since the last call. */
  takeUsed(): Array<{ id: number; len: number }> {
    const out = [];
    const idx = this.usedIdx();
    while (this.seenUsed !== idx) {
      const at = this.layout.used + 4 + USED_ELEM_SIZE * (this.seenUsed % this.layout.size);
      out.push({ id: this.mem.readU32(at), len: this.mem.readU32(at + 4) });
      this.seenUsed = (this.seenUsed + 1) & 0xffff;
    }
    return out;
  }

  /** avail.used_event (EVENT_IDX). */
  setUsedEvent(v: number): void {
    this.mem.writeU16(this.layout.avail + 4 + 2 * this.layout.size, v);
  }
  availEvent(): number {
    return this.mem.readU16(this.layout.used + 4 + USED_ELEM_SIZE * this.layout.size);
  }
}

export function r32(dev: BusDevice, off: number): number {
  const b = new Uint8Array(4);
  dev.read(off, b);
  return new DataView(b.buffer).getUint32(0, true);
}

export function w32(dev: BusDevice, off: number, v: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  dev.write(off, b);
}

/** The driver's init sequence (virtio 1.2 §3.1.1) for queue 0; returns the final Status. */
export function initDevice(dev: BusDevice, layouts: QueueLayout | readonly QueueLayout[], accept: (offered: bigint) => bigint = (f) => f): number {
  w32(dev, MMIO_STATUS, 0);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  w32(dev, MMIO_DEVICE_FEATURES_SEL, 0);
  const lo = r32(dev, MMIO_DEVICE_FEATURES);
  w32(dev, MMIO_DEVICE_FEATURES_SEL, 1);
  const hi = r32(dev, MMIO_DEVICE_FEATURES);
  const want = accept((BigInt(hi) << 32n) | BigInt(lo));
  w32(dev, MMIO_DRIVER_FEATURES_SEL, 0);
  w32(dev, MMIO_DRIVER_FEATURES, Number(want & 0xffffffffn));
  w32(dev, MMIO_DRIVER_FEATURES_SEL, 1);
  w32(dev, MMIO_DRIVER_FEATURES, Number(want >> 32n));
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  if ((r32(dev, MMIO_STATUS) & STATUS_FEATURES_OK) === 0) return r32(dev, MMIO_STATUS);
  // Queue i gets layouts[i] (§4.2.3.2: select, size, the three areas, ready).
  (Array.isArray(layouts) ? layouts : [layouts]).forEach((layout: QueueLayout, q: number) => {
    w32(dev, MMIO_QUEUE_SEL, q);
    w32(dev, MMIO_QUEUE_NUM, layout.size);
    w32(dev, MMIO_QUEUE_DESC_LOW, layout.desc);
    w32(dev, MMIO_QUEUE_DESC_HIGH, Math.floor(layout.desc / 2 ** 32));
    w32(dev, MMIO_QUEUE_DRIVER_LOW, layout.avail);
    w32(dev, MMIO_QUEUE_DRIVER_HIGH, Math.floor(layout.avail / 2 ** 32));
    w32(dev, MMIO_QUEUE_DEVICE_LOW, layout.used);
    w32(dev, MMIO_QUEUE_DEVICE_HIGH, Math.floor(layout.used / 2 ** 32));
    w32(dev, MMIO_QUEUE_READY, 1);
  });
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
  return r32(dev, MMIO_STATUS);
}
