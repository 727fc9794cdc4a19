// One vsock stream connection between a guest AF_VSOCK socket and a host stream (virtio 1.2
// §5.10.6.5), with credit-based flow control both ways (§5.10.6.3). Pure: the host side is a
// HostStream the card runtime backs with a non-blocking Unix socket; time comes from `now`.
//
// Counters (all free-running u32, §5.10.6.3):
//   guest -> host: rxCnt   bytes the guest sent us;  fwdCnt  bytes we handed to the host stream;
//                  lastFwdCntSent  the fwd_cnt the guest last saw from us.
//   host -> guest: txCnt   bytes we sent the guest;  peerBufAlloc/peerFwdCnt  from its last header.
// We advertise buf_alloc = bufAlloc: host-bound bytes the host stream has not taken yet are held
// here, and the guest may only send while rxCnt - lastFwdCntSent stays within bufAlloc. A guest
// that goes past that is reset (RST): the buffer can never grow past bufAlloc.
// We send the guest at most peer_free = peer_buf_alloc - (tx_cnt - peer_fwd_cnt) bytes, and read
// the host stream only when an RX buffer and credit are there, so host -> guest needs no buffer.

import {
  VSOCK_HOST_CID,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_SHUTDOWN_BOTH,
  VSOCK_SHUTDOWN_RCV,
  VSOCK_SHUTDOWN_SEND,
  VSOCK_TYPE_STREAM,
  type VsockHeader,
  type VsockPacket,
} from "./packet.js";

export type HostStreamEvent = "readable" | "writable" | "closed";

/**
 * The host end of one connection, as the card runtime gives it: a connected, non-blocking Unix
 * stream socket (or anything that behaves like one). Level-triggered, as poll(2) is.
 */
export interface HostStream {
  /** Writes what the stream takes now without blocking: the count (0 when full, EAGAIN), or "closed" (EPIPE, ECONNRESET). */
  write(data: Uint8Array): number | "closed";
  /** Up to `max` bytes available now: empty when none yet (EAGAIN), "closed" at end of stream or on error. */
  read(max: number): Uint8Array | "closed";
  /** Closes the stream; no event is delivered after this. */
  close(): void;
  /**
   * Which events the owner wants (poll(2) POLLIN/POLLOUT). "closed" (POLLHUP/POLLERR) is always
   * wanted: poll(2) reports those whatever was asked for.
   */
  setInterest(readable: boolean, writable: boolean): void;
  /** Registers the one handler events go to (the muxer calls this once). */
  onEvent(handler: (event: HostStreamEvent) => void): void;
}

/**
 * local-init: the host asked (CONNECT), our REQUEST waits for the guest's RESPONSE.
 * peer-init:  the guest asked (REQUEST), the host stream is connected, our RESPONSE is due.
 * established: data flows.
 * local-closed: the host stream ended; we sent or owe SHUTDOWN and wait for the guest's RST.
 * killed: an RST is due to the guest; the host stream is closed.
 * closed: nothing more to say; the muxer forgets the connection.
 */
export type ConnState = "local-init" | "peer-init" | "established" | "local-closed" | "killed" | "closed";

export interface ConnectionOptions {
  guestCid: number;
  /** Host-side port (dst_port of the guest's packets). */
  localPort: number;
  /** Guest-side port (src_port of the guest's packets). */
  peerPort: number;
  stream: HostStream;
  /** Who asked: the host (CONNECT on uds_path) or the guest (REQUEST). */
  initiator: "host" | "guest";
  /** buf_alloc we advertise: host-bound bytes we hold at most. */
  bufAlloc: number;
  /** Send CREDIT_UPDATE when the guest believes our free space is below this. */
  creditUpdateThreshold: number;
  requestTimeoutMs: number;
  shutdownTimeoutMs: number;
  now: () => number;
  /** The guest's credit from its REQUEST (guest-initiated). */
  peerBufAlloc?: number;
  peerFwdCnt?: number;
}

