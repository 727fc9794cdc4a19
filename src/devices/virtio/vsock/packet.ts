// virtio-vsock wire format (virtio 1.2 §5.10): device identity, configuration, the packet header
// and how a packet is read out of a TX descriptor chain and written into an RX one.
//
// A packet is `struct virtio_vsock_hdr` (44 bytes, little endian) followed by `len` payload bytes
// (§5.10.6.4 "struct virtio_vsock_packet"). TX buffers are device-readable only and RX buffers
// device-writable only (§5.10.6.4); the header may be split across buffers as any virtio
// structure may (virtio 1.2 §2.7.4 "Message Framing"). Everything read here comes from the guest: a chain
// that breaks a rule is a VsockPacketError, which the device answers with used length 0.

import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { VirtioDeviceInfo } from "../mmio.js";
import type { DescriptorChain, Segment } from "../queue.js";
import { F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, bit } from "../spec.js";

/** Device ID of the socket device. virtio 1.2 §5.10.1 */
export const DEVICE_ID_VSOCK = 19;
/** Three queues: rx 0, tx 1, event 2. virtio 1.2 §5.10.2 */
export const VSOCK_NUM_QUEUES = 3;
export const VSOCK_RX_QUEUE = 0;
export const VSOCK_TX_QUEUE = 1;
export const VSOCK_EVENT_QUEUE = 2;
/** struct virtio_vsock_config { le64 guest_cid; }. virtio 1.2 §5.10.4 */
export const VSOCK_CONFIG_SIZE = 8;
export const VSOCK_QUEUE_SIZE_DEFAULT = 256;

/** Well-known CID of the host. virtio 1.2 §5.10.4 (table of reserved CIDs) */
export const VSOCK_HOST_CID = 2;
/**
 * Reserved CIDs (virtio 1.2 §5.10.4): 0, 1, 2 (the host), 0xffffffff and 0xffffffffffffffff; and
 * "the upper 32 bits of the CID are reserved and zeroed". So a guest CID is in [3, 0xffffffff).
 * (0xffffffff is also VMADDR_CID_ANY, -1U, in Linux's <linux/vm_sockets.h>.)
 */
export const VSOCK_GUEST_CID_MIN = 3;
export const VSOCK_CID_RESERVED_U32 = 0xffffffff;

// ---- struct virtio_vsock_hdr. virtio 1.2 §5.10.6 ----
export const VSOCK_HDR_SIZE = 44;
const HDR_SRC_CID = 0; // le64
const HDR_DST_CID = 8; // le64
const HDR_SRC_PORT = 16; // le32
const HDR_DST_PORT = 20; // le32
const HDR_LEN = 24; // le32
const HDR_TYPE = 28; // le16
const HDR_OP = 30; // le16
const HDR_FLAGS = 32; // le32
const HDR_BUF_ALLOC = 36; // le32
const HDR_FWD_CNT = 40; // le32

// Operations. virtio 1.2 §5.10.6 (VIRTIO_VSOCK_OP_*)
export const VSOCK_OP_INVALID = 0;
export const VSOCK_OP_REQUEST = 1;
export const VSOCK_OP_RESPONSE = 2;
export const VSOCK_OP_RST = 3;
export const VSOCK_OP_SHUTDOWN = 4;
export const VSOCK_OP_RW = 5;
export const VSOCK_OP_CREDIT_UPDATE = 6;
export const VSOCK_OP_CREDIT_REQUEST = 7;

/** Stream sockets, the only type this device offers. virtio 1.2 §5.10.6.2 (VIRTIO_VSOCK_TYPE_STREAM) */
export const VSOCK_TYPE_STREAM = 1;

/** SHUTDOWN flags: bit 0, the sender will receive no more; bit 1, it will send no more. virtio 1.2 §5.10.6.5 */
export const VSOCK_SHUTDOWN_RCV = 1;
export const VSOCK_SHUTDOWN_SEND = 2;
export const VSOCK_SHUTDOWN_BOTH = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;

/** struct virtio_vsock_event { le32 id; } and its only id. virtio 1.2 §5.10.6.7 (Device Events) */
export const VSOCK_EVENT_SIZE = 4;
export const VSOCK_EVENT_TRANSPORT_RESET = 0;

/**
 * Payload bytes one packet may carry, both ways. Linux never puts more in one packet
 * (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE, 64 KiB, include/linux/virtio_vsock.h) and Firecracker accepts
 * no more (MAX_PKT_BUF_SIZE, vsock/mod.rs). It bounds the copy one TX chain can cause.
 */
export const VSOCK_MAX_PAYLOAD = 64 * 1024;

export interface VsockHeader {
  /** u64 on the wire; the upper 32 bits are reserved and zero (§5.10.6), so a bigint keeps them visible. */
  srcCid: bigint;
  dstCid: bigint;
  srcPort: number;
  dstPort: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  bufAlloc: number;
  fwdCnt: number;
}

/** A header and its payload (`hdr.len === payload.length`). */
export interface VsockPacket {
  hdr: VsockHeader;
  payload: Uint8Array;
}

