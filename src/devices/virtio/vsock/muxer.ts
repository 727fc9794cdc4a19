// The vsock connection multiplexer, in Firecracker's hybrid Unix-socket model (Firecracker
// docs/vsock.md; facts from src/vmm/src/devices/virtio/vsock/unix/muxer.rs, our own code):
//
//  - host-initiated: the runtime accepts a client on `uds_path` and hands its stream to
//    `acceptHost`. The client writes `CONNECT <port>\n`; we pick a host port in [2^30, 2^31),
//    send the guest a REQUEST to <port>, and on its RESPONSE write `OK <hostport>\n` to the client.
//    An RST, or no answer before the deadline, closes the client; so does a bad CONNECT line.
//  - guest-initiated: a guest REQUEST to (host CID 2, port P) makes us connect to `<uds_path>_P`
//    through the injected connector: connected -> RESPONSE, refused -> RST.
//  - any other packet for a flow we do not know gets RST (an RST itself gets nothing); packets
//    not from the guest's CID or not to the host's are dropped.
//
// Pure: packets in (`sendPkt`) and out (`recvPkt`), host stream events through HostStream.onEvent,
// time through `now`. The runtime calls `sweep()` at `nextDeadline()`.
//
// Bounded: at most maxConnections connections plus clients still writing CONNECT; per connection
// at most bufAlloc held host-bound bytes; at most RST_BACKLOG_MAX RSTs for unknown flows waiting
// for RX buffers (when full, `rxBacklogFull()` tells the device to stop taking TX packets until the
// guest gives RX buffers: virtio 1.2 §5.10.6.1, "further processing is not possible until the other
// side processes the virtqueue it has neglected").

import { VsockConnection, type HostStream, type HostStreamEvent } from "./connection.js";
import {
  VSOCK_HOST_CID,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RST,
  VSOCK_TYPE_STREAM,
  validateGuestCid,
  type VsockHeader,
  type VsockPacket,
} from "./packet.js";

export type { HostStream, HostStreamEvent } from "./connection.js";

/** Connects to host Unix sockets for guest-initiated connections. */
export interface HostConnector {
  /**
   * Connects to the Unix stream socket at `path` (non-blocking; a Unix-socket connect completes
   * or fails at once): the stream, or undefined when nothing listens there (ENOENT,
   * ECONNREFUSED, EAGAIN on a full backlog).
   */
  connect(path: string): HostStream | undefined;
}

export type VsockStat =
  | "tx-packets" // guest packets taken from TX
  | "rx-packets" // packets given to the guest
  | "tx-bytes" // payload bytes from the guest
  | "rx-bytes" // payload bytes to the guest
  | "malformed" // a chain answered with used length 0
  | "dropped" // a packet with the wrong src_cid/dst_cid
  | "rst-unknown" // RST for a packet of no known flow (or an unknown type)
  | "conn-added"
  | "conn-removed"
  | "conn-killed" // a flow reset for a failure (KillReason)
  | "credit-overrun" // of those, guests that sent past our credit
  | "connect-refused" // a guest REQUEST nobody on the host answered
  | "connect-bad-line" // a host client that did not send a valid CONNECT line
  | "conn-limit" // a connection refused because maxConnections are open
  | "host-error"; // a host stream or connector threw

export interface VsockStats {
  add(stat: VsockStat, n: number): void;
}

/** Connections open at once. Firecracker's MAX_CONNECTIONS (vsock/unix/mod.rs). */
export const VSOCK_MAX_CONNECTIONS_DEFAULT = 1023;
/** buf_alloc we advertise per connection. Firecracker's CONN_TX_BUF_SIZE (vsock/csm/mod.rs). */
export const VSOCK_BUF_ALLOC_DEFAULT = 64 * 1024;
/** Proactive CREDIT_UPDATE below this free space. Firecracker's CONN_CREDIT_UPDATE_THRESHOLD. */
export const VSOCK_CREDIT_UPDATE_THRESHOLD_DEFAULT = 4 * 1024;
/** REQUEST without RESPONSE, SHUTDOWN without RST. Firecracker's CONN_REQUEST/SHUTDOWN_TIMEOUT_MS. */
export const VSOCK_REQUEST_TIMEOUT_MS_DEFAULT = 2000;
export const VSOCK_SHUTDOWN_TIMEOUT_MS_DEFAULT = 2000;
/** RSTs for unknown flows waiting for an RX buffer. Firecracker's MUXER_RXQ_SIZE (vsock/unix/mod.rs). */
export const RST_BACKLOG_MAX = 256;
/**
 * A CONNECT line is at most 32 bytes with its "\n" (Firecracker's read buffer in
 * read_local_stream_port); "CONNECT 4294967295\n" is 19.
 */