/** Why a connection was reset by us: for stats and tests. */
export type KillReason =
  | "credit-overrun" // the guest sent past the credit we advertised (§5.10.6.3)
  | "protocol" // an op that makes no sense in this state
  | "host-write" // the host stream refused guest data (EPIPE)
  | "host-closed-early" // the host stream closed before the handshake finished
  | "ok-write" // `OK <port>\n` did not fit into a fresh stream
  | "timeout" // no RESPONSE, or no RST after SHUTDOWN, in time
  | "reset"; // the muxer dropped everything (transport reset)

// Pending packets to the guest, one bit each (a set: each is owed at most once).
const P_RST = 1;
const P_RESPONSE = 2;
const P_REQUEST = 4;
const P_SHUTDOWN = 8;
const P_CREDIT_REQUEST = 16;
const P_CREDIT_UPDATE = 32;

const u32 = (n: number): number => n >>> 0;

export class VsockConnection {
  readonly guestCid: number;
  readonly localPort: number;
  readonly peerPort: number;
  readonly initiator: "host" | "guest";
  readonly stream: HostStream;
  state: ConnState;
  /** When the runtime should expire this connection (ms on `now`'s clock), if ever. */
  deadline: number | undefined;
  killReason: KillReason | undefined;

  private pending = 0;
  /** The host stream may have bytes for the guest (a "readable" event not yet drained). */
  private hostReadable = false;
  /** The host stream reported POLLHUP/POLLERR: drain it, then SHUTDOWN. */
  private hostHup = false;
  private streamClosed = false;
  /** A CREDIT_REQUEST went out and no guest packet has answered it yet. */
  private creditRequested = false;
  /** SHUTDOWN flags the guest sent, ORed (§5.10.6.5: "permanent once sent"). */
  private peerShutdown = 0;

  // guest -> host
  private rxCnt = 0;
  private fwdCnt = 0;
  private lastFwdCntSent = 0;
  private readonly txBuf: Uint8Array[] = [];
  private txBufBytes = 0;
  // host -> guest
  private txCnt = 0;
  private peerBufAlloc: number;
  private peerFwdCnt: number;

  private readonly bufAlloc: number;
  private readonly creditUpdateThreshold: number;
  private readonly requestTimeoutMs: number;
  private readonly shutdownTimeoutMs: number;
  private readonly now: () => number;
  private lastInterest = -1;

  constructor(opts: ConnectionOptions) {
    this.guestCid = opts.guestCid;
    this.localPort = opts.localPort;
    this.peerPort = opts.peerPort;
    this.initiator = opts.initiator;
    this.stream = opts.stream;
    this.bufAlloc = opts.bufAlloc;
    this.creditUpdateThreshold = opts.creditUpdateThreshold;
    this.requestTimeoutMs = opts.requestTimeoutMs;
    this.shutdownTimeoutMs = opts.shutdownTimeoutMs;
    this.now = opts.now;
    this.peerBufAlloc = u32(opts.peerBufAlloc ?? 0);
    this.peerFwdCnt = u32(opts.peerFwdCnt ?? 0);
    if (opts.initiator === "host") {
      this.state = "local-init";
      this.pending = P_REQUEST;
      // From now, not from when REQUEST leaves: a guest that posts no RX buffer must not hold the client forever.
      this.deadline = this.now() + this.requestTimeoutMs;
    } else {
      this.state = "peer-init";
      this.pending = P_RESPONSE;
      this.deadline = undefined;
    }
  }

