// Split virtqueue, the device side. virtio 1.2 §2.7.
// Every index, address and length comes from the guest and is checked here before use: guest
// memory is reached only through GuestMemory (bounds-checked), descriptor walks are bounded by
// the table size, and a bad chain is a VirtqueueError, never any other exception.
// Two kinds of error: a bad chain (`fatal: false`) is answered for that request alone; a broken
// ring (misplaced rings, a head index past the table, an avail index that jumped too far) cannot
// be answered at all and marks the device DEVICE_NEEDS_RESET (`fatal: true`, virtio 1.2 §2.1.2).

import { GuestMemoryError, type GuestMemory } from "../../memory/guest-memory.js";
import {
  AVAIL_ALIGN,
  AVAIL_F_NO_INTERRUPT,
  USED_F_NO_NOTIFY,
  CHAIN_BYTES_MAX,
  DESC_ALIGN,
  DESC_F_INDIRECT,
  DESC_F_NEXT,
  DESC_F_WRITE,
  DESC_SIZE,
  QUEUE_SIZE_MAX,
  USED_ALIGN,
  USED_ELEM_SIZE,
} from "./spec.js";

export type VirtqueueErrorKind =
  | "queue-size" // size is not a power of two in [1, 32768]
  | "ring-address" // a ring is misaligned or not in guest RAM
  | "avail-index" // the driver's avail index ran more than a queue ahead
  | "head-index" // an avail ring entry names a descriptor past the table
  | "desc-index" // a `next` names a descriptor past the table
  | "desc-address" // a buffer is not entirely guest RAM
  | "chain-loop" // a chain revisits a descriptor (or is longer than its table)
  | "chain-bytes" // a chain adds up to more than 2^32 bytes
  | "indirect-not-negotiated"
  | "indirect-nested" // an indirect table holds an indirect descriptor
  | "indirect-with-next" // INDIRECT and NEXT together
  | "indirect-size" // table length zero, not a multiple of 16, or over 32768 entries
  | "write-before-read"; // a device-readable buffer after a device-writable one

export class VirtqueueError extends Error {
  constructor(
    readonly kind: VirtqueueErrorKind,
    message: string,
    /** True when the ring itself is unusable: the device must be marked NEEDS_RESET. */
    readonly fatal: boolean,
  ) {
    super(message);
    this.name = "VirtqueueError";
  }
}

export interface QueueLayout {
  /** Queue Size (QueueNum): power of two, at most 32768. */
  size: number;
  /** Guest-physical addresses of the descriptor table, driver (avail) and device (used) areas. */
  desc: number;
  avail: number;
  used: number;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
}

/** A device's position in the rings: plain data, kept in the transport state between kicks. */
export interface QueuePosition {
  /** Next avail ring slot to consume (free-running u16). */
  lastAvail: number;
  /** Next used ring slot to fill (free-running u16). */
  nextUsed: number;
}

/** One guest buffer, checked to be entirely guest RAM. */
export interface Segment {
  addr: number;
  len: number;
}

export interface DescriptorChain {
  head: number;
  /** Device-readable buffers, in order. */
  readable: Segment[];
  /** Device-writable buffers, in order (all after the readable ones). */
  writable: Segment[];
  readableBytes: number;
  writableBytes: number;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/**
 * An empty chain for a device to keep and hand to peekChain/parseChain again and again: each
 * parse refills it in place (its arrays and segment objects reused), so a request allocates
 * nothing. What it holds is valid until the next parse into it.
 */
export function newChain(): DescriptorChain {
  return { head: 0, readable: [], writable: [], readableBytes: 0, writableBytes: 0 };
}

/** Puts segment `i` of `segs` (reusing the object there, else appending one). */
function setSegment(segs: Segment[], i: number, addr: number, len: number): void {
  if (i < segs.length) {
    const s = segs[i]!;
    s.addr = addr;
    s.len = len;
  } else segs.push({ addr, len });
}

/**
 * vring_need_event (virtio 1.2 §2.7.7.1 / §2.7.10): with EVENT_IDX, notify the other side when
 * its event index lies in (old, new]. All arithmetic is u16.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Bytes of each area for a queue of `size`. virtio 1.2 §2.7 (table "Virtqueue Part Sizes"). */
export function queueAreaSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: DESC_SIZE * size, avail: 6 + 2 * size, used: 6 + USED_ELEM_SIZE * size };
}

export function isValidQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= QUEUE_SIZE_MAX && (n & (n - 1)) === 0;
}

interface RawDesc {
  /** -1 when the guest's 64-bit address is 2^53 or more. */
  addr: number;
  len: number;
  flags: number;
  next: number;
}