export const CONNECT_LINE_MAX = 32;
/** The shortest valid line, "CONNECT 0\n": read this much before going byte by byte, so nothing after "\n" is taken. */
const CONNECT_LINE_MIN = 10;
/** Host ports for host-initiated flows, allocated round robin in [2^30, 2^31). Firecracker muxer.rs allocate_local_port. */
const LOCAL_PORT_BASE = 2 ** 30;

export interface VsockMuxerOptions {
  guestCid: number;
  /** The host socket path; guest-initiated flows to port P go to `${udsPath}_${P}`. */
  udsPath: string;
  connector: HostConnector;
  stats?: VsockStats;
  /** Milliseconds, monotonic; default performance.now. */
  now?: () => number;
  maxConnections?: number;
  bufAlloc?: number;
  creditUpdateThreshold?: number;
  requestTimeoutMs?: number;
  shutdownTimeoutMs?: number;
}

interface PendingClient {
  kind: "client";
  stream: HostStream;
  line: number[];
  deadline: number;
}

interface ConnEntry {
  kind: "conn";
  conn: VsockConnection;
}

const noStats: VsockStats = { add: () => {} };
const keyOf = (localPort: number, peerPort: number): string => `${localPort}:${peerPort}`;

export class VsockMuxer {
  readonly guestCid: number;
  readonly udsPath: string;
  private readonly guestCidBig: bigint;
  private readonly connector: HostConnector;
  private readonly stats: VsockStats;
  private readonly now: () => number;
  private readonly maxConnections: number;
  private readonly bufAlloc: number;
  private readonly creditUpdateThreshold: number;
  private readonly requestTimeoutMs: number;
  private readonly shutdownTimeoutMs: number;

  private readonly conns = new Map<string, VsockConnection>();
  private readonly streams = new Map<HostStream, PendingClient | ConnEntry>();
  /** Connections with something to say, in the order they get RX buffers (round robin). */
  private readonly rxq = new Set<string>();
  /** RSTs owed for packets of no known flow: [localPort, peerPort]. */
  private readonly rstq: Array<[number, number]> = [];
  private readonly localPorts = new Set<number>();
  /** Connections whose kill was counted in stats (a kill is counted once). */
  private readonly killsCounted = new WeakSet<VsockConnection>();
  private localPortLast = LOCAL_PORT_BASE - 1;

  constructor(opts: VsockMuxerOptions) {
    this.guestCid = validateGuestCid(opts.guestCid);
    this.guestCidBig = BigInt(this.guestCid);
    this.udsPath = opts.udsPath;
    this.connector = opts.connector;
    this.stats = opts.stats ?? noStats;
    this.now = opts.now ?? (() => performance.now());
    const positive = (name: string, v: number | undefined, def: number, max = Number.MAX_SAFE_INTEGER): number => {
      const x = v ?? def;
      if (!Number.isSafeInteger(x) || x < 1 || x > max) throw new RangeError(`${name} must be an integer in [1, ${max}], not ${x}`);
      return x;
    };
    this.maxConnections = positive("maxConnections", opts.maxConnections, VSOCK_MAX_CONNECTIONS_DEFAULT, 2 ** 30);
    // buf_alloc is a le32 on the wire. §5.10.6
    this.bufAlloc = positive("bufAlloc", opts.bufAlloc, VSOCK_BUF_ALLOC_DEFAULT, 0xffffffff);
    this.creditUpdateThreshold = positive("creditUpdateThreshold", opts.creditUpdateThreshold, VSOCK_CREDIT_UPDATE_THRESHOLD_DEFAULT, 0xffffffff);
    this.requestTimeoutMs = positive("requestTimeoutMs", opts.requestTimeoutMs, VSOCK_REQUEST_TIMEOUT_MS_DEFAULT);
    this.shutdownTimeoutMs = positive("shutdownTimeoutMs", opts.shutdownTimeoutMs, VSOCK_SHUTDOWN_TIMEOUT_MS_DEFAULT);
  }

