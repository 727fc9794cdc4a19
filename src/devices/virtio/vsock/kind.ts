// virtio-vsock as a device kind (device-kind.ts), in Firecracker's hybrid model (Firecracker
// docs/vsock.md): the guest's AF_VSOCK stream sockets end at host AF_UNIX sockets.
//  - host-initiated: a host program connects to `uds_path` (the socket this kind listens on) and
//    writes `CONNECT <port>\n`; the guest's listener on <port> answers, the program reads
//    `OK <hostport>\n`, then bytes flow;
//  - guest-initiated: a guest connect to (CID 2, port P) reaches whoever listens on `<uds_path>_P`.
//
// The VMM's thread opens the listening socket (so a bad path is a start-up error) and removes it
// when the card is released. The card worker owns everything else: it accepts clients on the
// listener, backs each flow's HostStream with a non-blocking Unix socket, connects guest-initiated
// flows, and drives the pure model (muxer.ts, device.ts) from the worker's poll loop.
// Every socket the worker opens is also written into a table shared with the VMM's thread, so
// release() closes what the worker left open (a worker that stopped, or died).

import { lstatSync, statSync, unlinkSync } from "node:fs";
import * as sys from "../../../sys/index.js";
import { DriveConfigError } from "../../../cards/blk-file.js";
import type { CardModel, ModelContext, VirtioDeviceKind } from "../device-kind.js";
import type { ProcessResult } from "../blk/device.js";
import { VsockDevice } from "./device.js";
import { VSOCK_MAX_CONNECTIONS_DEFAULT, VsockMuxer, type HostStream, type HostStreamEvent, type VsockStat, type VsockStats } from "./muxer.js";
import { VSOCK_MAX_PAYLOAD, VSOCK_RX_QUEUE, VSOCK_TX_QUEUE, validateGuestCid, vsockDeviceInfo } from "./packet.js";

/** The VM's vsock device (Firecracker's PUT /vsock body). */
export interface VsockConfig {
  /** vsock_id: Firecracker's optional (deprecated) name for the device; letters, digits, '_', '-'; at most 64. */
  id?: string;
  /** guest_cid: the guest's context id, in [3, 2^32 - 1) (virtio 1.2 §5.10.4). */
  guestCid: number;
  /** uds_path: where the card listens for host-initiated connections; guest-initiated ones go to `${udsPath}_${port}`. */
  udsPath: string;
}

interface VsockWorkerData {
  guestCid: number;
  udsPath: string;
  /** The listening socket (the VMM's thread owns it: the worker never closes it). */
  listenFd: number;
  /** BigInt64 counters: COUNTER_INDEX. */
  counters: SharedArrayBuffer;
  /** Int32 slots, -1 or a socket the worker has open (FD_SLOTS). */
  fds: SharedArrayBuffer;
}

/** Firecracker's vsock_id rule is a non-empty id; ours also keeps it printable and short, like iface_id. */
const VSOCK_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** listen(2) backlog for uds_path: what Rust's UnixListener (Firecracker's) asks for, and Linux's SOMAXCONN. */
const LISTEN_BACKLOG = 128;
/** Clients accepted per wake-up at most (the listener stays readable if more wait, so the next poll comes at once). */
const ACCEPT_PER_PASS = 64;
/** After accept(2) fails (EMFILE, ENFILE, ENOMEM), the listener is left alone this long, so a full fd table costs no busy loop. */
const ACCEPT_BACKOFF_MS = 100;
/**
 * Sockets open at once: the muxer holds at most maxConnections streams, and one more is open for
 * a moment when a client is accepted over the limit (acceptHost then closes it).
 */
const FD_SLOTS = VSOCK_MAX_CONNECTIONS_DEFAULT + 1;

// ---- counters shared with the VMM's thread (metricGroups) ----

