// Test doubles for the vsock device (not shipped: package.json excludes testing.js): a host stream
// that behaves like a level-triggered non-blocking Unix socket, a connector, and a guest driver that
// writes packets into a real TX ring and reads them back from a real RX ring in a GuestMemory.

import { GuestMemory } from "../../../memory/guest-memory.js";
import { SplitQueue } from "../queue.js";
import { TestDriver, layoutAt, type Buf } from "../testing.js";
import type { HostStream, HostStreamEvent } from "./connection.js";
import { VsockDevice } from "./device.js";
import { VsockMuxer, type HostConnector, type VsockMuxerOptions, type VsockStat } from "./muxer.js";
import {
  VSOCK_HDR_SIZE,
  VSOCK_HOST_CID,
  VSOCK_OP_RW,
  VSOCK_TYPE_STREAM,
  decodeHeader,
  encodeHeader,
  type VsockHeader,
  type VsockPacket,
} from "./packet.js";

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array | number[]): string => new TextDecoder().decode(b instanceof Uint8Array ? b : new Uint8Array(b));

/** A host end: what the guest sent lands in `received`; `hostWrite` queues bytes for the guest. */
export class FakeStream implements HostStream {
  readonly received: number[] = [];
  private readonly incoming: number[] = [];
  /** Bytes `write` will still take (a socket's free send buffer). */
  capacity = Number.POSITIVE_INFINITY;
  /** The host peer closed its end: reads return the rest, then "closed". */
  eof = false;
  /** Writes fail (EPIPE). */
  broken = false;
  closed = false;
  closeCalls = 0;
  readable = false;
  writable = false;
  interestCalls = 0;
  private handler: ((ev: HostStreamEvent) => void) | undefined;
  readonly reads: number[] = [];

  /** Calls made after close (a bug in the owner; the calls also throw). */
  misuse = 0;

  write(data: Uint8Array): number | "closed" {
    if (this.closed) {
      this.misuse++;
      throw new Error("write after close");
    }
    if (this.broken) return "closed";
    const n = Math.min(data.byteLength, this.capacity);
    this.capacity -= n;
    for (let i = 0; i < n; i++) this.received.push(data[i]!);
    return n;
  }
  read(max: number): Uint8Array | "closed" {
    if (this.closed) {
      this.misuse++;
      throw new Error("read after close");
    }
    this.reads.push(max);
    if (this.incoming.length === 0) return this.eof ? "closed" : new Uint8Array(0);
    return new Uint8Array(this.incoming.splice(0, max));
  }
  close(): void {
    if (this.closed) this.misuse++;
    this.closed = true;
    this.closeCalls++;
  }
  setInterest(readable: boolean, writable: boolean): void {
    this.readable = readable;
    this.writable = writable;
    this.interestCalls++;
  }
  onEvent(handler: (ev: HostStreamEvent) => void): void {
    if (this.handler !== undefined) throw new Error("onEvent registered twice");
    this.handler = handler;
  }

  get pendingForGuest(): number {
    return this.incoming.length;
  }
  /** Host bytes for the guest. */
  hostWrite(data: Uint8Array | string): void {
    for (const b of typeof data === "string" ? enc(data) : data) this.incoming.push(b);
  }
  /** Delivers an event now (as the runtime's poll loop would). */
  emit(ev: HostStreamEvent): void {
    if (!this.closed) this.handler?.(ev);
  }
  /**
   * One poll(2) round, level-triggered: readable when asked for and there is data or EOF,
   * writable when asked for and there is room, closed after EOF whatever was asked. True if any fired.
   */
  poll(): boolean {
    if (this.closed || this.handler === undefined) return false;
    let fired = false;
    if (this.readable && (this.incoming.length > 0 || this.eof)) {
      this.handler("readable");
      fired = true;
    }
    if (!this.closed && this.writable && this.capacity > 0) {
      this.handler("writable");
      fired = true;
    }
    if (!this.closed && this.eof && this.incoming.length === 0 && !this.hupSent) {
      this.hupSent = true;
      this.handler("closed");
      fired = true;
    }
    return fired;
  }
  private hupSent = false;
}