  /** Open connections (any state but forgotten). */
  get connectionCount(): number {
    return this.conns.size;
  }
  /** Host clients that have not finished their CONNECT line. */
  get pendingClientCount(): number {
    return this.streams.size - this.conns.size;
  }
  /** Host ports held by host-initiated connections. */
  get allocatedPortCount(): number {
    return this.localPorts.size;
  }
  connection(localPort: number, peerPort: number): VsockConnection | undefined {
    return this.conns.get(keyOf(localPort, peerPort));
  }

  // ---- host side ----

  /** A client connected to `uds_path` (the runtime accepted it). It must now write `CONNECT <port>\n`. */
  acceptHost(stream: HostStream): void {
    if (this.streams.size >= this.maxConnections) {
      this.stats.add("conn-limit", 1);
      this.closeQuietly(stream);
      return;
    }
    this.streams.set(stream, { kind: "client", stream, line: [], deadline: this.now() + this.requestTimeoutMs });
    stream.onEvent((ev) => this.hostEvent(stream, ev));
    stream.setInterest(true, false);
  }

  private hostEvent(stream: HostStream, ev: HostStreamEvent): void {
    const entry = this.streams.get(stream);
    if (entry === undefined) return; // an event for a stream we already let go
    if (entry.kind === "client") return this.clientEvent(entry, ev);
    try {
      entry.conn.hostEvent(ev);
    } catch {
      this.stats.add("host-error", 1);
      entry.conn.kill("host-write");
    }
    this.touch(entry.conn);
  }

  private dropClient(c: PendingClient, stat: VsockStat | undefined): void {
    if (stat !== undefined) this.stats.add(stat, 1);
    this.streams.delete(c.stream);
    this.closeQuietly(c.stream);
  }

  private closeQuietly(stream: HostStream): void {
    try {
      stream.close();
    } catch {
      this.stats.add("host-error", 1);
    }
  }

  private clientEvent(c: PendingClient, ev: HostStreamEvent): void {
    if (ev !== "readable") {
      if (ev === "closed") this.dropClient(c, "connect-bad-line");
      return;
    }
    for (;;) {
      const want = c.line.length < CONNECT_LINE_MIN ? CONNECT_LINE_MIN - c.line.length : 1;
      let got: Uint8Array | "closed";
      try {
        got = c.stream.read(want);
      } catch {
        this.stats.add("host-error", 1);
        got = "closed";
      }
      if (got === "closed") return this.dropClient(c, "connect-bad-line");
      if (got.byteLength === 0) return; // the rest has not arrived yet
      for (const b of got.subarray(0, want)) c.line.push(b);
      const nl = c.line.indexOf(0x0a);
      if (nl >= 0) {
        // A newline before the end means a line shorter than any valid one, and bytes after it read.
        const port = nl === c.line.length - 1 ? parseConnectLine(c.line) : undefined;
        if (port === undefined) return this.dropClient(c, "connect-bad-line");
        return this.hostConnect(c, port);
      }
      if (c.line.length >= CONNECT_LINE_MAX) return this.dropClient(c, "connect-bad-line");
    }
  }

  private hostConnect(c: PendingClient, peerPort: number): void {
    this.streams.delete(c.stream);
    if (this.conns.size >= this.maxConnections) {
      this.stats.add("conn-limit", 1);
      this.closeQuietly(c.stream);
      return;
    }
    const localPort = this.allocateLocalPort(peerPort);
    const conn = this.newConnection(c.stream, "host", localPort, peerPort);
    this.localPorts.add(localPort);
    this.addConnection(conn);
  }

  private allocateLocalPort(peerPort: number): number {
    // Round robin in [2^30, 2^31), skipping ports still held, and the flow key of a
    // guest-initiated connection to a host port in that range; at most maxConnections are.
    for (;;) {
      this.localPortLast = this.localPortLast + 1 >= 2 * LOCAL_PORT_BASE ? LOCAL_PORT_BASE : this.localPortLast + 1;
      const p = this.localPortLast;
      if (!this.localPorts.has(p) && !this.conns.has(keyOf(p, peerPort))) return p;
    }
  }

  private newConnection(stream: HostStream, initiator: "host" | "guest", localPort: number, peerPort: number, peer?: VsockHeader): VsockConnection {
    return new VsockConnection({
      guestCid: this.guestCid,
      localPort,
      peerPort,
      stream,
      initiator,
      bufAlloc: this.bufAlloc,
      creditUpdateThreshold: this.creditUpdateThreshold,
      requestTimeoutMs: this.requestTimeoutMs,
      shutdownTimeoutMs: this.shutdownTimeoutMs,
      now: this.now,
      peerBufAlloc: peer?.bufAlloc,
      peerFwdCnt: peer?.fwdCnt,
    });
  }