/** One counter per muxer stat (exhaustive: a new VsockStat must get a slot), then the gauges. */
const STAT_INDEX: Record<VsockStat, number> = {
  "tx-packets": 0,
  "rx-packets": 1,
  "tx-bytes": 2,
  "rx-bytes": 3,
  malformed: 4,
  dropped: 5,
  "rst-unknown": 6,
  "conn-added": 7,
  "conn-removed": 8,
  "conn-killed": 9,
  "credit-overrun": 10,
  "connect-refused": 11,
  "connect-bad-line": 12,
  "conn-limit": 13,
  "host-error": 14,
};
const G_CONNECTIONS = 15; // open connections (muxer.connectionCount)
const G_PENDING_CLIENTS = 16; // host clients still writing CONNECT
const G_LOCAL_PORTS = 17; // host ports held by host-initiated connections
const G_SOCKETS = 18; // Unix sockets the worker has open
const COUNTERS = 19;

/** Each card's counters by the config it was opened with (the instance metricGroups is given). */
const countersOf = new WeakMap<VsockConfig, BigInt64Array>();

// ---- config, checked at the edge ----

function configError(name: string, what: string): DriveConfigError {
  return new DriveConfigError(`${name}: ${what}`);
}

/** Checks a vsock config; throws a DriveConfigError naming the problem. */
function checkConfig(c: VsockConfig, name = "vsock"): void {
  if (c === null || typeof c !== "object") throw configError(name, "the vsock config must be an object with guest_cid and uds_path");
  if (c.id !== undefined && (typeof c.id !== "string" || !VSOCK_ID.test(c.id))) {
    throw configError(name, `vsock_id "${String(c.id)}" must be 1-64 letters, digits, '_' or '-'`);
  }
  try {
    validateGuestCid(c.guestCid);
  } catch (e) {
    if (e instanceof RangeError) throw configError(name, e.message);
    throw e;
  }
  if (typeof c.udsPath !== "string" || c.udsPath.length === 0) throw configError(name, "uds_path must be a non-empty path");
  const bytes = Buffer.byteLength(c.udsPath);
  if (c.udsPath.includes("\0")) throw configError(name, `uds_path ${JSON.stringify(c.udsPath)} contains a NUL byte`);
  if (bytes > sys.UNIX_PATH_MAX_BYTES) {
    throw configError(name, `uds_path ${c.udsPath} is ${bytes} bytes; a Unix socket path holds at most ${sys.UNIX_PATH_MAX_BYTES} (sockaddr_un.sun_path)`);
  }
}

/**
 * Removes a stale socket file at `path` (one nobody listens on: a VMM that died). Anything else
 * at `path` — another kind of file, or a socket something listens on — is left alone and refused.
 */
function removeStaleSocket(path: string, name: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw configError(name, `cannot look at uds_path ${path}: ${(e as Error).message}`);
  }
  if (!st.isSocket()) throw configError(name, `uds_path ${path} exists and is not a socket; it is not removed (choose another path or remove it)`);
  let probe: number | null;
  try {
    probe = sys.unixConnect(path);
  } catch (e) {
    throw configError(name, `cannot tell whether the socket at uds_path ${path} is in use: ${(e as Error).message}`);
  }
  if (probe !== null) {
    sys.close(probe);
    throw configError(name, `uds_path ${path} is a socket another process listens on (another VM's?); choose another path`);
  }
  unlinkSync(path);
}

// ---- the worker side ----

