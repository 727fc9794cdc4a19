// virtio-vsock wire format: virtio 1.2 §5.10 identity, config, header layout, TX/RX chains.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GuestMemory } from "../../../memory/guest-memory.js";
import type { DescriptorChain, Segment } from "../queue.js";
import { F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, bit } from "../spec.js";
import {
  DEVICE_ID_VSOCK,
  VSOCK_HDR_SIZE,
  VSOCK_MAX_PAYLOAD,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_RW,
  VsockPacketError,
  decodeHeader,
  encodeHeader,
  readTxPacket,
  rxPayloadRoom,
  validateGuestCid,
  vsockDeviceInfo,
  writeRxPacket,
  writeTransportResetEvent,
  type VsockHeader,
} from "./packet.js";

const chain = (readable: Segment[], writable: Segment[] = []): DescriptorChain => ({
  head: 0,
  readable,
  writable,
  readableBytes: readable.reduce((s, x) => s + x.len, 0),
  writableBytes: writable.reduce((s, x) => s + x.len, 0),
});

const sample: VsockHeader = {
  srcCid: 3n,
  dstCid: 2n,
  srcPort: 0x11223344,
  dstPort: 52,
  len: 5,
  type: 1,
  op: VSOCK_OP_RW,
  flags: 0,
  bufAlloc: 0x40000,
  fwdCnt: 0xfffffff0,
};

test("virtio 1.2 §5.10.1-4: device ID 19, queues rx/tx/event, config le64 guest_cid, ring features only", () => {
  const info = vsockDeviceInfo({ guestCid: 0x12345678 });
  assert.equal(info.deviceId, DEVICE_ID_VSOCK);
  assert.equal(info.deviceId, 19);
  assert.equal(info.numQueues, 3);
  assert.equal(info.queueNumMax, 256);
  assert.equal(vsockDeviceInfo({ guestCid: 3, queueSize: 64 }).queueNumMax, 64);
  assert.deepEqual([...info.config], [0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0]);
  assert.equal(info.features, bit(F_VERSION_1) | bit(F_RING_INDIRECT_DESC) | bit(F_RING_EVENT_IDX));
  assert.equal(info.features & 0xffffffn, 0n, "no device-specific bits: stream only (§5.10.3)");
});

test("virtio 1.2 §5.10.4: reserved CIDs 0, 1, 2, 0xffffffff and anything with upper bits are refused", () => {
  for (const bad of [0, 1, 2, 0xffffffff, 2 ** 32, 2 ** 40, -1, 3.5, Number.NaN]) {
    assert.throws(() => validateGuestCid(bad), RangeError, String(bad));
    assert.throws(() => vsockDeviceInfo({ guestCid: bad }), RangeError);
  }
  assert.equal(validateGuestCid(3), 3);
  assert.equal(validateGuestCid(0xfffffffe), 0xfffffffe);
});

test("virtio 1.2 §5.10.6: struct virtio_vsock_hdr is 44 little-endian bytes in spec order", () => {
  const b = encodeHeader(sample);
  assert.equal(b.byteLength, VSOCK_HDR_SIZE);
  assert.equal(b.byteLength, 44);
  assert.deepEqual([...b.subarray(0, 8)], [3, 0, 0, 0, 0, 0, 0, 0], "src_cid le64 at 0");
  assert.deepEqual([...b.subarray(8, 16)], [2, 0, 0, 0, 0, 0, 0, 0], "dst_cid le64 at 8");
  assert.deepEqual([...b.subarray(16, 20)], [0x44, 0x33, 0x22, 0x11], "src_port le32 at 16");
  assert.deepEqual([...b.subarray(20, 24)], [52, 0, 0, 0], "dst_port at 20");
  assert.deepEqual([...b.subarray(24, 28)], [5, 0, 0, 0], "len at 24");
  assert.deepEqual([...b.subarray(28, 30)], [1, 0], "type le16 at 28");
  assert.deepEqual([...b.subarray(30, 32)], [5, 0], "op le16 at 30");
  assert.deepEqual([...b.subarray(36, 40)], [0, 0, 4, 0], "buf_alloc at 36");
  assert.deepEqual([...b.subarray(40, 44)], [0xf0, 0xff, 0xff, 0xff], "fwd_cnt at 40");
  assert.deepEqual(decodeHeader(b), sample);
});

test("TX: a header split over three buffers and a payload over two are gathered (§2.7.4 framing)", () => {
  const mem = GuestMemory.anonymous([[0, 0x10000]]);
  const h = encodeHeader(sample);
  mem.write(0x1000, h.subarray(0, 7));
  mem.write(0x2000, h.subarray(7, 40));
  mem.write(0x3000, Uint8Array.of(...h.subarray(40), 0x61, 0x62));
  mem.write(0x4000, Uint8Array.of(0x63, 0x64, 0x65));
  const pkt = readTxPacket(mem, chain([{ addr: 0x1000, len: 7 }, { addr: 0x2000, len: 33 }, { addr: 0x3000, len: 6 }, { addr: 0x4000, len: 3 }]));
  assert.deepEqual(pkt.hdr, sample);
  assert.equal(new TextDecoder().decode(pkt.payload), "abcde");
});