export type VsockPacketErrorKind =
  | "tx-writable" // a TX chain holds a device-writable buffer (§5.10.6.4: TX buffers are read-only)
  | "tx-short" // fewer readable bytes than a header
  | "tx-len-mismatch" // hdr.len differs from the payload bytes that follow the header
  | "tx-too-long" // hdr.len over VSOCK_MAX_PAYLOAD
  | "rx-readable" // an RX chain holds a device-readable buffer (§5.10.6.4: RX buffers are write-only)
  | "rx-short" // an RX chain cannot hold the packet
  | "event-short"; // an event chain cannot hold struct virtio_vsock_event

export class VsockPacketError extends Error {
  constructor(
    readonly kind: VsockPacketErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "VsockPacketError";
  }
}

export function encodeHeader(h: VsockHeader): Uint8Array {
  const b = new Uint8Array(VSOCK_HDR_SIZE);
  const v = new DataView(b.buffer);
  v.setBigUint64(HDR_SRC_CID, BigInt.asUintN(64, h.srcCid), true);
  v.setBigUint64(HDR_DST_CID, BigInt.asUintN(64, h.dstCid), true);
  v.setUint32(HDR_SRC_PORT, h.srcPort >>> 0, true);
  v.setUint32(HDR_DST_PORT, h.dstPort >>> 0, true);
  v.setUint32(HDR_LEN, h.len >>> 0, true);
  v.setUint16(HDR_TYPE, h.type & 0xffff, true);
  v.setUint16(HDR_OP, h.op & 0xffff, true);
  v.setUint32(HDR_FLAGS, h.flags >>> 0, true);
  v.setUint32(HDR_BUF_ALLOC, h.bufAlloc >>> 0, true);
  v.setUint32(HDR_FWD_CNT, h.fwdCnt >>> 0, true);
  return b;
}

/** Decodes the first 44 bytes of `b`. */
export function decodeHeader(b: Uint8Array): VsockHeader {
  if (b.byteLength < VSOCK_HDR_SIZE) throw new RangeError(`a vsock header is ${VSOCK_HDR_SIZE} bytes, not ${b.byteLength}`);
  const v = new DataView(b.buffer, b.byteOffset, VSOCK_HDR_SIZE);
  return {
    srcCid: v.getBigUint64(HDR_SRC_CID, true),
    dstCid: v.getBigUint64(HDR_DST_CID, true),
    srcPort: v.getUint32(HDR_SRC_PORT, true),
    dstPort: v.getUint32(HDR_DST_PORT, true),
    len: v.getUint32(HDR_LEN, true),
    type: v.getUint16(HDR_TYPE, true),
    op: v.getUint16(HDR_OP, true),
    flags: v.getUint32(HDR_FLAGS, true),
    bufAlloc: v.getUint32(HDR_BUF_ALLOC, true),
    fwdCnt: v.getUint32(HDR_FWD_CNT, true),
  };
}

/** Copies `len` bytes starting `offset` bytes into the concatenation of `segs`. The caller checked the total. */
function gather(mem: GuestMemory, segs: Segment[], offset: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  let at = 0;
  let skip = offset;
  for (const s of segs) {
    if (at === len) break;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const take = Math.min(s.len - skip, len - at);
    // The segment was checked to be guest RAM by the queue.
    out.set(mem.slice(s.addr + skip, take), at);
    at += take;
    skip = 0;
  }
  return out;
}

/** Writes `data` from the start of the concatenation of `segs`. The caller checked the total. */
function scatter(mem: GuestMemory, segs: Segment[], offset: number, data: Uint8Array): void {
  let at = 0;
  let skip = offset;
  for (const s of segs) {
    if (at === data.byteLength) break;
    if (skip >= s.len) {
      skip -= s.len;
      continue;
    }
    const take = Math.min(s.len - skip, data.byteLength - at);
    mem.write(s.addr + skip, data.subarray(at, at + take));
    at += take;
    skip = 0;
  }
}

/**
 * The packet in a TX chain: header from the first 44 readable bytes (however the buffers split
 * it), payload from the rest, copied out of guest memory. `hdr.len` must equal the payload bytes
 * present and be at most `maxPayload`. Throws VsockPacketError.
 */
export function readTxPacket(mem: GuestMemory, chain: DescriptorChain, maxPayload = VSOCK_MAX_PAYLOAD): VsockPacket {
  if (chain.writable.length > 0) {
    throw new VsockPacketError("tx-writable", `TX chain ${chain.head} has ${chain.writable.length} device-writable buffer(s); virtio 1.2 §5.10.6.4 allows none`);
  }
  if (chain.readableBytes < VSOCK_HDR_SIZE) {
    throw new VsockPacketError("tx-short", `TX chain ${chain.head} has ${chain.readableBytes} bytes, less than the ${VSOCK_HDR_SIZE}-byte header`);
  }
  const hdr = decodeHeader(gather(mem, chain.readable, 0, VSOCK_HDR_SIZE));
  if (hdr.len > maxPayload) {
    throw new VsockPacketError("tx-too-long", `TX packet len ${hdr.len} is over the ${maxPayload}-byte payload limit`);
  }
  const present = chain.readableBytes - VSOCK_HDR_SIZE;
  if (hdr.len !== present) {
    throw new VsockPacketError("tx-len-mismatch", `TX packet len ${hdr.len} but ${present} payload bytes follow the header`);
  }
  return { hdr, payload: gather(mem, chain.readable, VSOCK_HDR_SIZE, present) };
}

