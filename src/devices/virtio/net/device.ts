// virtio-net device model (virtio 1.2 §5.1): one queue pair, receiveq1 (0) and transmitq1 (1), no
// control queue. Pure with respect to the world: frames leave through an injected FrameSink (the
// card: one writev to a TAP), arrive as byte arrays the card read from the TAP, throttling is a
// Throttle and counting a NetStats.
//
// Every frame on either queue starts with the 12-byte struct virtio_net_hdr (§5.1.6). A TAP opened
// with IFF_VNET_HDR and a 12-byte header (src/sys/tun.ts) uses the same layout, so frames pass
// between the rings and the TAP header and all; the model only checks the header against what
// was negotiated, so the host never gets an offload the guest did not ask for and the guest never
// gets one it did not accept.
//
// TX (§5.1.6.2): a chain of device-readable buffers only, header + packet, at most
// 12 + NET_FRAME_MAX bytes. It goes to the sink whole, as views into guest memory, and is used with
// length 0 (the device writes nothing into a TX chain). A bad chain is used with length 0, counted,
// and nothing of it reaches the sink.
// RX (§5.1.6.3, §5.1.6.4): chains of device-writable buffers only. Without MRG_RXBUF one chain
// holds the whole frame; with it the frame is spread over as many chains as it needs, every one
// but the last filled, and num_buffers in the first header says how many.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO } from "../../../sys/tun.js";
import type { Throttle } from "../blk/device.js";
import type { VirtioDeviceInfo } from "../mmio.js";
import { VirtqueueError, type DescriptorChain, type Segment, type SplitQueue } from "../queue.js";
import { F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, USED_ELEM_SIZE, bit } from "../spec.js";
import { parseMac } from "./mac.js";
import {
  DEVICE_ID_NET,
  MAC_BYTES,
  NET_CFG_MAC,
  NET_CONFIG_SIZE,
  NET_FRAME_MAX,
  NET_F_CSUM,
  NET_F_GUEST_CSUM,
  NET_F_GUEST_ECN,
  NET_F_GUEST_TSO4,
  NET_F_GUEST_TSO6,
  NET_F_GUEST_UFO,
  NET_F_HOST_ECN,
  NET_F_HOST_TSO4,
  NET_F_HOST_TSO6,
  NET_F_HOST_UFO,
  NET_F_MAC,
  NET_F_MRG_RXBUF,
  NET_HDR_FLAGS,
  NET_HDR_F_DATA_VALID,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_ECN,
  NET_HDR_GSO_NONE,
  NET_HDR_GSO_TCPV4,
  NET_HDR_GSO_TCPV6,
  NET_HDR_GSO_TYPE,
  NET_HDR_GSO_UDP,
  NET_HDR_NUM_BUFFERS,
  NET_HDR_SIZE,
  NET_NUM_QUEUES,
} from "./spec.js";

export const NET_QUEUE_SIZE_DEFAULT = 256;
/**
 * TX chains one processTx pass takes at most before it hands back ("more"): a guest that keeps
 * the transmit ring full cannot keep the card from its receive side.
 */
export const NET_TX_FRAMES_PER_PASS_DEFAULT = 256;

export interface NetOptions {
  /** The card's address: 6 bytes or "06:00:ac:10:00:02" (unicast; see parseMac). */
  mac: Uint8Array | string;
  /** QueueNumMax offered for both queues; default NET_QUEUE_SIZE_DEFAULT. */
  queueSize?: number;
}

/** Features offered (virtio 1.2 §5.1.3, ring features §6); each offload needs its base (§5.1.3.1). */
export function netFeatures(): bigint {
  return (
    bit(F_VERSION_1) |
    bit(F_RING_INDIRECT_DESC) |
    bit(F_RING_EVENT_IDX) |
    bit(NET_F_MAC) |
    bit(NET_F_CSUM) |
    bit(NET_F_GUEST_CSUM) |
    bit(NET_F_GUEST_TSO4) |
    bit(NET_F_GUEST_TSO6) |
    bit(NET_F_GUEST_UFO) |
    bit(NET_F_HOST_TSO4) |
    bit(NET_F_HOST_TSO6) |
    bit(NET_F_HOST_UFO) |
    bit(NET_F_MRG_RXBUF)
  );
}