  /** Free space the guest has for our data (§5.10.6.3 peer_free), never negative. */
  peerCredit(): number {
    const inFlight = u32(this.txCnt - this.peerFwdCnt);
    return inFlight >= this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  /** Host-bound bytes held because the host stream has not taken them yet. */
  get bufferedBytes(): number {
    return this.txBufBytes;
  }

  /** The fwd_cnt we advertise (bytes the host stream has taken). */
  get forwardedBytes(): number {
    return this.fwdCnt;
  }

  private get canSendData(): boolean {
    return this.state === "established" && (this.peerShutdown & VSOCK_SHUTDOWN_RCV) === 0;
  }

  hasPendingRx(): boolean {
    if (this.state === "closed") return false;
    if (this.pending !== 0) return true;
    // Data to send: with credit, an RW; without, one CREDIT_REQUEST (§5.10.6.3).
    return this.hostReadable && this.canSendData && (this.peerCredit() > 0 || !this.creditRequested);
  }

  /** poll(2) interest for the host stream, as (readable, writable). */
  interest(): { readable: boolean; writable: boolean } {
    const live = !this.streamClosed && (this.state === "established" || this.state === "local-init" || this.state === "peer-init");
    return {
      // Only once data can flow, and only while we do not already know there is data to read.
      readable: live && this.canSendData && !this.hostReadable && !this.hostHup,
      writable: live && this.txBufBytes > 0,
    };
  }

  /** Tells the stream what to poll for, when that changed. */
  syncInterest(): void {
    if (this.streamClosed) return;
    const i = this.interest();
    const code = (i.readable ? 1 : 0) | (i.writable ? 2 : 0);
    if (code === this.lastInterest) return;
    this.lastInterest = code;
    this.stream.setInterest(i.readable, i.writable);
  }

  /** Resets the connection: RST to the guest, host stream closed, held bytes dropped. */
  kill(reason: KillReason): void {
    this.endWithRst(reason);
  }

  /** RST to the guest: a failure when `reason` is given, the clean end of a flow otherwise. */
  private endWithRst(reason: KillReason | undefined): void {
    if (this.state === "closed" || this.state === "killed") return;
    this.killReason = reason;
    this.state = "killed";
    this.pending = P_RST;
    this.deadline = undefined;
    this.dropHostSide();
  }

  /** The guest reset the connection (or it is being forgotten): close the host side, owe nothing. */
  close(): void {
    this.state = "closed";
    this.pending = 0;
    this.deadline = undefined;
    this.dropHostSide();
  }

  private dropHostSide(): void {
    this.txBuf.length = 0;
    this.txBufBytes = 0;
    this.hostReadable = false;
    if (!this.streamClosed) {
      this.streamClosed = true;
      this.stream.close();
    }
  }

  /** Deadline passed: a REQUEST never answered, or a SHUTDOWN never followed by RST. */
  expire(): void {
    if (this.state === "local-init" || this.state === "local-closed" || this.state === "established") this.kill("timeout");
  }

  /** A guest packet for this connection (never RST: the muxer handles that). */
  guestPacket(hdr: VsockHeader, payload: Uint8Array): void {
    if (this.state === "closed" || this.state === "killed") return;
    // Every packet of a stream carries valid credit information. §5.10.6.3
    this.peerBufAlloc = hdr.bufAlloc;
    this.peerFwdCnt = hdr.fwdCnt;
    // Ask again only after credit came back: a guest whose app is not reading answers a
    // CREDIT_REQUEST with no credit, and asking again would make the two talk forever.
    if (this.peerCredit() > 0) this.creditRequested = false;
    switch (hdr.op) {
      case VSOCK_OP_RESPONSE:
        if (this.state !== "local-init") return this.kill("protocol");
        this.established();
        return;
      case VSOCK_OP_RW:
        return this.guestData(payload);
      case VSOCK_OP_CREDIT_UPDATE:
        return; // the credit above is all it says
      case VSOCK_OP_CREDIT_REQUEST:
        // §5.10.6.3: "The reply to this query is a VIRTIO_VSOCK_OP_CREDIT_UPDATE packet."
        if (this.state === "established" || this.state === "local-closed") this.pending |= P_CREDIT_UPDATE;
        return;
      case VSOCK_OP_SHUTDOWN:
        return this.guestShutdown(hdr.flags);
      default:
        // A second REQUEST on a live flow, INVALID, or an op this version does not know.
        return this.kill("protocol");
    }
  }

  private established(): void {
    this.state = "established";
    this.deadline = undefined;
    if (this.initiator === "host") {
      // Firecracker's acknowledgement to the host client. docs/vsock.md "Host-Initiated Connections"
      const ok = new TextEncoder().encode(`OK ${this.localPort}\n`);
      const n = this.safeWrite(ok);
      if (n !== ok.byteLength) this.kill("ok-write");
    }
  }

  private guestData(payload: Uint8Array): void {
    if (this.state === "local-closed") return; // the host end is gone: the guest will see our SHUTDOWN
    if (this.state !== "established" || (this.peerShutdown & VSOCK_SHUTDOWN_SEND) !== 0) return this.kill("protocol");
    const len = payload.byteLength;
    if (len === 0) return;
    // The guest may have at most bufAlloc bytes beyond the fwd_cnt it last saw from us. §5.10.6.3
    if (u32(this.rxCnt - this.lastFwdCntSent) + len > this.bufAlloc) return this.kill("credit-overrun");
    this.rxCnt = u32(this.rxCnt + len);
    let rest = payload;
    if (this.txBufBytes === 0) {
      const n = this.safeWrite(payload);
      if (n === "closed") return this.kill("host-write");
      this.fwdCnt = u32(this.fwdCnt + n);
      rest = payload.subarray(n);
    }
    if (rest.byteLength > 0) {
      this.txBuf.push(rest);
      this.txBufBytes += rest.byteLength;
    }
    this.checkCreditUpdate();
  }

  private guestShutdown(flags: number): void {
    this.peerShutdown |= flags & VSOCK_SHUTDOWN_BOTH;
    if (this.state === "local-closed") {
      // Both sides are done: end it now. §5.10.6.5 clean disconnect
      return this.endWithRst(undefined);
    }
    if (this.state !== "established") return this.kill("protocol");
    if ((this.peerShutdown & VSOCK_SHUTDOWN_RCV) !== 0) this.hostReadable = false;
    if (this.peerShutdown === VSOCK_SHUTDOWN_BOTH) {
      // The peer will neither send nor receive: answer with RST once its data reached the host. §5.10.6.5
      if (this.txBufBytes === 0) this.endWithRst(undefined);
      else this.deadline = this.now() + this.shutdownTimeoutMs;
    }
  }

  hostEvent(ev: HostStreamEvent): void {
    if (this.streamClosed || this.state === "closed" || this.state === "killed") return;
    switch (ev) {
      case "readable":
        this.hostReadable = true;
        if (this.canSendData && this.peerCredit() === 0) this.askCredit();
        return;
      case "writable":
        return this.flush();
      case "closed":
        if (this.state === "local-init" || this.state === "peer-init") return this.kill("host-closed-early");
        if (this.state !== "established") return;
        this.hostHup = true;
        if (!this.canSendData) return this.hostEnded();
        // Deliver what the host wrote before it hung up; the read that finds the end sends SHUTDOWN.
        this.hostReadable = true;
        if (this.peerCredit() === 0) this.askCredit();
        return;
    }
  }

  private askCredit(): void {
    if (!this.creditRequested) {
      this.creditRequested = true;
      this.pending |= P_CREDIT_REQUEST;
    }
  }

  /** The host stream has ended: tell the guest we neither send nor receive any more. §5.10.6.5 */
  private hostEnded(): void {
    this.state = "local-closed";
    this.hostReadable = false;
    this.pending = (this.pending & P_CREDIT_UPDATE) | P_SHUTDOWN;
    this.deadline = this.now() + this.shutdownTimeoutMs;
    this.txBuf.length = 0;
    this.txBufBytes = 0;
    if (!this.streamClosed) {
      this.streamClosed = true;
      this.stream.close();
    }
  }

  private flush(): void {
    while (this.txBuf.length > 0) {
      const head = this.txBuf[0]!;
      const n = this.safeWrite(head);
      if (n === "closed") return this.kill("host-write");
      if (n === 0) break;
      this.fwdCnt = u32(this.fwdCnt + n);
      this.txBufBytes -= n;
      if (n === head.byteLength) this.txBuf.shift();
      else {
        this.txBuf[0] = head.subarray(n);
        break;
      }
    }
    if (this.txBufBytes === 0 && this.peerShutdown === VSOCK_SHUTDOWN_BOTH && this.state === "established") {
      return this.endWithRst(undefined);
    }
    this.checkCreditUpdate();
  }

  /** Proactive CREDIT_UPDATE when the guest's view of our free space got small. §5.10.6.3 */
  private checkCreditUpdate(): void {
    if (this.state !== "established" || this.fwdCnt === this.lastFwdCntSent) return;
    const guestViewFree = this.bufAlloc - u32(this.rxCnt - this.lastFwdCntSent);
    if (guestViewFree < this.creditUpdateThreshold) this.pending |= P_CREDIT_UPDATE;
  }

  private safeWrite(data: Uint8Array): number | "closed" {
    let n: number | "closed";
    try {
      n = this.stream.write(data);
    } catch {
      return "closed";
    }
    if (n === "closed") return n;
    // A stream that claims more than it was given, or a non-integer, is broken.
    if (!Number.isInteger(n) || n < 0 || n > data.byteLength) return "closed";
    return n;
  }

  private safeRead(max: number): Uint8Array | "closed" {
    let r: Uint8Array | "closed";
    try {
      r = this.stream.read(max);
    } catch {
      return "closed";
    }
    if (r === "closed") return r;
    return r.byteLength > max ? r.subarray(0, max) : r;
  }

  private header(op: number, len = 0, flags = 0): VsockHeader {
    return {
      srcCid: BigInt(VSOCK_HOST_CID),
      dstCid: BigInt(this.guestCid),
      srcPort: this.localPort,
      dstPort: this.peerPort,
      len,
      type: VSOCK_TYPE_STREAM,
      op,
      flags,
      bufAlloc: op === VSOCK_OP_RST ? 0 : this.bufAlloc,
      fwdCnt: op === VSOCK_OP_RST ? 0 : this.fwdCnt,
    };
  }

  private packet(op: number, payload: Uint8Array = new Uint8Array(0), flags = 0): VsockPacket {
    // Any packet carries our credit, so a pending CREDIT_UPDATE is answered by it. §5.10.6.3
    this.lastFwdCntSent = this.fwdCnt;
    this.pending &= ~P_CREDIT_UPDATE;
    return { hdr: this.header(op, payload.byteLength, flags), payload };
  }

  /**
   * The next packet for the guest, with at most `maxPayload` payload bytes (what the RX buffer
   * holds), or undefined when nothing can be sent now. RST ends the connection ("closed").
   */
  nextPacket(maxPayload: number): VsockPacket | undefined {
    if (this.state === "closed") return undefined;
    if ((this.pending & P_RST) !== 0) {
      this.pending = 0;
      this.state = "closed";
      return this.packet(VSOCK_OP_RST);
    }
    if ((this.pending & P_RESPONSE) !== 0) {
      this.pending &= ~P_RESPONSE;
      this.established(); // guest-initiated: nothing to write to the host stream
      return this.packet(VSOCK_OP_RESPONSE);
    }
    if ((this.pending & P_REQUEST) !== 0) {
      this.pending &= ~P_REQUEST;
      return this.packet(VSOCK_OP_REQUEST);
    }
    if ((this.pending & P_SHUTDOWN) !== 0) {
      this.pending &= ~P_SHUTDOWN;
      return this.packet(VSOCK_OP_SHUTDOWN, undefined, VSOCK_SHUTDOWN_BOTH);
    }
    if ((this.pending & P_CREDIT_REQUEST) !== 0) {
      this.pending &= ~P_CREDIT_REQUEST;
      return this.packet(VSOCK_OP_CREDIT_REQUEST);
    }
    if (this.hostReadable && this.canSendData && maxPayload > 0) {
      const credit = this.peerCredit();
      if (credit === 0) {
        this.askCredit();
        if ((this.pending & P_CREDIT_REQUEST) !== 0) return this.nextPacket(maxPayload);
      } else {
        const r = this.safeRead(Math.min(credit, maxPayload));
        if (r === "closed") {
          this.hostEnded();
          this.pending &= ~P_SHUTDOWN;
          return this.packet(VSOCK_OP_SHUTDOWN, undefined, VSOCK_SHUTDOWN_BOTH);
        }
        if (r.byteLength > 0) {
          this.txCnt = u32(this.txCnt + r.byteLength);
          return this.packet(VSOCK_OP_RW, r);
        }
        // Drained for now: poll for more. After a hang-up, an empty read is the end too.
        this.hostReadable = false;
        if (this.hostHup) {
          this.hostEnded();
          this.pending &= ~P_SHUTDOWN;
          return this.packet(VSOCK_OP_SHUTDOWN, undefined, VSOCK_SHUTDOWN_BOTH);
        }
      }
    }
    if ((this.pending & P_CREDIT_UPDATE) !== 0) return this.packet(VSOCK_OP_CREDIT_UPDATE);
    return undefined;
  }
}