/** Listening paths: a path maps to the streams accepted there; unknown paths refuse. */
export class FakeConnector implements HostConnector {
  readonly asked: string[] = [];
  readonly listening = new Set<string>();
  /** Every path listens. */
  listenAll = false;
  readonly accepted: FakeStream[] = [];
  connect(path: string): HostStream | undefined {
    this.asked.push(path);
    if (!this.listenAll && !this.listening.has(path)) return undefined;
    const s = new FakeStream();
    this.accepted.push(s);
    return s;
  }
}

export const GUEST_CID = 3;
const RX_BUF = 4096 + VSOCK_HDR_SIZE; // what Linux posts: VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE plus the header

/** The guest side of one vsock device over real rings. */
export class Rig {
  readonly mem = GuestMemory.anonymous([[0, 0x400000]]);
  readonly txDrv: TestDriver;
  readonly rxDrv: TestDriver;
  readonly evDrv: TestDriver;
  readonly tx: SplitQueue;
  readonly rx: SplitQueue;
  readonly ev: SplitQueue;
  readonly connector = new FakeConnector();
  readonly muxer: VsockMuxer;
  readonly device: VsockDevice;
  readonly counts = new Map<VsockStat, number>();
  time = 0;
  private txAt = 0x20000;
  private rxAt = 0x100000;
  private readonly rxBufs = new Map<number, number>();
  /** Per flow (guest port:host port): payload bytes the guest app has read, its fwd_cnt. */
  readonly guestFwd = new Map<string, number>();
  guestBufAlloc = 256 * 1024;
  /** Guest packets taken off RX by `takeRx`, for tests that look at all of them. */
  readonly seen: VsockPacket[] = [];

  constructor(opts: Partial<VsockMuxerOptions> = {}, queueSize = 128) {
    const stats = { add: (s: VsockStat, n: number) => this.counts.set(s, (this.counts.get(s) ?? 0) + n) };
    this.muxer = new VsockMuxer({ guestCid: GUEST_CID, udsPath: "/run/v.sock", connector: this.connector, stats, now: () => this.time, ...opts });
    this.device = new VsockDevice(this.mem, this.muxer, stats);
    const txL = layoutAt(0x1000, queueSize);
    const rxL = layoutAt(0x5000, queueSize);
    const evL = layoutAt(0x9000, 8);
    this.txDrv = new TestDriver(this.mem, txL);
    this.rxDrv = new TestDriver(this.mem, rxL);
    this.evDrv = new TestDriver(this.mem, evL);
    this.tx = new SplitQueue(this.mem, txL, { lastAvail: 0, nextUsed: 0 });
    this.rx = new SplitQueue(this.mem, rxL, { lastAvail: 0, nextUsed: 0 });
    this.ev = new SplitQueue(this.mem, evL, { lastAvail: 0, nextUsed: 0 });
  }

  count(s: VsockStat): number {
    return this.counts.get(s) ?? 0;
  }

  private txAlloc(n: number): number {
    if (this.txAt + n > 0x100000) this.txAt = 0x20000;
    const at = this.txAt;
    this.txAt += (n + 15) & ~15;
    return at;
  }

  /** Header defaults for a guest packet of flow guestPort -> hostPort. */
  hdr(guestPort: number, hostPort: number, op: number, extra: Partial<VsockHeader> = {}): VsockHeader {
    return {
      srcCid: BigInt(GUEST_CID),
      dstCid: BigInt(VSOCK_HOST_CID),
      srcPort: guestPort,
      dstPort: hostPort,
      len: 0,
      type: VSOCK_TYPE_STREAM,
      op,
      flags: 0,
      bufAlloc: this.guestBufAlloc,
      fwdCnt: this.guestFwd.get(`${guestPort}:${hostPort}`) ?? 0,
      ...extra,
    };
  }