function macBytes(mac: Uint8Array | string): Uint8Array {
  if (typeof mac === "string") return parseMac(mac);
  if (mac.byteLength !== MAC_BYTES) throw new RangeError(`a MAC address has ${MAC_BYTES} bytes, not ${mac.byteLength}`);
  return parseMac(Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":"));
}

/** struct virtio_net_config (virtio 1.2 §5.1.4): the mac alone, as no field after it is offered. */
export function netConfigSpace(mac: Uint8Array | string): Uint8Array {
  const cfg = new Uint8Array(NET_CONFIG_SIZE);
  cfg.set(macBytes(mac), NET_CFG_MAC);
  return cfg;
}

export function netDeviceInfo(opts: NetOptions): VirtioDeviceInfo {
  return {
    deviceId: DEVICE_ID_NET,
    features: netFeatures(),
    numQueues: NET_NUM_QUEUES,
    queueNumMax: opts.queueSize ?? NET_QUEUE_SIZE_DEFAULT,
    config: netConfigSpace(opts.mac),
  };
}

/**
 * The TUNSETOFFLOAD flags for a driver that accepted `driverFeatures`: the TAP may hand out
 * partially checksummed frames only with GUEST_CSUM, and TSO/UFO frames only with the matching
 * GUEST_* feature, so the guest never receives an offload it did not negotiate. The kernel takes
 * TSO only together with TUN_F_CSUM (drivers/net/tun.c set_offload), as §5.1.3.1 makes every
 * GUEST_* offload depend on GUEST_CSUM; a driver that broke that rule gets no offload at all.
 */
export function tapOffloadFlags(driverFeatures: bigint): number {
  const has = (b: number): boolean => (driverFeatures & bit(b)) !== 0n;
  if (!has(NET_F_GUEST_CSUM)) return 0;
  let flags = TUN_F_CSUM;
  if (has(NET_F_GUEST_TSO4)) flags |= TUN_F_TSO4;
  if (has(NET_F_GUEST_TSO6)) flags |= TUN_F_TSO6;
  // GUEST_ECN needs TSO4 or TSO6 (§5.1.3.1). Not offered today; mapped so the rule lives here.
  if (has(NET_F_GUEST_ECN) && (flags & (TUN_F_TSO4 | TUN_F_TSO6)) !== 0) flags |= TUN_F_TSO_ECN;
  if (has(NET_F_GUEST_UFO)) flags |= TUN_F_UFO;
  return flags;
}

/** What the sink did with a frame. */
export type SinkResult = "sent" | "busy";

/** Where transmitted frames go (the card: one writev to the TAP). */
export interface FrameSink {
  /**
   * Sends one whole frame: `segments`, in order, are the 12-byte virtio_net_hdr and the packet,
   * views into guest memory valid during the call only. "busy": the host cannot take it now (TAP
   * EAGAIN) — it stays in the ring and processTx returns "blocked". A failure of this frame alone
   * (the TAP refused it: EINVAL, EIO) is thrown as a SysError or NetIoError: counted, the chain
   * used with length 0, the device carries on.
   */
  writeFrame(segments: readonly Uint8Array[]): SinkResult;
}

/** A frame the host side refused (the sink's own failure, not the guest's ring). */
export class NetIoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NetIoError";
  }
}

export interface NetStats {
  /** A frame sent; `bytes` of packet (the 12-byte header not counted). */
  txFrame(bytes: number): void;
  /** A frame delivered to the guest; `bytes` of packet. */
  rxFrame(bytes: number): void;
  /** A TX chain answered with used length 0 and nothing sent (malformed, or the host refused it). */
  txError(): void;
  /** An RX chain answered with used length 0 (malformed). */
  rxError(): void;
  /** A received frame the guest cannot take (too big for its buffers, or an offload it did not accept). */
  rxDropped(): void;
  /** A TX frame held back by the rate limiter. */
  txThrottled(): void;
}

export interface NetDeviceOptions {
  /** Rate limiter for transmitted frames: bytes = packet bytes, ops = frames. */
  txThrottle?: Throttle;
  /** Default NET_TX_FRAMES_PER_PASS_DEFAULT. */
  maxTxFramesPerPass?: number;
}

export type NetTxResult =
  | { kind: "idle"; interrupt: boolean }
  /** A frame waits for the rate limiter: call again after `waitMs`. */
  | { kind: "throttled"; interrupt: boolean; waitMs: number }
  /** The sink was busy: call again once the TAP is writable. */
  | { kind: "blocked"; interrupt: boolean }
  /** The pass took its maximum of frames and more wait: call again after serving RX. */
  | { kind: "more"; interrupt: boolean };