/** Worker side: the muxer and device model, host streams over the card's Unix sockets. */
export function createModel(ctx: ModelContext<VsockWorkerData>): CardModel {
  const d = ctx.data;
  const counters = new BigInt64Array(d.counters, 0, COUNTERS);
  const fdTable = new Int32Array(d.fds);
  const freeSlots: number[] = [];
  for (let i = fdTable.length - 1; i >= 0; i--) freeSlots.push(i);
  const streams = new Map<number, SocketStream>();
  // One read buffer: a read copies out what it got, so nothing keeps a view into it.
  const scratch = new Uint8Array(VSOCK_MAX_PAYLOAD);

  const stats: VsockStats = {
    add(stat, n) {
      Atomics.add(counters, STAT_INDEX[stat], BigInt(n));
      // The card's generic counters: one request per packet either way (each comes with one bytes stat).
      if (stat === "tx-bytes" || stat === "rx-bytes") ctx.stats.request(n);
      else if (stat === "malformed" || stat === "host-error") ctx.stats.error();
    },
  };

  /** A connected, non-blocking Unix socket as the muxer's HostStream (level-triggered, like poll(2)). */
  class SocketStream implements HostStream {
    wantRead = false;
    wantWrite = false;
    /** "closed" was delivered for a hang-up: poll(2) would report it again on every call. */
    hupDelivered = false;
    closed = false;
    private handler: ((ev: HostStreamEvent) => void) | undefined;

    constructor(
      readonly fd: number,
      private readonly slot: number,
    ) {}

    write(data: Uint8Array): number | "closed" {
      try {
        return sys.sockWrite(this.fd, data) ?? 0;
      } catch (e) {
        if (e instanceof sys.SysError && (e.code === "EPIPE" || e.code === "ECONNRESET")) return "closed";
        throw e;
      }
    }

    read(max: number): Uint8Array | "closed" {
      if (max <= 0) return new Uint8Array(0);
      let n: number | null;
      try {
        n = sys.sockRead(this.fd, scratch.subarray(0, Math.min(max, scratch.byteLength)));
      } catch (e) {
        if (e instanceof sys.SysError && e.code === "ECONNRESET") return "closed";
        throw e;
      }
      if (n === null) return new Uint8Array(0);
      if (n === 0) return "closed";
      return scratch.slice(0, n);
    }

    close(): void {
      if (this.closed) return;
      this.closed = true;
      streams.delete(this.fd);
      // The slot first: the VMM's thread must never close this number after we did (it may be reused).
      Atomics.store(fdTable, this.slot, -1);
      freeSlots.push(this.slot);
      sys.close(this.fd);
    }

    setInterest(readable: boolean, writable: boolean): void {
      this.wantRead = readable;
      this.wantWrite = writable;
    }

    onEvent(handler: (ev: HostStreamEvent) => void): void {
      this.handler = handler;
    }

    /** Delivers what poll(2) said, as the muxer's events; a handler may close the stream on the way. */
    ready(r: sys.PollReady): void {
      // After a hang-up or an error, a read or write reports what happened: let the owner try.
      if (!this.closed && this.wantRead && (r.readable || r.hangup)) this.handler?.("readable");
      if (!this.closed && this.wantWrite && (r.writable || r.hangup)) this.handler?.("writable");
      if (!this.closed && r.hangup && !this.hupDelivered) {
        this.hupDelivered = true;
        this.handler?.("closed");
      }
    }
  }

  /** Takes a socket into a stream, or closes it when the table is full (never expected: the muxer bounds its streams). */
  const adopt = (fd: number): SocketStream | undefined => {
    const slot = freeSlots.pop();
    if (slot === undefined) {
      sys.close(fd);
      stats.add("host-error", 1);
      return undefined;
    }
    Atomics.store(fdTable, slot, fd);
    const s = new SocketStream(fd, slot);
    streams.set(fd, s);
    return s;
  };

  const muxer = new VsockMuxer({
    guestCid: d.guestCid,
    udsPath: d.udsPath,
    stats,
    connector: {
      connect(path) {
        const fd = sys.unixConnect(path);
        return fd === null ? undefined : adopt(fd);
      },
    },
  });
  const device = new VsockDevice(ctx.mem, muxer, stats);

  let resetSeen = ctx.resetCount();
  let listenerReady = false;
  let acceptPausedUntil = 0;
  /** The last RX pass found packets for the guest and no buffer: the driver's next RX kick brings us back. */
  let rxStalled = false;

  const publishGauges = (): void => {
    Atomics.store(counters, G_CONNECTIONS, BigInt(muxer.connectionCount));
    Atomics.store(counters, G_PENDING_CLIENTS, BigInt(muxer.pendingClientCount));
    Atomics.store(counters, G_LOCAL_PORTS, BigInt(muxer.allocatedPortCount));
    Atomics.store(counters, G_SOCKETS, BigInt(streams.size));
  };

  /** A device reset (virtio 1.2 §2.4) ends every flow: the driver starts over with no sockets. */
  const checkReset = (): void => {
    const r = ctx.resetCount();
    if (r === resetSeen) return;
    resetSeen = r;
    muxer.reset();
    rxStalled = false;
  };

  const acceptClients = (): void => {
    for (let i = 0; i < ACCEPT_PER_PASS; i++) {
      let fd: number | null;
      try {
        fd = sys.unixAccept(d.listenFd);
      } catch {
        stats.add("host-error", 1);
        acceptPausedUntil = performance.now() + ACCEPT_BACKOFF_MS;
        return;
      }
      if (fd === null) return;
      const s = adopt(fd);
      if (s !== undefined) muxer.acceptHost(s);
    }
  };

  /** idle, or throttled until the next muxer deadline (or the end of an accept back-off), so the worker's poll wakes then. */
  const timed = (interrupt: boolean): ProcessResult => {
    const now = performance.now();
    let at = muxer.nextDeadline();
    if (acceptPausedUntil > now) at = at === undefined ? acceptPausedUntil : Math.min(at, acceptPausedUntil);
    if (at === undefined) return { kind: "idle", interrupt };
    return { kind: "throttled", interrupt, waitMs: Math.max(1, Math.ceil(at - now)) };
  };

  return {
    pollFds() {
      const out: sys.PollInterest[] = [];
      if (performance.now() >= acceptPausedUntil) out.push({ fd: d.listenFd, read: true });
      for (const s of streams.values()) {
        // A stream with no interest is still polled for a hang-up, until one was delivered.
        if (s.wantRead || s.wantWrite || !s.hupDelivered) out.push({ fd: s.fd, read: s.wantRead, write: s.wantWrite });
      }
      return out;
    },
    onReady(r) {
      // Accepting waits for beforePass: no new socket can take the number of one a handler closes
      // while this wake-up's poll results are still being delivered.
      if (r.fd === d.listenFd) listenerReady = true;
      else streams.get(r.fd)?.ready(r);
    },
    beforePass() {
      checkReset();
      if (listenerReady) {
        listenerReady = false;
        acceptClients();
      }
      const due = muxer.nextDeadline();
      if (due !== undefined && due <= performance.now()) muxer.sweep();
      publishGauges();
    },
    process(q, index) {
      checkReset();
      if (index === VSOCK_RX_QUEUE) {
        const r = device.fillRx(q);
        rxStalled = r.stalled;
        publishGauges();
        return timed(r.interrupt);
      }
      if (index === VSOCK_TX_QUEUE) {
        const before = q.pos.lastAvail;
        const r = device.processTx(q);
        publishGauges();
        // RX was served before TX in this pass: what TX made owed to the guest (RESPONSE, RST,
        // CREDIT_UPDATE, or room after a full RST backlog) goes out in a pass that comes at once —
        // unless RX has no buffers, when the driver's RX kick brings us back.
        if ((q.pos.lastAvail !== before || r.stalled) && muxer.hasPendingRx() && !rxStalled) return { kind: "more", interrupt: r.interrupt };
        return timed(r.interrupt);
      }
      // The event queue: buffers wait for a TRANSPORT_RESET (snapshots, not yet).
      return { kind: "idle", interrupt: false };
    },
  };
}