  /** Puts one packet on TX: the header split at `splits` (byte offsets), the payload in its own buffer. */
  sendRaw(hdr: VsockHeader, payload: Uint8Array = new Uint8Array(0), splits: number[] = []): number {
    const bytes = encodeHeader(hdr);
    const bufs: Buf[] = [];
    let from = 0;
    for (const to of [...splits, VSOCK_HDR_SIZE]) {
      const at = this.txAlloc(to - from);
      this.mem.write(at, bytes.subarray(from, to));
      bufs.push({ addr: at, len: to - from });
      from = to;
    }
    if (payload.byteLength > 0) {
      const at = this.txAlloc(payload.byteLength);
      this.mem.write(at, payload);
      bufs.push({ addr: at, len: payload.byteLength });
    }
    const head = this.txDrv.addChain(bufs);
    this.txDrv.publish(head);
    return head;
  }

  send(guestPort: number, hostPort: number, op: number, payload: Uint8Array | string = new Uint8Array(0), extra: Partial<VsockHeader> = {}): void {
    const p = typeof payload === "string" ? enc(payload) : payload;
    this.sendRaw(this.hdr(guestPort, hostPort, op, { len: p.byteLength, ...extra }), p);
  }

  /** Posts `n` RX buffers of `size` bytes (one writable descriptor each, as Linux does). */
  postRx(n: number, size = RX_BUF): void {
    for (let i = 0; i < n; i++) {
      if (this.rxAt + size > 0x3f0000) this.rxAt = 0x100000;
      const at = this.rxAt;
      this.rxAt += (size + 15) & ~15;
      const head = this.rxDrv.addChain([{ addr: at, len: size, write: true }]);
      this.rxBufs.set(head, at);
      this.rxDrv.publish(head);
    }
  }

  /** Runs TX, then RX; returns the packets the guest received. */
  step(): VsockPacket[] {
    this.device.processTx(this.tx);
    this.txDrv.takeUsed();
    this.device.fillRx(this.rx);
    return this.takeRx();
  }

  /** Decodes what the device put in RX buffers; RW payloads count as read by the guest app (fwd_cnt). */
  takeRx(): VsockPacket[] {
    const out: VsockPacket[] = [];
    for (const u of this.rxDrv.takeUsed()) {
      if (u.len === 0) continue;
      const at = this.rxBufs.get(u.id)!;
      const hdr = decodeHeader(this.mem.read(at, VSOCK_HDR_SIZE));
      const payload = this.mem.read(at + VSOCK_HDR_SIZE, u.len - VSOCK_HDR_SIZE);
      if (hdr.len !== payload.byteLength) throw new Error(`RX used length ${u.len} but header len ${hdr.len}`);
      if (hdr.op === VSOCK_OP_RW) {
        const k = `${hdr.dstPort}:${hdr.srcPort}`;
        this.guestFwd.set(k, ((this.guestFwd.get(k) ?? 0) + hdr.len) >>> 0);
      }
      out.push({ hdr, payload });
    }
    this.seen.push(...out);
    return out;
  }

  /** Polls every live stream and runs the device until nothing moves; returns the packets the guest got. */
  settle(streams: FakeStream[], rxBuffers = 8, rounds = 1000): VsockPacket[] {
    const got: VsockPacket[] = [];
    for (let i = 0; i < rounds; i++) {
      if (((this.rxDrv.availIdx - this.rx.pos.lastAvail) & 0xffff) < rxBuffers) this.postRx(rxBuffers);
      const pkts = this.step();
      got.push(...pkts);
      // Poll after the step: what it changed (interest, data) shows in this round's events.
      let fired = false;
      for (const s of streams) fired = s.poll() || fired;
      if (!fired && pkts.length === 0) return got;
    }
    throw new Error(`no quiescence after ${rounds} rounds`);
  }
}