test("TX: len must equal the payload present and be at most 64 KiB; no writable buffer; a whole header", () => {
  const mem = GuestMemory.anonymous([[0, 0x40000]]);
  const put = (h: VsockHeader) => mem.write(0x1000, encodeHeader(h));
  const kind = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof VsockPacketError, String(e));
      return e.kind;
    }
    return "no error";
  };
  put(sample);
  assert.equal(kind(() => readTxPacket(mem, chain([{ addr: 0x1000, len: 44 + 4 }]))), "tx-len-mismatch", "fewer bytes than len");
  assert.equal(kind(() => readTxPacket(mem, chain([{ addr: 0x1000, len: 44 + 6 }]))), "tx-len-mismatch", "more bytes than len");
  assert.equal(kind(() => readTxPacket(mem, chain([{ addr: 0x1000, len: 43 }]))), "tx-short");
  assert.equal(kind(() => readTxPacket(mem, chain([{ addr: 0x1000, len: 49 }], [{ addr: 0x2000, len: 8 }]))), "tx-writable");
  put({ ...sample, len: VSOCK_MAX_PAYLOAD + 1 });
  assert.equal(kind(() => readTxPacket(mem, chain([{ addr: 0x1000, len: 44 + VSOCK_MAX_PAYLOAD + 1 }]))), "tx-too-long");
  put({ ...sample, len: 0xffffffff });
  assert.equal(kind(() => readTxPacket(mem, chain([{ addr: 0x1000, len: 44 }]))), "tx-too-long", "a huge len is refused before any copy");
  put({ ...sample, len: VSOCK_MAX_PAYLOAD });
  assert.equal(readTxPacket(mem, chain([{ addr: 0x1000, len: 44 + VSOCK_MAX_PAYLOAD }])).payload.byteLength, VSOCK_MAX_PAYLOAD);
  put({ ...sample, len: 0, op: VSOCK_OP_CREDIT_REQUEST });
  assert.equal(readTxPacket(mem, chain([{ addr: 0x1000, len: 44 }])).payload.byteLength, 0);
});

test("RX: header and payload scattered over writable buffers; too small or readable buffers are refused", () => {
  const mem = GuestMemory.anonymous([[0, 0x10000]]);
  mem.fill(0x1000, 0x3000, 0xee);
  const c = chain([], [{ addr: 0x1000, len: 30 }, { addr: 0x2000, len: 20 }]);
  assert.equal(rxPayloadRoom(c), 6);
  const payload = new TextEncoder().encode("hello");
  const n = writeRxPacket(mem, c, { hdr: { ...sample, len: 999 }, payload });
  assert.equal(n, 49);
  const back = new Uint8Array([...mem.read(0x1000, 30), ...mem.read(0x2000, 19)]);
  assert.deepEqual(decodeHeader(back), sample, "len is the payload's, whatever the header said");
  assert.equal(new TextDecoder().decode(back.subarray(44)), "hello");
  assert.equal(mem.readU8(0x2000 + 19), 0xee, "nothing past the packet");
  assert.throws(() => writeRxPacket(mem, chain([], [{ addr: 0x1000, len: 48 }]), { hdr: sample, payload }), (e: unknown) => e instanceof VsockPacketError && e.kind === "rx-short");
  assert.throws(() => writeRxPacket(mem, chain([{ addr: 0x1000, len: 4 }], [{ addr: 0x2000, len: 100 }]), { hdr: sample, payload }), (e: unknown) => e instanceof VsockPacketError && e.kind === "rx-readable");
  assert.equal(rxPayloadRoom(chain([], [{ addr: 0, len: 43 }])), 0);
  assert.equal(rxPayloadRoom(chain([], [{ addr: 0, len: 44 + 2 * VSOCK_MAX_PAYLOAD }])), VSOCK_MAX_PAYLOAD, "one packet carries at most 64 KiB");
});

test("virtio 1.2 §5.10.6.7: TRANSPORT_RESET is le32 0 in a 4-byte writable buffer", () => {
  const mem = GuestMemory.anonymous([[0, 0x10000]]);
  mem.fill(0x1000, 8, 0xff);
  assert.equal(writeTransportResetEvent(mem, chain([], [{ addr: 0x1000, len: 8 }])), 4);
  assert.deepEqual([...mem.read(0x1000, 8)], [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  assert.throws(() => writeTransportResetEvent(mem, chain([], [{ addr: 0x1000, len: 3 }])), VsockPacketError);
});