/** Payload bytes an RX chain can take after the header (0 when it cannot take a packet at all). */
export function rxPayloadRoom(chain: DescriptorChain): number {
  if (chain.readable.length > 0 || chain.writableBytes < VSOCK_HDR_SIZE) return 0;
  return Math.min(chain.writableBytes - VSOCK_HDR_SIZE, VSOCK_MAX_PAYLOAD);
}

/** Why an RX chain cannot take any packet, or undefined when it can take at least a header. */
export function rxChainProblem(chain: DescriptorChain): VsockPacketError | undefined {
  if (chain.readable.length > 0) {
    return new VsockPacketError("rx-readable", `RX chain ${chain.head} has ${chain.readable.length} device-readable buffer(s); virtio 1.2 §5.10.6.4 allows none`);
  }
  if (chain.writableBytes < VSOCK_HDR_SIZE) {
    return new VsockPacketError("rx-short", `RX chain ${chain.head} has ${chain.writableBytes} writable bytes, less than the ${VSOCK_HDR_SIZE}-byte header`);
  }
  return undefined;
}

/** Writes header and payload into an RX chain; returns the bytes written (the used length). Throws VsockPacketError. */
export function writeRxPacket(mem: GuestMemory, chain: DescriptorChain, pkt: VsockPacket): number {
  const problem = rxChainProblem(chain);
  if (problem !== undefined) throw problem;
  const total = VSOCK_HDR_SIZE + pkt.payload.byteLength;
  if (chain.writableBytes < total) {
    throw new VsockPacketError("rx-short", `RX chain ${chain.head} has ${chain.writableBytes} writable bytes, less than the ${total}-byte packet`);
  }
  scatter(mem, chain.writable, 0, encodeHeader({ ...pkt.hdr, len: pkt.payload.byteLength }));
  scatter(mem, chain.writable, VSOCK_HDR_SIZE, pkt.payload);
  return total;
}

/** Writes a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET event (virtio 1.2 §5.10.6.7); returns the used length. */
export function writeTransportResetEvent(mem: GuestMemory, chain: DescriptorChain): number {
  if (chain.readable.length > 0 || chain.writableBytes < VSOCK_EVENT_SIZE) {
    throw new VsockPacketError("event-short", `event chain ${chain.head} is not ${VSOCK_EVENT_SIZE} device-writable bytes`);
  }
  const ev = new Uint8Array(VSOCK_EVENT_SIZE);
  new DataView(ev.buffer).setUint32(0, VSOCK_EVENT_TRANSPORT_RESET, true);
  scatter(mem, chain.writable, 0, ev);
  return VSOCK_EVENT_SIZE;
}

/** Checks a guest CID (virtio 1.2 §5.10.4: not reserved, upper 32 bits zero); returns it. */
export function validateGuestCid(cid: number): number {
  if (!Number.isSafeInteger(cid) || cid < VSOCK_GUEST_CID_MIN || cid >= VSOCK_CID_RESERVED_U32) {
    throw new RangeError(
      `guest_cid ${cid} is reserved or out of range: it must be an integer in [${VSOCK_GUEST_CID_MIN}, 0x${VSOCK_CID_RESERVED_U32.toString(16)}) (virtio 1.2 §5.10.4)`,
    );
  }
  return cid;
}

/**
 * No device feature bit: "if no feature bit is set, only stream socket type is supported"
 * (virtio 1.2 §5.10.3), which is all we do. Ring features as the other devices offer them.
 */
export function vsockFeatures(): bigint {
  return bit(F_VERSION_1) | bit(F_RING_INDIRECT_DESC) | bit(F_RING_EVENT_IDX);
}

export function vsockConfigSpace(guestCid: number): Uint8Array {
  const cfg = new Uint8Array(VSOCK_CONFIG_SIZE);
  new DataView(cfg.buffer).setBigUint64(0, BigInt(validateGuestCid(guestCid)), true);
  return cfg;
}

export interface VsockInfoOptions {
  guestCid: number;
  /** QueueNumMax offered for all three queues; default VSOCK_QUEUE_SIZE_DEFAULT. */
  queueSize?: number;
}

export function vsockDeviceInfo(opts: VsockInfoOptions): VirtioDeviceInfo {
  return {
    deviceId: DEVICE_ID_VSOCK,
    features: vsockFeatures(),
    numQueues: VSOCK_NUM_QUEUES,
    queueNumMax: opts.queueSize ?? VSOCK_QUEUE_SIZE_DEFAULT,
    config: vsockConfigSpace(opts.guestCid),
  };
}