export class SplitQueue {
  readonly size: number;
  private readonly availRing: number;
  private readonly usedRing: number;
  private readonly usedEventAddr: number;
  private readonly availEventAddr: number;

  /** Throws a fatal VirtqueueError when the layout cannot be used. */
  constructor(
    private readonly mem: GuestMemory,
    readonly layout: QueueLayout,
    readonly pos: QueuePosition,
    /**
     * True once the driver has reset the device (the card passes a reset-count check): from then
     * on the queue reports nothing pending and writes nothing into the rings, so a pass stops at
     * the next request boundary instead of working through rings the driver is about to free.
     */
    private readonly abandoned: () => boolean = () => false,
  ) {
    if (!isValidQueueSize(layout.size)) {
      throw new VirtqueueError("queue-size", `queue size ${layout.size} is not a power of two in [1, ${QUEUE_SIZE_MAX}]`, true);
    }
    this.size = layout.size;
    const sizes = queueAreaSizes(layout.size);
    const check = (what: string, addr: number, len: number, align: number): void => {
      if (!Number.isSafeInteger(addr) || addr % align !== 0 || !mem.contains(addr, len)) {
        throw new VirtqueueError(
          "ring-address",
          `${what} at ${hex(addr)}+${hex(len)} is not ${align}-byte aligned guest RAM`,
          true,
        );
      }
    };
    check("descriptor table", layout.desc, sizes.desc, DESC_ALIGN);
    check("driver area", layout.avail, sizes.avail, AVAIL_ALIGN);
    check("device area", layout.used, sizes.used, USED_ALIGN);
    this.availRing = layout.avail + 4;
    this.usedRing = layout.used + 4;
    this.usedEventAddr = layout.avail + 4 + 2 * layout.size; // avail.used_event §2.7.6
    this.availEventAddr = layout.used + 4 + USED_ELEM_SIZE * layout.size; // used.avail_event §2.7.8
  }

  /** The driver's avail.idx. */
  availIdx(): number {
    return this.mem.readU16Atomic(this.layout.avail + 2);
  }

  /**
   * avail.idx as pending() last read it (-1: not yet). The driver writes a ring entry before the
   * index that covers it (virtio 1.2 §2.7.13), so every entry up to an index once read stays
   * published: pending() reads the index again only once the device has caught up with it. At depth
   * that is one read of the driver's cache line per batch instead of one per request (that line is
   * the one the driver writes on every request: each read is a miss).
   */
  private seenAvail = -1;

  /**
   * Chains made available and not yet taken, counted up to the index last read while that shows
   * at least `want` (the driver may have made more available since); below that, avail.idx is
   * read afresh, so an answer under `want` (0 included) is always today's. Fatal when the driver
   * ran more than a queue ahead.
   */
  pending(want = 1): number {
    if (this.abandoned()) return 0;
    if (this.seenAvail >= 0) {
      const n = (this.seenAvail - this.pos.lastAvail) & 0xffff;
      if (n >= want && n <= this.size) return n;
    }
    const idx = this.availIdx();
    const n = (idx - this.pos.lastAvail) & 0xffff;
    if (n > this.size) {
      throw new VirtqueueError(
        "avail-index",
        `avail index ${idx} is ${n} entries past the device's ${this.pos.lastAvail}, more than the queue size ${this.size}`,
        true,
      );
    }
    this.seenAvail = idx;
    return n;
  }

  /** The head descriptor index in the next avail slot (without consuming it). */
  peekHead(): number {
    const head = this.mem.readU16(this.availRing + 2 * (this.pos.lastAvail % this.size));
    if (head >= this.size) {
      throw new VirtqueueError("head-index", `avail ring entry ${this.pos.lastAvail} names descriptor ${head}, past the table of ${this.size}`, true);
    }
    return head;
  }

  /** Consumes the avail slot peeked last. */
  advance(): void {
    this.pos.lastAvail = (this.pos.lastAvail + 1) & 0xffff;
  }