/**
 * "delivered"; "no-buffers": the driver has not posted enough receive buffers — keep the frame and
 * try again after the next RX kick (EVENT_IDX: avail_event asks for it); "dropped": the guest can
 * never take this frame (counted).
 */
export type RxOutcome = "delivered" | "no-buffers" | "dropped";
export interface RxResult {
  kind: RxOutcome;
  /** The driver wants a used-buffer interrupt for what this call published (§2.7.10). */
  interrupt: boolean;
}

/** Bytes [0, len) of a segment list, copied (the header: possibly split over descriptors). */
function gather(mem: GuestMemory, segs: readonly Segment[], len: number): Uint8Array {
  const out = new Uint8Array(len);
  let o = 0;
  for (const s of segs) {
    if (o === len) break;
    const take = Math.min(s.len, len - o);
    out.set(mem.slice(s.addr, take), o);
    o += take;
  }
  return out;
}

/** The GSO type a header names needs this feature (§5.1.6.2.1 on TX with HOST_*, §5.1.6.4.1 on RX with GUEST_*). */
function gsoFeature(gsoType: number, dir: "host" | "guest"): number | undefined {
  switch (gsoType & ~NET_HDR_GSO_ECN) {
    case NET_HDR_GSO_TCPV4:
      return dir === "host" ? NET_F_HOST_TSO4 : NET_F_GUEST_TSO4;
    case NET_HDR_GSO_TCPV6:
      return dir === "host" ? NET_F_HOST_TSO6 : NET_F_GUEST_TSO6;
    case NET_HDR_GSO_UDP:
      return dir === "host" ? NET_F_HOST_UFO : NET_F_GUEST_UFO;
    default:
      return undefined; // UDP_L4 (USO) and unknown types: never negotiated here
  }
}

/**
 * Why a TX chain cannot be sent, or undefined when it can. The header must ask only for what the
 * driver negotiated (§5.1.6.2.1): NEEDS_CSUM needs CSUM; a GSO type needs its HOST_* feature and
 * NEEDS_CSUM; ECN needs HOST_ECN (not offered).
 */
export function txChainProblem(mem: GuestMemory, chain: DescriptorChain, driverFeatures: bigint): string | undefined {
  if (chain.writable.length > 0) return `transmit chain has ${chain.writable.length} device-writable buffer(s); virtio 1.2 §5.1.6.2 sends device-readable ones only`;
  if (chain.readableBytes < NET_HDR_SIZE) return `transmit chain of ${chain.readableBytes} bytes is shorter than the ${NET_HDR_SIZE}-byte virtio_net_hdr`;
  if (chain.readableBytes > NET_HDR_SIZE + NET_FRAME_MAX) {
    return `transmit chain of ${chain.readableBytes} bytes is over the header + ${NET_FRAME_MAX}-byte frame limit (virtio 1.2 §5.1.6.3)`;
  }
  const has = (b: number): boolean => (driverFeatures & bit(b)) !== 0n;
  const hdr = gather(mem, chain.readable, NET_HDR_SIZE);
  const flags = hdr[NET_HDR_FLAGS]!;
  const gso = hdr[NET_HDR_GSO_TYPE]!;
  if ((flags & NET_HDR_F_NEEDS_CSUM) !== 0 && !has(NET_F_CSUM)) return "NEEDS_CSUM without VIRTIO_NET_F_CSUM negotiated";
  if (gso === NET_HDR_GSO_NONE) return undefined;
  if ((gso & NET_HDR_GSO_ECN) !== 0 && !has(NET_F_HOST_ECN)) return "GSO_ECN without VIRTIO_NET_F_HOST_ECN negotiated";
  const need = gsoFeature(gso, "host");
  if (need === undefined || !has(need)) return `gso_type ${gso} is not one the driver negotiated`;
  if ((flags & NET_HDR_F_NEEDS_CSUM) === 0) return `gso_type ${gso} without NEEDS_CSUM`;
  return undefined;
}

/** Why an RX chain cannot take a frame, or undefined. */
export function rxChainProblem(chain: DescriptorChain): string | undefined {
  if (chain.readable.length > 0) return `receive chain has ${chain.readable.length} device-readable buffer(s); it must be device-writable only`;
  if (chain.writableBytes < NET_HDR_SIZE) return `receive chain of ${chain.writableBytes} bytes cannot hold the ${NET_HDR_SIZE}-byte virtio_net_hdr (virtio 1.2 §5.1.6.3.1)`;
  return undefined;
}