// ---- the kind ----

export const vsockKind: VirtioDeviceKind<VsockConfig> = {
  kind: "vsock",
  instances(config) {
    const v = config.vsock as VsockConfig | readonly VsockConfig[] | undefined;
    if (v === undefined) return [];
    if (Array.isArray(v)) throw new DriveConfigError(`at most one vsock device per VM: vsock must be one object, not a list of ${v.length}`);
    checkConfig(v as VsockConfig);
    // The config object itself, not a copy: metricGroups finds the card's counters by it.
    return [v as VsockConfig];
  },
  slotName: () => "virtio-vsock",
  cardConfig: (c) => c,
  open(config, name) {
    checkConfig(config, name);
    const path = config.udsPath;
    removeStaleSocket(path, name);
    let listenFd: number;
    try {
      listenFd = sys.unixListen(path, LISTEN_BACKLOG);
    } catch (e) {
      throw configError(name, `cannot listen on uds_path ${path}: ${(e as Error).message}`);
    }
    const fds = new SharedArrayBuffer(4 * FD_SLOTS);
    const fdTable = new Int32Array(fds).fill(-1);
    let ours: { dev: number; ino: number };
    try {
      const st = statSync(path);
      ours = { dev: st.dev, ino: st.ino };
    } catch (e) {
      sys.close(listenFd);
      throw configError(name, `uds_path ${path} vanished after bind: ${(e as Error).message}`);
    }
    const counters = new SharedArrayBuffer(8 * COUNTERS);
    countersOf.set(config, new BigInt64Array(counters));
    const data: VsockWorkerData = { guestCid: config.guestCid, udsPath: path, listenFd, counters, fds };
    return {
      info: vsockDeviceInfo({ guestCid: config.guestCid }),
      workerData: data,
      state: { guestCid: config.guestCid, udsPath: path },
      release() {
        // The worker has exited: what it left open is ours to close (its host peers then see the end).
        for (let i = 0; i < fdTable.length; i++) {
          const fd = Atomics.exchange(fdTable, i, -1);
          if (fd >= 0) sys.close(fd);
        }
        sys.close(listenFd);
        // Only the socket this card made: not a file someone put there since.
        try {
          const st = lstatSync(path);
          if (st.isSocket() && st.dev === ours.dev && st.ino === ours.ino) unlinkSync(path);
        } catch {
          // Already gone.
        }
      },
    };
  },
  model: new URL(import.meta.url),
  loadModel: async () => ({ createModel }),
  // Firecracker's `vsock` group, with its key names where the meaning is the same (rx: to the
  // guest, tx: from it), and our own for what it does not count. Cumulative, like every group here.
  metricGroups(instance, m) {
    const c = countersOf.get(instance);
    const at = (i: number): number => (c === undefined ? 0 : Number(Atomics.load(c, i)));
    return {
      vsock: {
        rx_packets_count: at(STAT_INDEX["rx-packets"]),
        tx_packets_count: at(STAT_INDEX["tx-packets"]),
        rx_bytes_count: at(STAT_INDEX["rx-bytes"]),
        tx_bytes_count: at(STAT_INDEX["tx-bytes"]),
        conns_added: at(STAT_INDEX["conn-added"]),
        conns_killed: at(STAT_INDEX["conn-killed"]),
        conns_removed: at(STAT_INDEX["conn-removed"]),
        event_count: m.kicks,
        interrupt_count: m.interrupts,
        needs_reset: m.needsReset,
        malformed_packets: at(STAT_INDEX.malformed),
        dropped_packets: at(STAT_INDEX.dropped),
        rst_unknown_flow: at(STAT_INDEX["rst-unknown"]),
        credit_overruns: at(STAT_INDEX["credit-overrun"]),
        connect_refused: at(STAT_INDEX["connect-refused"]),
        connect_bad_line: at(STAT_INDEX["connect-bad-line"]),
        conn_limit: at(STAT_INDEX["conn-limit"]),
        host_errors: at(STAT_INDEX["host-error"]),
        conns_open: at(G_CONNECTIONS),
        pending_clients: at(G_PENDING_CLIENTS),
        local_ports: at(G_LOCAL_PORTS),
        host_sockets: at(G_SOCKETS),
      },
    };
  },
};