  private addConnection(conn: VsockConnection): void {
    const key = keyOf(conn.localPort, conn.peerPort);
    if (this.conns.has(key)) {
      // Callers rule this out (guest REQUESTs for a known flow go to it; host ports skip used keys).
      throw new Error(`vsock muxer: flow ${key} is already open`);
    }
    this.conns.set(key, conn);
    const entry: ConnEntry = { kind: "conn", conn };
    this.streams.set(conn.stream, entry);
    this.stats.add("conn-added", 1);
    // onEvent may already have been registered (a host client): the handler looks the stream up each time.
    if (conn.initiator === "guest") conn.stream.onEvent((ev) => this.hostEvent(conn.stream, ev));
    this.touch(conn);
  }

  /** After any change to a connection: queue it for RX, update its poll interest, forget it when done. */
  private touch(conn: VsockConnection): void {
    const key = keyOf(conn.localPort, conn.peerPort);
    if (conn.killReason !== undefined && !this.killsCounted.has(conn)) {
      this.killsCounted.add(conn);
      this.stats.add("conn-killed", 1);
      if (conn.killReason === "credit-overrun") this.stats.add("credit-overrun", 1);
    }
    if (conn.state === "closed") return this.removeConnection(key, conn);
    if (conn.hasPendingRx()) this.rxq.add(key);
    try {
      conn.syncInterest();
    } catch {
      this.stats.add("host-error", 1);
    }
  }

  private removeConnection(key: string, conn: VsockConnection): void {
    if (this.conns.get(key) !== conn) return;
    conn.close();
    this.conns.delete(key);
    this.rxq.delete(key);
    this.streams.delete(conn.stream);
    if (conn.initiator === "host") this.localPorts.delete(conn.localPort);
    this.stats.add("conn-removed", 1);
  }

  // ---- guest side ----

  /** A packet the guest sent (from the TX queue). Never throws for anything the guest wrote. */
  sendPkt(pkt: VsockPacket): void {
    const { hdr } = pkt;
    // We only carry guest <-> host traffic, and the guest must use its own CID. §5.10.6.4
    if (hdr.srcCid !== this.guestCidBig || hdr.dstCid !== BigInt(VSOCK_HOST_CID)) {
      this.stats.add("dropped", 1);
      return;
    }
    this.stats.add("tx-packets", 1);
    this.stats.add("tx-bytes", pkt.payload.byteLength);
    const isRst = hdr.op === VSOCK_OP_RST;
    // "A VIRTIO_VSOCK_OP_RST reply MUST be sent if a packet is received with an unknown type value." §5.10.6.4
    if (hdr.type !== VSOCK_TYPE_STREAM) {
      if (!isRst) this.enqueueRst(hdr.dstPort, hdr.srcPort);
      return;
    }
    const key = keyOf(hdr.dstPort, hdr.srcPort);
    const conn = this.conns.get(key);
    if (conn === undefined) {
      if (hdr.op === VSOCK_OP_REQUEST) return this.guestConnect(hdr);
      if (!isRst) this.enqueueRst(hdr.dstPort, hdr.srcPort);
      return;
    }
    if (isRst) return this.removeConnection(key, conn);
    conn.guestPacket(hdr, pkt.payload);
    this.touch(conn);
  }


  private guestConnect(hdr: VsockHeader): void {
    if (this.streams.size >= this.maxConnections) {
      this.stats.add("conn-limit", 1);
      return this.enqueueRst(hdr.dstPort, hdr.srcPort);
    }
    let stream: HostStream | undefined;
    try {
      stream = this.connector.connect(`${this.udsPath}_${hdr.dstPort}`);
    } catch {
      this.stats.add("host-error", 1);
      stream = undefined;
    }
    if (stream === undefined) {
      this.stats.add("connect-refused", 1);
      return this.enqueueRst(hdr.dstPort, hdr.srcPort);
    }
    this.addConnection(this.newConnection(stream, "guest", hdr.dstPort, hdr.srcPort, hdr));
  }

  private enqueueRst(localPort: number, peerPort: number): void {
    this.stats.add("rst-unknown", 1);
    // processTx stops before this can overflow (rxBacklogFull); drop rather than grow if it ever did.
    if (this.rstq.length < RST_BACKLOG_MAX) this.rstq.push([localPort, peerPort]);
  }