/** The virtio-net machine for one card: processTx for transmitq1, deliverRx for receiveq1. */
export class NetDevice {
  private readonly mergeable: boolean;
  private readonly maxTxFrames: number;
  /** The TX frame whose tokens were taken before the sink said busy: not charged twice. */
  private prepaid: { lastAvail: number; head: number } | undefined;

  constructor(
    private readonly mem: GuestMemory,
    /** The features the driver accepted (the transport's driverFeatures after FEATURES_OK). */
    private readonly driverFeatures: bigint,
    private readonly sink: FrameSink,
    private readonly stats: NetStats,
    private readonly opts: NetDeviceOptions = {},
  ) {
    this.mergeable = this.has(NET_F_MRG_RXBUF);
    const max = opts.maxTxFramesPerPass ?? NET_TX_FRAMES_PER_PASS_DEFAULT;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`maxTxFramesPerPass must be a positive integer, not ${max}`);
    this.maxTxFrames = max;
  }

  private has(b: number): boolean {
    return (this.driverFeatures & bit(b)) !== 0n;
  }

  /**
   * Sends every available TX frame (up to maxTxFramesPerPass). A fatal VirtqueueError propagates:
   * the caller marks the device NEEDS_RESET.
   */
  processTx(q: SplitQueue): NetTxResult {
    const oldUsed = q.pos.nextUsed;
    let taken = 0;
    for (;;) {
      const malformed = (): void => {
        this.stats.txError();
        taken++;
      };
      for (let chain: DescriptorChain | undefined; (chain = q.peekChain(malformed)) !== undefined; ) {
        if (taken >= this.maxTxFrames) return { kind: "more", interrupt: q.needsInterrupt(oldUsed) };
        const head = chain.head;
        if (txChainProblem(this.mem, chain, this.driverFeatures) !== undefined) {
          q.advance();
          q.pushUsed(head, 0);
          this.stats.txError();
          taken++;
          continue;
        }
        const bytes = chain.readableBytes - NET_HDR_SIZE;
        const throttle = this.opts.txThrottle;
        const paid = this.prepaid !== undefined && this.prepaid.lastAvail === q.pos.lastAvail && this.prepaid.head === head;
        if (throttle !== undefined && !paid) {
          const wait = throttle.consume(bytes, 1);
          if (wait > 0) {
            this.stats.txThrottled();
            // The frame stays in the avail ring; the card comes back after `wait`.
            return { kind: "throttled", interrupt: q.needsInterrupt(oldUsed), waitMs: wait };
          }
          this.prepaid = { lastAvail: q.pos.lastAvail, head };
        }
        // Views straight into guest memory: each segment was checked to be guest RAM by the queue.
        const segments = chain.readable.filter((s) => s.len > 0).map((s) => this.mem.slice(s.addr, s.len));
        let result: SinkResult;
        try {
          result = this.sink.writeFrame(segments);
        } catch (e) {
          // The host refused this frame (EINVAL for a header the kernel rejects, EIO while the
          // link is down): the frame is lost, the device carries on.
          if (!(e instanceof NetIoError) && !(e instanceof Error && e.name === "SysError")) throw e;
          q.advance();
          q.pushUsed(head, 0);
          this.prepaid = undefined;
          this.stats.txError();
          taken++;
          continue;
        }
        if (result === "busy") return { kind: "blocked", interrupt: q.needsInterrupt(oldUsed) };
        q.advance();
        // Used length 0: the device wrote nothing into the chain. §2.7.8
        q.pushUsed(head, 0);
        this.prepaid = undefined;
        this.stats.txFrame(bytes);
        taken++;
      }
      q.publishAvailEvent();
      // With EVENT_IDX a frame made available before avail_event was published sent no kick: look again.
      if (q.pending() === 0) break;
      if (taken >= this.maxTxFrames) return { kind: "more", interrupt: q.needsInterrupt(oldUsed) };
    }
    return { kind: "idle", interrupt: q.needsInterrupt(oldUsed) };
  }

  /**
   * Places one frame read from the TAP (12-byte virtio_net_hdr + packet) in the receive queue.
   * A fatal VirtqueueError propagates: the caller marks the device NEEDS_RESET.
   */
  deliverRx(q: SplitQueue, frame: Uint8Array): RxResult {
    const oldUsed = q.pos.nextUsed;
    const kind = this.receive(q, frame);
    return { kind, interrupt: q.needsInterrupt(oldUsed) };
  }

  private receive(q: SplitQueue, frame: Uint8Array): RxOutcome {
    if (frame.byteLength < NET_HDR_SIZE || frame.byteLength > NET_HDR_SIZE + NET_FRAME_MAX) return this.drop();
    const hdr = this.rxHeader(frame);
    if (hdr === undefined) return this.drop();
    return this.mergeable ? this.receiveMerged(q, frame, hdr) : this.receiveOne(q, frame, hdr);
  }

  private drop(): RxOutcome {
    this.stats.rxDropped();
    return "dropped";
  }

  /**
   * The header the guest gets, or undefined when the frame carries an offload the driver did not
   * accept (§5.1.6.4.1): without GUEST_CSUM flags must be 0 (DATA_VALID is only a hint and is
   * cleared; NEEDS_CSUM means the checksum is incomplete, so the frame is dropped); a GSO type
   * needs its GUEST_* feature. tapOffloadFlags keeps the TAP from producing such frames; this is
   * the check that does not depend on it.
   */
  private rxHeader(frame: Uint8Array): Uint8Array | undefined {
    const hdr = frame.slice(0, NET_HDR_SIZE);
    const flags = hdr[NET_HDR_FLAGS]!;
    const gso = hdr[NET_HDR_GSO_TYPE]!;
    if (!this.has(NET_F_GUEST_CSUM)) {
      if ((flags & NET_HDR_F_NEEDS_CSUM) !== 0) return undefined;
      hdr[NET_HDR_FLAGS] = 0;
    } else {
      // RSC_INFO and unknown bits: never negotiated here.
      hdr[NET_HDR_FLAGS] = flags & (NET_HDR_F_NEEDS_CSUM | NET_HDR_F_DATA_VALID);
    }
    if (gso !== NET_HDR_GSO_NONE) {
      if ((gso & NET_HDR_GSO_ECN) !== 0 && !this.has(NET_F_GUEST_ECN)) return undefined;
      const need = gsoFeature(gso, "guest");
      if (need === undefined || !this.has(need)) return undefined;
    }
    return hdr;
  }

  /** Without MRG_RXBUF: the next chain holds the whole frame, num_buffers = 1 (§5.1.6.3.2, §5.1.6.4.1). */
  private receiveOne(q: SplitQueue, frame: Uint8Array, hdr: Uint8Array): RxOutcome {
    for (;;) {
      const chain = q.peekChain(() => this.stats.rxError());
      if (chain === undefined) {
        // Ask for a kick when the driver posts a buffer (§2.7.10), then look once more: one posted
        // before avail_event was written sent none.
        q.publishAvailEvent();
        if (q.pending() === 0) return "no-buffers";
        continue;
      }
      if (rxChainProblem(chain) !== undefined) {
        q.advance();
        q.pushUsed(chain.head, 0);
        this.stats.rxError();
        continue;
      }
      // A driver without MRG_RXBUF posts buffers of one size, made for the largest frame its
      // features allow (§5.1.6.3.1); one that does not fit now never will. The chain stays.
      if (chain.writableBytes < frame.byteLength) return this.drop();
      q.advance();
      new DataView(hdr.buffer, hdr.byteOffset).setUint16(NET_HDR_NUM_BUFFERS, 1, true);
      this.scatter([chain], hdr, frame);
      q.pushUsed(chain.head, frame.byteLength);
      this.stats.rxFrame(frame.byteLength - NET_HDR_SIZE);
      return "delivered";
    }
  }

  /**
   * With MRG_RXBUF: as many chains as the frame needs, taken only once there are enough; every
   * one but the last filled to its end, num_buffers = their count, all published together
   * (§5.1.6.3.2, §5.1.6.4.1).
   */
  private receiveMerged(q: SplitQueue, frame: Uint8Array, hdr: Uint8Array): RxOutcome {
    for (;;) {
      const start = q.pos.lastAvail;
      const picked: DescriptorChain[] = [];
      let room = 0;
      let retry = false;
      while (room < frame.byteLength) {
        if (q.pending() === 0) {
          const seen = q.pos.lastAvail;
          q.pos.lastAvail = start;
          // The whole ring holds buffers and still not enough: this frame never fits. The
          // buffers stay for the next frame.
          if (picked.length >= q.size) return this.drop();
          // Ask for a kick when the driver adds to what is there now (§2.7.10), give the picked
          // chains back, and look once more: buffers posted before avail_event was written sent
          // no kick.
          q.pos.lastAvail = seen;
          q.publishAvailEvent();
          q.pos.lastAvail = start;
          if (q.availIdx() !== seen) {
            retry = true;
            break;
          }
          return "no-buffers";
        }
        let head: number;
        try {
          head = q.peekHead();
        } catch (e) {
          q.pos.lastAvail = start; // fatal (a head past the table): the rings stay as they were
          throw e;
        }
        let chain: DescriptorChain | undefined;
        try {
          chain = q.parseChain(head);
        } catch (e) {
          if (!(e instanceof VirtqueueError) || e.fatal) {
            q.pos.lastAvail = start;
            throw e;
          }
        }
        if (chain === undefined || rxChainProblem(chain) !== undefined) {
          // A bad chain behind good ones: this frame cannot skip it (the ring is consumed in
          // order), so the good ones before it are answered with length 0 too, in order, and
          // the frame starts over behind it. Only a broken driver loses buffers this way.
          q.pos.lastAvail = start;
          for (const c of picked) {
            q.advance();
            q.pushUsed(c.head, 0);
          }
          q.advance();
          q.pushUsed(head, 0);
          this.stats.rxError();
          retry = true;
          break;
        }
        q.advance();
        picked.push(chain);
        room += chain.writableBytes;
      }
      if (retry) continue;
      new DataView(hdr.buffer, hdr.byteOffset).setUint16(NET_HDR_NUM_BUFFERS, picked.length, true);
      const used = this.scatter(picked, hdr, frame);
      this.publishUsed(q, picked, used);
      this.stats.rxFrame(frame.byteLength - NET_HDR_SIZE);
      return "delivered";
    }
  }

  /**
   * Copies `hdr` then frame[12..] across the chains' writable buffers in order, each chain filled
   * before the next; returns the bytes written into each.
   */
  private scatter(chains: readonly DescriptorChain[], hdr: Uint8Array, frame: Uint8Array): number[] {
    const total = frame.byteLength;
    let pos = 0; // in the stream hdr ++ frame[NET_HDR_SIZE..]: positions past the header index frame directly
    const used: number[] = [];
    for (const c of chains) {
      let wrote = 0;
      for (const s of c.writable) {
        if (pos === total) break;
        const take = Math.min(s.len, total - pos);
        // A view of guest RAM checked by the queue; `take` is within the segment.
        const dst = this.mem.slice(s.addr, take);
        let o = 0;
        if (pos < NET_HDR_SIZE) {
          o = Math.min(NET_HDR_SIZE - pos, take);
          dst.set(hdr.subarray(pos, pos + o), 0);
        }
        if (o < take) dst.set(frame.subarray(pos + o, pos + take), o);
        pos += take;
        wrote += take;
      }
      used.push(wrote);
    }
    return used;
  }

  /**
   * Publishes one used element per chain with a single used.idx update, so the driver never sees
   * a packet's first buffer (and its num_buffers) before the rest (§5.1.6.4.1: all buffers of a
   * packet are used together). SplitQueue.pushUsed moves used.idx on every element, so the
   * elements before the last go straight into their used-ring slots, which lie past used.idx and
   * which the driver does not read yet; pushUsed of the last one then publishes them all.
   */
  private publishUsed(q: SplitQueue, chains: readonly DescriptorChain[], used: readonly number[]): void {
    const ring = q.layout.used + 4; // used.ring[] after flags and idx (§2.7.8)
    const n = chains.length;
    for (let i = 0; i < n - 1; i++) {
      // nextUsed runs free as a u16 and the size divides 2^16, so the slot is (nextUsed + i) mod size.
      const slot = ring + USED_ELEM_SIZE * ((q.pos.nextUsed + i) % q.size);
      this.mem.writeU32(slot, chains[i]!.head);
      this.mem.writeU32(slot + 4, used[i]!);
    }
    q.pos.nextUsed = (q.pos.nextUsed + n - 1) & 0xffff;
    q.pushUsed(chains[n - 1]!.head, used[n - 1]!);
  }
}
