// Test helpers for cards: memfd guest memory, plain eventfds standing in for KVM's ioeventfd (the
// test writes it, as a guest kick would) and irqfd (the test reads it, as KVM would inject).
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import * as sys from "../sys/index.js";
import { createMemfdGuestMemory } from "../memory/create.js";
import { TestDriver, initDevice, layoutAt } from "../devices/virtio/testing.js";
import { createTransportState } from "../devices/virtio/mmio.js";
import { F_RING_EVENT_IDX, bit } from "../devices/virtio/spec.js";
import { createVirtioMmioDevice } from "./index.js";
import { startCard, type CardBase, type CardHandle, type CardOptions, type CardKindOptions } from "./card.js";

const MiB = 1 << 20;

/** A card on test wiring: memfd RAM, the notify and irq eventfds, the transport and its register file. */
export interface WiredCard {
  card: CardHandle;
  guest: ReturnType<typeof createMemfdGuestMemory>;
  /** The virtio-mmio register file a vCPU would reach (a QueueNotify write signals notifyFd). */
  dev: ReturnType<typeof createVirtioMmioDevice>;
  notifyFd: number;
  /** Non-blocking, for the test to read as KVM's irqfd would. */
  irqFd: number;
  transportState: SharedArrayBuffer;
}

/**
 * Wires a card as the VMM does, without KVM: `ramBytes` of memfd guest RAM at 0, a notify eventfd
 * (the test writes it as a guest kick would), a non-blocking irq eventfd and fresh transport
 * state; `start` starts the card on that wiring. After the test the card is stopped first, then
 * the descriptors and RAM are released (cleanups the caller registers later run after that).
 */
export async function startWiredCard(t: TestContext, ramBytes: number, start: (wiring: CardBase) => Promise<CardHandle>): Promise<WiredCard> {
  const guest = createMemfdGuestMemory([[0, ramBytes]]);
  const notifyFd = sys.eventfd(0, sys.EFD_CLOEXEC);
  const irqFd = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  const transportState = createTransportState();
  const release = (): void => {
    sys.close(notifyFd);
    sys.close(irqFd);
    guest.close();
  };
  let card: CardHandle;
  try {
    card = await start({
      memfd: guest.fd,
      regions: guest.memory.regions.map((r) => ({ gpa: r.gpa, size: r.size, fdOffset: r.fdOffset })),
      transportState,
      notifyFd,
      irqFd,
    });
  } catch (e) {
    release();
    throw e;
  }
  t.after(async () => {
    await card.stop();
    release();
  });
  return { card, guest, dev: createVirtioMmioDevice(transportState, notifyFd), notifyFd, irqFd, transportState };
}

/** Reads the (non-blocking) irq eventfd until it fires or `ms` pass; returns the counter. */
export async function waitIrq(fd: number, ms = 5000): Promise<number> {
  const buf = new Uint8Array(8);
  const until = Date.now() + ms;
  for (;;) {
    try {
      sys.read(fd, buf);
      return Number(Buffer.from(buf).readBigUInt64LE(0));
    } catch (e) {
      if ((e as sys.SysError).code !== "EAGAIN") throw e;
    }
    if (Date.now() > until) throw new Error(`no interrupt within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Polls the used ring until `n` more entries arrived (the irqfd may hold older signals). */
export async function waitUsed(drv: TestDriver, n: number, ms = 5000): Promise<Array<{ id: number; len: number }>> {
  const out: Array<{ id: number; len: number }> = [];
  const until = Date.now() + ms;
  while (out.length < n) {
    out.push(...drv.takeUsed());
    if (out.length >= n) break;
    if (Date.now() > until) throw new Error(`only ${out.length} of ${n} used entries within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return out;
}

export interface CardRig {
  card: CardHandle;
  drv: TestDriver;
  dev: ReturnType<typeof createVirtioMmioDevice>;
  mem: ReturnType<typeof createMemfdGuestMemory>["memory"];
  notifyFd: number;
  irqFd: number;
  transportState: SharedArrayBuffer;
}

type KindOptions = Extract<CardKindOptions, { kind: "rng" | "nsm" }>;

/** Starts a card of `kind` over 2 MiB of memfd guest RAM and brings queue 0 up (driver init, §3.1.1). */
export async function cardRig(t: TestContext, k: KindOptions, queueSize = 64): Promise<CardRig> {
  const { card, guest, dev, notifyFd, irqFd, transportState } = await startWiredCard(t, 2 * MiB, (wiring) => startCard({ ...wiring, ...k } as CardOptions));
  const layout = layoutAt(0x1000, queueSize);
  // Without EVENT_IDX, so every completion batch interrupts (the blk card test covers EVENT_IDX).
  assert.equal(initDevice(dev, layout, (f) => f & ~bit(F_RING_EVENT_IDX)) & 0xff, 0xf, "device accepted the driver");
  return { card, drv: new TestDriver(guest.memory, layout), dev, mem: guest.memory, notifyFd, irqFd, transportState };
}