  /** True when TX processing must wait for RX buffers (the RST backlog is full). */
  rxBacklogFull(): boolean {
    return this.rstq.length >= RST_BACKLOG_MAX;
  }

  hasPendingRx(): boolean {
    return this.rstq.length > 0 || this.rxq.size > 0;
  }

  /** The next packet for the guest, with at most `maxPayload` payload bytes, or undefined. */
  recvPkt(maxPayload: number): VsockPacket | undefined {
    const rst = this.rstq.shift();
    if (rst !== undefined) return this.delivered(rstPacket(this.guestCid, rst[0], rst[1]));
    // A snapshot: touch() re-adds a connection at the back, which a live Set iteration would visit again.
    for (const key of [...this.rxq]) {
      const conn = this.conns.get(key);
      this.rxq.delete(key);
      if (conn === undefined) continue;
      let pkt: VsockPacket | undefined;
      try {
        pkt = conn.nextPacket(maxPayload);
      } catch {
        this.stats.add("host-error", 1);
        conn.kill("host-write");
        pkt = conn.nextPacket(maxPayload);
      }
      // Re-queued at the back: one connection cannot starve the others of RX buffers.
      this.touch(conn);
      if (pkt !== undefined) return this.delivered(pkt);
    }
    return undefined;
  }

  private delivered(pkt: VsockPacket): VsockPacket {
    this.stats.add("rx-packets", 1);
    this.stats.add("rx-bytes", pkt.payload.byteLength);
    return pkt;
  }

  // ---- time ----

  /** The earliest deadline of a connection or a pending client (ms on `now`'s clock), if any. */
  nextDeadline(): number | undefined {
    let min: number | undefined;
    for (const e of this.streams.values()) {
      const d = e.kind === "client" ? e.deadline : e.conn.deadline;
      if (d !== undefined && (min === undefined || d < min)) min = d;
    }
    return min;
  }

  /** Expires what is past its deadline: unanswered REQUESTs, unfinished SHUTDOWNs, silent clients. */
  sweep(): void {
    const t = this.now();
    for (const e of [...this.streams.values()]) {
      if (e.kind === "client") {
        if (e.deadline <= t) this.dropClient(e, "connect-bad-line");
        continue;
      }
      const c = e.conn;
      if (c.deadline !== undefined && c.deadline <= t) {
        c.expire();
        this.touch(c);
      }
    }
  }

  /**
   * Forgets every connection and client, closing their host streams, and owes the guest nothing:
   * what follows a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, after which the driver drops its
   * connections itself (virtio 1.2 §5.10.6.7).
   */
  reset(): void {
    for (const e of [...this.streams.values()]) {
      if (e.kind === "client") this.dropClient(e, undefined);
      else this.removeConnection(keyOf(e.conn.localPort, e.conn.peerPort), e.conn);
    }
    this.rstq.length = 0;
    this.rxq.clear();
  }
}

/** RST for a flow we do not know: no credit to advertise (Firecracker sends buf_alloc 0, fwd_cnt 0 too). */
export function rstPacket(guestCid: number, localPort: number, peerPort: number): VsockPacket {
  return {
    hdr: {
      srcCid: BigInt(VSOCK_HOST_CID),
      dstCid: BigInt(guestCid),
      srcPort: localPort,
      dstPort: peerPort,
      len: 0,
      type: VSOCK_TYPE_STREAM,
      op: VSOCK_OP_RST,
      flags: 0,
      bufAlloc: 0,
      fwdCnt: 0,
    },
    payload: new Uint8Array(0),
  };
}

/**
 * The port of a `CONNECT <port>\n` line (bytes including the "\n"), or undefined. Like
 * Firecracker, the verb is matched case-insensitively and words are split on whitespace; the
 * port is decimal u32; nothing may follow it.
 */
export function parseConnectLine(line: number[] | Uint8Array): number | undefined {
  let text = "";
  for (const b of line) {
    if (b > 0x7e || (b < 0x20 && b !== 0x0a && b !== 0x09 && b !== 0x0d)) return undefined;
    text += String.fromCharCode(b);
  }
  if (!text.endsWith("\n")) return undefined;
  const words = text.trim().split(/[ \t\r\n]+/);
  if (words.length !== 2 || words[0]!.toLowerCase() !== "connect") return undefined;
  const p = words[1]!;
  if (!/^[0-9]{1,10}$/.test(p)) return undefined;
  const port = Number(p);
  return port <= 0xffffffff ? port : undefined;
}