  /**
   * Walks and checks the chain starting at `head` (virtio 1.2 §2.7.5, §2.7.5.3), into `into` when
   * given (newChain: refilled in place), else into a new chain.
   */
  parseChain(head: number, into?: DescriptorChain): DescriptorChain {
    const chain = into ?? newChain();
    chain.head = head;
    chain.readableBytes = 0;
    chain.writableBytes = 0;
    let readables = 0;
    let writables = 0;
    let table = this.layout.desc;
    let tableLen = this.size;
    let index = head;
    let indirect = false;
    let visited = 0;
    for (;;) {
      if (index >= tableLen) {
        throw new VirtqueueError("desc-index", `descriptor ${index} is past the ${indirect ? "indirect " : ""}table of ${tableLen}`, false);
      }
      // A chain visits each descriptor of its table at most once; a longer walk is a loop. §2.7.5.3.1, §2.7.4.1
      if (++visited > tableLen) {
        throw new VirtqueueError("chain-loop", `chain from head ${head} is longer than its table of ${tableLen}: a loop`, false);
      }
      const at = table + DESC_SIZE * index;
      const d = this.readDesc(at);
      if ((d.flags & DESC_F_INDIRECT) !== 0) {
        if (!this.layout.indirect) {
          throw new VirtqueueError("indirect-not-negotiated", `descriptor ${index} is indirect but VIRTIO_RING_F_INDIRECT_DESC was not negotiated`, false);
        }
        if (indirect) throw new VirtqueueError("indirect-nested", `indirect table holds an indirect descriptor (${index})`, false); // §2.7.5.3.1
        if ((d.flags & DESC_F_NEXT) !== 0) {
          throw new VirtqueueError("indirect-with-next", `descriptor ${index} sets both INDIRECT and NEXT`, false); // §2.7.5.3.1
        }
        if (d.len === 0 || d.len % DESC_SIZE !== 0 || d.len / DESC_SIZE > QUEUE_SIZE_MAX) {
          throw new VirtqueueError("indirect-size", `indirect table length ${d.len} is not a non-zero multiple of ${DESC_SIZE} up to ${QUEUE_SIZE_MAX} entries`, false);
        }
        const addr = this.checkedAddr(d.addr, d.len, index, at);
        // The write flag of the descriptor naming a table is ignored. §2.7.5.3.2
        table = addr;
        tableLen = d.len / DESC_SIZE;
        index = 0;
        indirect = true;
        visited = 0;
        continue;
      }
      const addr = this.checkedAddr(d.addr, d.len, index, at);
      if ((d.flags & DESC_F_WRITE) !== 0) {
        setSegment(chain.writable, writables++, addr, d.len);
        chain.writableBytes += d.len;
      } else {
        if (writables > 0) {
          throw new VirtqueueError("write-before-read", `descriptor ${index} is device-readable after a device-writable one`, false); // §2.7.4.2
        }
        setSegment(chain.readable, readables++, addr, d.len);
        chain.readableBytes += d.len;
      }
      if (chain.readableBytes + chain.writableBytes > CHAIN_BYTES_MAX) {
        throw new VirtqueueError("chain-bytes", `chain from head ${head} is over 2^32 bytes`, false); // §2.7.4.1
      }
      if ((d.flags & DESC_F_NEXT) === 0) {
        // A reused chain drops what a longer chain before it left.
        if (chain.readable.length !== readables) chain.readable.length = readables;
        if (chain.writable.length !== writables) chain.writable.length = writables;
        return chain;
      }
      index = d.next;
    }
  }

  /**
   * The next available chain, parsed but not consumed (a throttled request stays in the ring).
   * A malformed chain (a non-fatal error) is consumed and given back unanswered, used length 0 —
   * as Firecracker does — and reported to `onMalformed`; the next one is tried. Fatal errors
   * propagate. Undefined when nothing is pending. `into`: as parseChain's.
   */
  peekChain(onMalformed: (e: VirtqueueError) => void, into?: DescriptorChain): DescriptorChain | undefined {
    while (this.pending() > 0) {
      const head = this.peekHead();
      try {
        return this.parseChain(head, into);
      } catch (e) {
        if (!(e instanceof VirtqueueError) || e.fatal) throw e;
        this.advance();
        this.pushUsed(head, 0);
        onMalformed(e);
      }
    }
    return undefined;
  }

  /** Takes the next chain: peek, advance, parse. A non-fatal error has consumed the slot (answer it with `head`). */
  pop(): { head: number; chain?: DescriptorChain; error?: VirtqueueError } {
    const head = this.peekHead();
    this.advance();
    try {
      return { head, chain: this.parseChain(head) };
    } catch (e) {
      if (e instanceof VirtqueueError && !e.fatal) return { head, error: e };
      throw e;
    }
  }

  /** Publishes a used element (virtio 1.2 §2.7.8): the element first, then used.idx. */
  pushUsed(head: number, len: number): void {
    if (this.abandoned()) return;
    const slot = this.usedRing + USED_ELEM_SIZE * (this.pos.nextUsed % this.size);
    this.mem.writeU32(slot, head);
    this.mem.writeU32(slot + 4, len);
    this.pos.nextUsed = (this.pos.nextUsed + 1) & 0xffff;
    // Seen whole, after the element (x86 keeps stores in order), at once: a driver polling the
    // ring sees the request done now. The full barrier before the used_event / avail.flags load
    // comes once per batch, in needsInterrupt.
    this.mem.writeU16NoTear(this.layout.used + 2, this.pos.nextUsed);
  }

  /**
   * Whether the driver wants an interrupt for the used entries published since `oldUsed`.
   * EVENT_IDX: vring_need_event(used_event, new, old) (§2.7.10); otherwise avail.flags NO_INTERRUPT (§2.7.7).
   */
  needsInterrupt(oldUsed: number): boolean {
    if (this.abandoned()) return false;
    if (oldUsed === this.pos.nextUsed) return false;
    // used.idx again, atomically: a full barrier, so the load below is not performed before the
    // index is visible (a driver that set used_event meanwhile either is seen here or sees the
    // index). virtio 1.2 §2.7.10
    this.mem.writeU16Atomic(this.layout.used + 2, this.pos.nextUsed);
    if (this.layout.eventIdx) return vringNeedEvent(this.mem.readU16Atomic(this.usedEventAddr), this.pos.nextUsed, oldUsed);
    return (this.mem.readU16Atomic(this.layout.avail) & AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * While true, the device is polling this ring and wants no kicks ({@link setKicks}):
   * publishAvailEvent leaves used.avail_event where setKicks put it. The card worker sets it.
   */
  holdKicks = false;

  /** With EVENT_IDX, asks for a kick when the driver makes the next buffer available (§2.7.10). */
  publishAvailEvent(): void {
    if (this.abandoned() || this.holdKicks) return;
    // Atomic, so the store is a full barrier before the caller's pending() re-read of avail.idx:
    // otherwise a buffer made available in between could be missed with no kick coming.
    if (this.layout.eventIdx) this.mem.writeU16Atomic(this.availEventAddr, this.pos.lastAvail);
  }

  /**
   * Notification suppression from the device side (virtio 1.2 §2.7.10): `false` asks the driver
   * not to kick — used.flags VIRTQ_USED_F_NO_NOTIFY (§2.7.8), or with EVENT_IDX avail_event set
   * just behind the driver (and kept there: holdKicks); `true` asks again for a kick at the next buffer (flags 0, or
   * avail_event = lastAvail). The store is atomic, a full barrier: a caller that turns kicks back
   * on and then finds avail.idx unchanged knows the driver's next buffer will kick.
   */
  setKicks(on: boolean): void {
    this.holdKicks = !on;
    if (this.abandoned()) return;
    if (this.layout.eventIdx) {
      // The driver kicks when its idx moves past avail_event (vring_need_event): lastAvail asks
      // for the next buffer's kick; lastAvail - 1, just behind where the driver is, for none until
      // it has gone all the way round the 16-bit index.
      this.mem.writeU16Atomic(this.availEventAddr, on ? this.pos.lastAvail : (this.pos.lastAvail - 1) & 0xffff);
    } else {
      this.mem.writeU16Atomic(this.layout.used, on ? 0 : USED_F_NO_NOTIFY);
    }
  }

  /**
   * One descriptor (virtio 1.2 §2.7.5). The address is a Number: above 2^53 it cannot be guest
   * RAM, and -1 says so (checkedAddr refuses it) without a BigInt per descriptor.
   */
  private readDesc(gpa: number): RawDesc {
    try {
      // One check for the whole 16 bytes, then the fields through the region's view.
      const r = this.mem.regionAt(gpa, DESC_SIZE);
      const v = r.view;
      const o = gpa - r.gpa;
      const lo = v.getUint32(o, true);
      const hi = v.getUint32(o + 4, true);
      return {
        addr: hi < 0x200000 ? hi * 0x1_0000_0000 + lo : -1, // 2^21 * 2^32 = 2^53
        len: v.getUint32(o + 8, true),
        flags: v.getUint16(o + 12, true),
        next: v.getUint16(o + 14, true),
      };
    } catch (e) {
      if (e instanceof GuestMemoryError) {
        throw new VirtqueueError("desc-address", `descriptor at ${hex(gpa)} is not guest RAM`, false);
      }
      throw e;
    }
  }

  private checkedAddr(addr: number, len: number, index: number, gpa: number): number {
    if (addr < 0 || !this.mem.contains(addr, len)) {
      const shown = addr < 0 ? hex(this.mem.readU64(gpa)) : hex(addr);
      throw new VirtqueueError("desc-address", `descriptor ${index} buffer ${shown}+${hex(len)} is not guest RAM`, false);
    }
    return addr;
  }
}
