// The virtio-vsock card end to end without a VM: a real card worker on memfd RAM listens on a
// Unix socket in a temporary directory. The guest is played here through real rings (rx, tx and
// event queues, virtio 1.2 §5.10.2) with packets written by packet.ts's encoders; the host side
// is node:net — a client that connects to uds_path and writes `CONNECT <port>\n`, and a server on
// `${uds_path}_<port>` for guest-initiated connections (Firecracker docs/vsock.md).

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../../../sys/index.js";
import { DriveConfigError, startCard, type CardHandle } from "../../../cards/index.js";
import { startWiredCard } from "../../../cards/testing.js";
import type { GuestMemory } from "../../../memory/guest-memory.js";
import type { BusDevice } from "../../bus.js";
import { TestDriver, initDevice, layoutAt, w32 } from "../testing.js";
import { DESC_F_WRITE, DESC_SIZE, MMIO_CONFIG, MMIO_QUEUE_NOTIFY, MMIO_STATUS } from "../spec.js";
import {
  VSOCK_EVENT_QUEUE,
  VSOCK_HDR_SIZE,
  VSOCK_HOST_CID,
  VSOCK_MAX_PAYLOAD,
  VSOCK_OP_CREDIT_REQUEST,
  VSOCK_OP_CREDIT_UPDATE,
  VSOCK_OP_REQUEST,
  VSOCK_OP_RESPONSE,
  VSOCK_OP_RST,
  VSOCK_OP_RW,
  VSOCK_OP_SHUTDOWN,
  VSOCK_RX_QUEUE,
  VSOCK_SHUTDOWN_BOTH,
  VSOCK_TX_QUEUE,
  VSOCK_TYPE_STREAM,
  decodeHeader,
  encodeHeader,
  type VsockHeader,
  type VsockPacket,
} from "./packet.js";
import { vsockKind, type VsockConfig } from "./kind.js";

const MiB = 1024 * 1024;
/** A temporary directory short enough for socket paths (sun_path holds 107 bytes): TMPDIR, unless it is long. */
const shortTmp = (): string => (tmpdir().length <= 48 ? tmpdir() : "/tmp");
const GUEST_CID = 3;
const QSIZE = 64;
const RX_LAYOUT = layoutAt(0x1000, QSIZE);
const TX_LAYOUT = layoutAt(0x4000, QSIZE);
const EV_LAYOUT = layoutAt(0x7000, 8);
/** TX: one descriptor per packet, header and payload together, in the slot of its descriptor index. */
const TX_DATA = 0x10000;
const TX_SLOT = 4096;
/** RX: one device-writable descriptor per buffer, big enough for the largest packet. */
const RX_DATA = 0x100000;
const RX_BUF = VSOCK_HDR_SIZE + VSOCK_MAX_PAYLOAD;
const RX_STRIDE = 0x11000;
/** What the guest advertises per flow, and when it tells the host it has read more (like Linux's stack). */
const GUEST_BUF_ALLOC = 256 * 1024;
const GUEST_CREDIT_UPDATE_AFTER = 64 * 1024;

type Mode = "echo" | "sink";

interface Flow {
  guestPort: number;
  hostPort: number;
  state: "connecting" | "open" | "closed" | "refused";
  mode: Mode;
  /** Payload bytes received (the guest app reads them at once: fwd_cnt). */
  data: Buffer[];
  received: number;
  lastFwdSent: number;
  peerBufAlloc: number;
  peerFwdCnt: number;
  txCnt: number;
  gotShutdown: boolean;
  creditUpdatesSent: number;
  creditRequestsSeen: number;
  /** Bytes the guest app wrote that wait for the host's credit (sent by pump). */
  outgoing: Uint8Array;
}

/** The guest's vsock driver and its applications, over real rings in guest memory. */
class Guest {
  readonly rx: TestDriver;
  readonly tx: TestDriver;
  readonly flows = new Map<string, Flow>();
  readonly listening = new Map<number, Mode>();
  /** Every packet received, in order. */
  readonly log: VsockPacket[] = [];
  private readonly outbox: VsockPacket[] = [];
  private txInFlight = 0;

  constructor(
    private readonly mem: GuestMemory,
    private readonly dev: BusDevice,
  ) {
    this.rx = new TestDriver(mem, RX_LAYOUT);
    this.tx = new TestDriver(mem, TX_LAYOUT);
    for (let i = 0; i < QSIZE; i++) this.postRx();
    w32(dev, MMIO_QUEUE_NOTIFY, VSOCK_RX_QUEUE);
  }

  private postRx(): number {
    // A one-descriptor chain whose buffer is the slot of its descriptor index.
    const head = this.rx.addChain([{ addr: 0, len: 0 }]);
    this.rx.writeDesc(RX_LAYOUT.desc + DESC_SIZE * head, RX_DATA + head * RX_STRIDE, RX_BUF, DESC_F_WRITE, 0);
    this.rx.publish(head);
    return head;
  }

  flow(guestPort: number, hostPort: number): Flow | undefined {
    return this.flows.get(`${guestPort}:${hostPort}`);
  }

  private newFlow(guestPort: number, hostPort: number, mode: Mode, state: Flow["state"]): Flow {
    const f: Flow = {
      guestPort, hostPort, state, mode, data: [], received: 0, lastFwdSent: 0, peerBufAlloc: 0, peerFwdCnt: 0, txCnt: 0,
      gotShutdown: false, creditUpdatesSent: 0, creditRequestsSeen: 0, outgoing: new Uint8Array(0),
    };
    this.flows.set(`${guestPort}:${hostPort}`, f);
    return f;
  }

  /** Queues a packet of flow `f` (the guest's credit in its header, as every packet carries it: §5.10.6.3). */
  send(f: Flow, op: number, payload: Uint8Array = new Uint8Array(0), flags = 0): void {
    f.lastFwdSent = f.received;
    if (op === VSOCK_OP_CREDIT_UPDATE) f.creditUpdatesSent++;
    this.outbox.push({ hdr: this.hdr(f.guestPort, f.hostPort, op, payload.byteLength, flags, f.received), payload });
  }

  hdr(guestPort: number, hostPort: number, op: number, len = 0, flags = 0, fwdCnt = 0, extra: Partial<VsockHeader> = {}): VsockHeader {
    return {
      srcCid: BigInt(GUEST_CID), dstCid: BigInt(VSOCK_HOST_CID), srcPort: guestPort, dstPort: hostPort, len,
      type: VSOCK_TYPE_STREAM, op, flags, bufAlloc: GUEST_BUF_ALLOC, fwdCnt, ...extra,
    };
  }

  /** Queues a raw packet (for flows the guest does not track). */
  sendRaw(pkt: VsockPacket): void {
    this.outbox.push(pkt);
  }

  connect(guestPort: number, hostPort: number): Flow {
    const f = this.newFlow(guestPort, hostPort, "sink", "connecting");
    this.send(f, VSOCK_OP_REQUEST);
    return f;
  }

  /** Sends `bytes` as RW packets within the host's credit; what does not fit waits in `pendingTx`. */
  write(f: Flow, bytes: Uint8Array): void {
    for (let at = 0; at < bytes.byteLength; at += TX_SLOT - VSOCK_HDR_SIZE) {
      const chunk = bytes.subarray(at, Math.min(bytes.byteLength, at + TX_SLOT - VSOCK_HDR_SIZE));
      const credit = f.peerBufAlloc - ((f.txCnt - f.peerFwdCnt) >>> 0);
      assert.ok(chunk.byteLength <= credit, `the guest stays within the host's credit (${credit} left, ${chunk.byteLength} to send)`);
      f.txCnt = (f.txCnt + chunk.byteLength) >>> 0;
      this.send(f, VSOCK_OP_RW, chunk);
    }
  }

  /** Queues `bytes` to go out as the host's credit allows (pump sends them). */
  queueWrite(f: Flow, bytes: Uint8Array): void {
    const all = new Uint8Array(f.outgoing.byteLength + bytes.byteLength);
    all.set(f.outgoing);
    all.set(bytes, f.outgoing.byteLength);
    f.outgoing = all;
  }

  private sendQueued(): void {
    for (const f of this.flows.values()) {
      if (f.state !== "open") continue;
      for (;;) {
        const credit = f.peerBufAlloc - ((f.txCnt - f.peerFwdCnt) >>> 0);
        const n = Math.min(f.outgoing.byteLength, credit, TX_SLOT - VSOCK_HDR_SIZE);
        if (n <= 0) break;
        this.write(f, f.outgoing.subarray(0, n));
        f.outgoing = f.outgoing.subarray(n);
      }
    }
  }

  shutdown(f: Flow): void {
    this.send(f, VSOCK_OP_SHUTDOWN, undefined, VSOCK_SHUTDOWN_BOTH);
  }

  /** The guest's stack: answers what the host sent. */
  private handle(pkt: VsockPacket): void {
    const h = pkt.hdr;
    assert.equal(h.srcCid, BigInt(VSOCK_HOST_CID), "from the host");
    assert.equal(h.dstCid, BigInt(GUEST_CID), "to this guest");
    assert.equal(h.type, VSOCK_TYPE_STREAM);
    let f = this.flow(h.dstPort, h.srcPort);
    if (h.op === VSOCK_OP_REQUEST) {
      const mode = this.listening.get(h.dstPort);
      if (mode === undefined || f !== undefined) {
        this.sendRaw({ hdr: this.hdr(h.dstPort, h.srcPort, VSOCK_OP_RST), payload: new Uint8Array(0) });
        return;
      }
      f = this.newFlow(h.dstPort, h.srcPort, mode, "open");
      f.peerBufAlloc = h.bufAlloc;
      f.peerFwdCnt = h.fwdCnt;
      this.send(f, VSOCK_OP_RESPONSE);
      return;
    }
    if (f === undefined) return; // an RST for a flow we never had
    f.peerBufAlloc = h.bufAlloc;
    f.peerFwdCnt = h.fwdCnt;
    switch (h.op) {
      case VSOCK_OP_RESPONSE:
        f.state = "open";
        return;
      case VSOCK_OP_RST:
        f.state = f.state === "connecting" ? "refused" : "closed";
        return;
      case VSOCK_OP_RW: {
        f.data.push(Buffer.from(pkt.payload));
        f.received = (f.received + pkt.payload.byteLength) >>> 0;
        // The device never sends past the credit we advertised (§5.10.6.3).
        assert.ok(((f.received - f.lastFwdSent) >>> 0) <= GUEST_BUF_ALLOC, "the host stayed within the guest's credit");
        if (f.mode === "echo") this.write(f, pkt.payload);
        else if (((f.received - f.lastFwdSent) >>> 0) >= GUEST_CREDIT_UPDATE_AFTER) this.send(f, VSOCK_OP_CREDIT_UPDATE);
        return;
      }
      case VSOCK_OP_CREDIT_REQUEST:
        f.creditRequestsSeen++;
        this.send(f, VSOCK_OP_CREDIT_UPDATE);
        return;
      case VSOCK_OP_CREDIT_UPDATE:
        return;
      case VSOCK_OP_SHUTDOWN:
        // The host end is gone: this guest closes too, with RST (§5.10.6.5).
        f.gotShutdown = true;
        this.send(f, VSOCK_OP_RST);
        f.state = "closed";
        return;
      default:
        assert.fail(`unexpected op ${h.op} from the host`);
    }
  }

  /** Takes what the device used, answers it, sends what is queued; kicks the queues it touched. */
  pump(): void {
    let rxTaken = 0;
    for (const u of this.rx.takeUsed()) {
      assert.ok(u.len >= VSOCK_HDR_SIZE, `RX used length ${u.len} holds a header`);
      const at = RX_DATA + u.id * RX_STRIDE;
      const hdr = decodeHeader(this.mem.read(at, VSOCK_HDR_SIZE));
      const payload = this.mem.read(at + VSOCK_HDR_SIZE, u.len - VSOCK_HDR_SIZE);
      assert.equal(hdr.len, payload.byteLength, "header len = payload bytes");
      // Buffers come back in the order they were posted, so the next free descriptor is this one.
      assert.equal(this.postRx(), u.id);
      rxTaken++;
      const pkt = { hdr, payload };
      this.log.push(pkt);
      this.handle(pkt);
    }
    if (rxTaken > 0) w32(this.dev, MMIO_QUEUE_NOTIFY, VSOCK_RX_QUEUE);
    this.sendQueued();
    this.txInFlight -= this.tx.takeUsed().length;
    let sent = 0;
    while (this.outbox.length > 0 && this.txInFlight < QSIZE) {
      const p = this.outbox.shift()!;
      assert.ok(VSOCK_HDR_SIZE + p.payload.byteLength <= TX_SLOT);
      const head = this.tx.addChain([{ addr: 0, len: 0 }]);
      const at = TX_DATA + head * TX_SLOT;
      this.mem.write(at, encodeHeader(p.hdr));
      this.mem.write(at + VSOCK_HDR_SIZE, p.payload);
      this.tx.writeDesc(TX_LAYOUT.desc + DESC_SIZE * head, at, VSOCK_HDR_SIZE + p.payload.byteLength, 0, 0);
      this.tx.publish(head);
      this.txInFlight++;
      sent++;
    }
    if (sent > 0) w32(this.dev, MMIO_QUEUE_NOTIFY, VSOCK_TX_QUEUE);
  }

  /** Runs the guest until `cond` holds. */
  async until(cond: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      this.pump();
      if (cond()) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

interface Rig {
  dir: string;
  config: VsockConfig;
  card: CardHandle;
  guest: Guest;
  dev: BusDevice;
  mem: GuestMemory;
  group(): Record<string, number>;
}

async function startRig(t: TestContext, config?: Partial<VsockConfig>): Promise<Rig> {
  const dir = mkdtempSync(join(shortTmp(), "tv-vsock-"));
  const cfg: VsockConfig = { guestCid: GUEST_CID, udsPath: join(dir, "v.sock"), ...config };
  const { card, guest, dev } = await startWiredCard(t, 8 * MiB, (wiring) => startCard({ ...wiring, kind: "vsock", config: cfg }));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const layouts = [];
  layouts[VSOCK_RX_QUEUE] = RX_LAYOUT;
  layouts[VSOCK_TX_QUEUE] = TX_LAYOUT;
  layouts[VSOCK_EVENT_QUEUE] = EV_LAYOUT;
  assert.equal(initDevice(dev, layouts) & 0xff, 0xf, "the driver accepted the features and the three queues");
  // guest_cid in config space, le64 (virtio 1.2 §5.10.4).
  const cid = new Uint8Array(8);
  for (let i = 0; i < 8; i++) {
    const b = new Uint8Array(1);
    dev.read(MMIO_CONFIG + i, b);
    cid[i] = b[0]!;
  }
  assert.equal(new DataView(cid.buffer).getBigUint64(0, true), BigInt(GUEST_CID));
  return {
    dir,
    config: cfg,
    card,
    dev,
    mem: guest.memory,
    guest: new Guest(guest.memory, dev),
    group: () => vsockKind.metricGroups!(cfg, card.metrics()).vsock!,
  };
}

/** A host program on uds_path: connects, writes `CONNECT <port>\n`, collects what comes back. */
class HostClient {
  readonly sock: Socket;
  private readonly chunks: Buffer[] = [];
  closed = false;
  constructor(path: string, port: number) {
    this.sock = createConnection(path, () => this.sock.write(`CONNECT ${port}\n`));
    this.sock.on("data", (b) => this.chunks.push(b));
    this.sock.on("close", () => (this.closed = true));
    this.sock.on("error", () => {});
  }
  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }
  /** The `OK <port>\n` line, once it came. */
  okPort(): number | undefined {
    const m = /^OK (\d+)\n/.exec(this.received.toString("latin1"));
    return m === null ? undefined : Number(m[1]);
  }
  /** What came after the OK line. */
  data(): Buffer {
    const nl = this.received.indexOf(0x0a);
    return nl < 0 ? Buffer.alloc(0) : this.received.subarray(nl + 1);
  }
}

async function listenOn(t: TestContext, path: string, onConn: (s: Socket) => void): Promise<Server> {
  const server = createServer(onConn);
  await new Promise<void>((r) => server.listen(path, r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  return server;
}

test("vsock card: host-initiated echo — CONNECT <port>, OK <hostport>, bytes both ways, then a clean close", { timeout: 30_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  assert.ok(lstatSync(rig.config.udsPath).isSocket(), "the card listens on uds_path");
  guest.listening.set(1234, "echo");
  const client = new HostClient(rig.config.udsPath, 1234);
  t.after(() => client.sock.destroy());
  await guest.until(() => client.okPort() !== undefined, 10_000, "OK <port>");
  const hostPort = client.okPort()!;
  assert.ok(hostPort >= 2 ** 30 && hostPort < 2 ** 31, `host port ${hostPort} in [2^30, 2^31)`);
  const req = guest.log.find((p) => p.hdr.op === VSOCK_OP_REQUEST)!;
  assert.equal(req.hdr.dstPort, 1234);
  assert.equal(req.hdr.srcPort, hostPort, "the OK line names the flow's host port");
  const flow = guest.flow(1234, hostPort)!;
  assert.equal(flow.state, "open");

  const message = "hello through virtio-vsock\n";
  client.sock.write(message);
  await guest.until(() => client.data().toString() === message, 10_000, "the echo");
  assert.equal(Buffer.concat(flow.data).toString(), message, "the guest got the bytes the host wrote");
  const binary = randomBytes(3000);
  client.sock.write(binary);
  await guest.until(() => client.data().length === message.length + binary.length, 10_000, "the binary echo");
  assert.ok(client.data().subarray(message.length).equals(binary), "binary bytes echoed unchanged");

  // The host program closes: the guest gets SHUTDOWN, answers RST, nothing is left.
  client.sock.end();
  await guest.until(() => flow.gotShutdown && rig.group().conns_open === 0, 10_000, "the close");
  await guest.until(() => client.closed, 10_000, "the client's close");
  const g = rig.group();
  assert.equal(g.conns_added, 1);
  assert.equal(g.conns_removed, 1);
  assert.equal(g.conns_killed, 0, "a clean close is no kill");
  assert.equal(g.host_sockets, 0);
  assert.equal(g.host_errors, 0);
  assert.equal(g.malformed_packets, 0);
  assert.equal(g.rx_bytes_count, message.length + binary.length);
  assert.equal(g.tx_bytes_count, message.length + binary.length);
  const m = rig.card.metrics();
  assert.equal(m.errors, 0);
  assert.equal(m.requests, g.rx_packets_count + g.tx_packets_count, "one card request per packet");
  assert.equal(rig.card.failure, undefined);
});

test("vsock card: guest-initiated — a connect to port 5000 reaches ${uds_path}_5000 and bytes flow both ways; a port nobody listens on gets RST", { timeout: 30_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  const serverGot: Buffer[] = [];
  let serverEnded = false;
  await listenOn(t, `${rig.config.udsPath}_5000`, (s) => {
    s.on("data", (b) => {
      serverGot.push(b);
      s.write(b.toString().toUpperCase());
    });
    s.on("end", () => {
      serverEnded = true;
      s.end();
    });
  });
  const flow = guest.connect(1025, 5000);
  await guest.until(() => flow.state !== "connecting", 10_000, "RESPONSE");
  assert.equal(flow.state, "open");
  assert.ok(flow.peerBufAlloc > 0, "the host advertises its buffer");
  guest.write(flow, new TextEncoder().encode("ping from the guest"));
  await guest.until(() => Buffer.concat(flow.data).toString() === "PING FROM THE GUEST", 10_000, "the answer");
  assert.equal(Buffer.concat(serverGot).toString(), "ping from the guest");

  // Nobody listens on _5001: RST, and the flow leaves nothing behind.
  const refused = guest.connect(1026, 5001);
  await guest.until(() => refused.state !== "connecting", 10_000, "the refusal");
  assert.equal(refused.state, "refused");
  assert.equal(rig.group().connect_refused, 1);

  // The guest closes both ways: the host end sees the end of the stream, the device answers RST.
  guest.shutdown(flow);
  await guest.until(() => flow.state === "closed" && serverEnded, 10_000, "the close");
  await guest.until(() => rig.group().conns_open === 0 && rig.group().host_sockets === 0, 10_000, "no state left");
  assert.equal(rig.group().host_errors, 0);
});

test("vsock card: 4 MiB host -> guest with credit updates from the guest, bytes checked", { timeout: 60_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  guest.listening.set(2000, "sink");
  const client = new HostClient(rig.config.udsPath, 2000);
  t.after(() => client.sock.destroy());
  await guest.until(() => client.okPort() !== undefined, 10_000, "OK");
  const flow = guest.flow(2000, client.okPort()!)!;
  const payload = randomBytes(4 * MiB);
  client.sock.end(payload);
  await guest.until(() => flow.gotShutdown, 50_000, "all 4 MiB and the SHUTDOWN");
  const got = Buffer.concat(flow.data);
  assert.equal(got.length, payload.length);
  assert.ok(got.equals(payload), "every byte arrived, in order");
  // 4 MiB through a 256 KiB window: only the guest's credit updates let it through.
  assert.ok(flow.creditUpdatesSent >= (4 * MiB) / GUEST_BUF_ALLOC, `${flow.creditUpdatesSent} credit updates`);
  const rw = guest.log.filter((p) => p.hdr.op === VSOCK_OP_RW);
  assert.ok(rw.every((p) => p.payload.byteLength <= VSOCK_MAX_PAYLOAD));
  await guest.until(() => rig.group().conns_open === 0, 10_000, "the flow's end");
  assert.equal(rig.group().rx_bytes_count, 4 * MiB);
  assert.equal(rig.card.metrics().errors, 0);
});

test("vsock card: 1 MiB guest -> host into a host program that stops reading for a while: the card holds at most its credit, polls for writable, and the bytes arrive in order", { timeout: 60_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  const got: Buffer[] = [];
  let server: Socket | undefined;
  let ended = false;
  await listenOn(t, `${rig.config.udsPath}_6000`, (s) => {
    server = s;
    s.pause(); // a host program that is busy elsewhere: its socket buffer fills
    s.on("data", (b) => got.push(b));
    s.on("end", () => {
      ended = true;
      s.end();
    });
  });
  const flow = guest.connect(1027, 6000);
  await guest.until(() => flow.state === "open" && server !== undefined, 10_000, "RESPONSE");
  const payload = randomBytes(1 * MiB);
  guest.queueWrite(flow, payload);
  // The guest gets stuck on credit: the host socket is full and the card holds what it may not write.
  let stuckSince = Date.now();
  let sentBefore = -1;
  await guest.until(() => {
    if (flow.txCnt !== sentBefore) {
      sentBefore = flow.txCnt;
      stuckSince = Date.now();
    }
    return Date.now() - stuckSince > 200;
  }, 20_000, "the guest to run out of credit");
  assert.ok(flow.outgoing.byteLength > 0, "the paused host program held the guest back");
  assert.ok(flow.txCnt < payload.length);
  server!.resume();
  await guest.until(() => flow.outgoing.byteLength === 0, 30_000, "everything sent");
  guest.shutdown(flow);
  await guest.until(() => ended && flow.state === "closed", 20_000, "the close");
  const all = Buffer.concat(got);
  assert.equal(all.length, payload.length);
  assert.ok(all.equals(payload), "every byte arrived, in order");
  await guest.until(() => rig.group().conns_open === 0 && rig.group().host_sockets === 0, 10_000, "no state left");
  assert.equal(rig.group().credit_overruns, 0);
  assert.equal(rig.group().tx_bytes_count, payload.length);
});

test("vsock card: 200 short host-initiated connections open and close, leaving no state", { timeout: 60_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  guest.listening.set(3000, "sink");
  const N = 200;
  const AT_ONCE = 25;
  const clients: HostClient[] = [];
  t.after(() => clients.forEach((c) => c.sock.destroy()));
  for (let i = 0; i < N; i += AT_ONCE) {
    const batch: HostClient[] = [];
    for (let j = i; j < Math.min(N, i + AT_ONCE); j++) batch.push(new HostClient(rig.config.udsPath, 3000));
    clients.push(...batch);
    await guest.until(() => batch.every((c) => c.okPort() !== undefined), 10_000, "OK lines");
    batch.forEach((c, k) => c.sock.end(`bye ${i + k}`));
    await guest.until(() => batch.every((c) => c.closed), 10_000, "the batch's close");
  }
  await guest.until(() => rig.group().conns_open === 0 && rig.group().host_sockets === 0, 10_000, "no state left");
  const ports = new Set(clients.map((c) => c.okPort()));
  assert.equal(ports.size, N, "every connection had its own host port");
  const flows = [...guest.flows.values()];
  assert.equal(flows.length, N);
  assert.ok(flows.every((f) => f.state === "closed" && f.gotShutdown));
  assert.deepEqual(
    flows.map((f) => Buffer.concat(f.data).toString()).sort(),
    clients.map((_, i) => `bye ${i}`).sort(),
    "each connection's bytes reached the guest",
  );
  const g = rig.group();
  assert.equal(g.conns_added, N);
  assert.equal(g.conns_removed, N);
  assert.equal(g.conns_killed, 0);
  assert.equal(g.pending_clients, 0);
  assert.equal(g.local_ports, 0, "every host port was given back");
  assert.equal(g.host_errors, 0);
  assert.equal(g.connect_bad_line, 0);
});

test("vsock card: a device reset drops every flow (the host end sees the close); stopping the card closes what is open and removes the socket", { timeout: 30_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  guest.listening.set(4000, "sink");
  const a = new HostClient(rig.config.udsPath, 4000);
  t.after(() => a.sock.destroy());
  await guest.until(() => a.okPort() !== undefined, 10_000, "OK");
  assert.equal(rig.group().conns_open, 1);
  // The driver resets the device (virtio 1.2 §2.4) and sets it up again, as Linux does: the card
  // forgets every flow when it next wakes (the new RX buffers' kick).
  w32(rig.dev, MMIO_STATUS, 0);
  const layouts = [];
  layouts[VSOCK_RX_QUEUE] = RX_LAYOUT;
  layouts[VSOCK_TX_QUEUE] = TX_LAYOUT;
  layouts[VSOCK_EVENT_QUEUE] = EV_LAYOUT;
  rig.mem.write(RX_LAYOUT.desc, new Uint8Array(0x9000 - RX_LAYOUT.desc)); // fresh rings
  assert.equal(initDevice(rig.dev, layouts) & 0xff, 0xf);
  const guest2 = new Guest(rig.mem, rig.dev);
  await guest2.until(() => a.closed, 10_000, "the host end's close after the reset");
  await guest2.until(() => rig.group().conns_open === 0 && rig.group().host_sockets === 0, 10_000, "no state left");
  assert.equal(guest2.log.length, 0, "nothing of the old flow reaches the new driver");

  // One flow open when the card stops.
  guest2.listening.set(4000, "sink");
  const b = new HostClient(rig.config.udsPath, 4000);
  t.after(() => b.sock.destroy());
  await guest2.until(() => b.okPort() !== undefined, 10_000, "OK after the reset");
  await rig.card.stop();
  assert.equal(existsSync(rig.config.udsPath), false, "the socket file is gone");
  await guest2.until(() => b.closed, 10_000, "the host end's close after the stop");
  assert.equal(rig.card.failure, undefined);
  // Nothing listens any more.
  assert.equal(sys.unixConnect(rig.config.udsPath), null);
});

test("vsock card: a hostile guest — garbage TX chains, wrong CIDs, unknown flows — gets used length 0, drops and RSTs, and the card runs on", { timeout: 30_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  // A header that claims more payload than follows, and one from another CID.
  guest.sendRaw({ hdr: { ...guest.hdr(1, 7000, VSOCK_OP_RW), len: 9999 }, payload: new Uint8Array(4) });
  guest.sendRaw({ hdr: guest.hdr(1, 7000, VSOCK_OP_REQUEST, 0, 0, 0, { srcCid: 99n }), payload: new Uint8Array(0) });
  // RW for a flow nobody opened: RST (§5.10.6.4 has the device answer packets of unknown flows).
  guest.sendRaw({ hdr: guest.hdr(2, 7001, VSOCK_OP_RW, 3), payload: Uint8Array.of(1, 2, 3) });
  await guest.until(() => guest.log.some((p) => p.hdr.op === VSOCK_OP_RST && p.hdr.dstPort === 2), 10_000, "the RST");
  await guest.until(() => rig.group().malformed_packets === 1 && rig.group().dropped_packets === 1, 10_000, "the counts");
  assert.equal(rig.group().rst_unknown_flow, 1);
  // Still serving: a host client gets through.
  guest.listening.set(4001, "echo");
  const c = new HostClient(rig.config.udsPath, 4001);
  t.after(() => c.sock.destroy());
  await guest.until(() => c.okPort() !== undefined, 10_000, "OK");
  assert.equal(rig.card.failure, undefined);
});

test("vsock card: a client that never finishes its CONNECT line is dropped at the deadline (the worker wakes for it)", { timeout: 30_000 }, async (t) => {
  const rig = await startRig(t);
  const { guest } = rig;
  const sock = createConnection(rig.config.udsPath, () => sock.write("CONN"));
  let closed = false;
  sock.on("close", () => (closed = true));
  sock.on("error", () => {});
  t.after(() => sock.destroy());
  await guest.until(() => rig.group().pending_clients === 1, 10_000, "the pending client");
  // Firecracker's 2 s request timeout, with no kick or socket event to wake the card.
  await guest.until(() => closed, 5_000, "the drop");
  assert.equal(rig.group().connect_bad_line, 1);
  assert.equal(rig.group().pending_clients, 0);
  // Waiting for the deadline is sleeping, not spinning: a busy worker would have burnt the 2 s.
  const cpu = rig.card.metrics().cpuMicros;
  assert.ok(cpu < 1_000_000, `the card used ${cpu} µs of CPU while it waited`);
});

test("vsock kind: config checked at the edge — guest_cid, uds_path, one device, stale sockets replaced, other files refused", async (t) => {
  const dir = mkdtempSync(join(shortTmp(), "tv-vsock-cfg-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ok = { guestCid: 3, udsPath: join(dir, "v.sock") };
  assert.deepEqual(vsockKind.instances({}), []);
  assert.deepEqual(vsockKind.instances({ vsock: ok }), [ok]);
  assert.equal(vsockKind.slotName(ok), "virtio-vsock");
  for (const cid of [0, 1, 2, 0xffffffff, 2 ** 32, 3.5, -1]) {
    assert.throws(() => vsockKind.instances({ vsock: { ...ok, guestCid: cid } }), (e: unknown) => e instanceof DriveConfigError && /guest_cid/.test(e.message), `cid ${cid}`);
  }
  assert.throws(() => vsockKind.instances({ vsock: { ...ok, udsPath: "" } }), DriveConfigError);
  assert.throws(() => vsockKind.instances({ vsock: { ...ok, udsPath: `/${"x".repeat(200)}` } }), (e: unknown) => e instanceof DriveConfigError && /at most 107/.test(e.message));
  assert.throws(() => vsockKind.instances({ vsock: { ...ok, id: "bad id" } }), DriveConfigError);
  assert.throws(() => vsockKind.instances({ vsock: [ok, ok] as unknown as VsockConfig }), /at most one vsock device/);

  // A regular file at uds_path is never removed.
  const file = join(dir, "file");
  writeFileSync(file, "keep me");
  assert.throws(() => vsockKind.open({ ...ok, udsPath: file }, "virtio-vsock"), (e: unknown) => e instanceof DriveConfigError && /not a socket/.test(e.message));
  assert.equal(readFileSync(file, "utf8"), "keep me");
  // A stale socket (nobody listens) is replaced; a live one is refused.
  const stale = join(dir, "stale.sock");
  sys.close(sys.unixListen(stale, 1));
  const opened = vsockKind.open({ ...ok, udsPath: stale }, "virtio-vsock");
  assert.ok(lstatSync(stale).isSocket());
  assert.throws(() => vsockKind.open({ ...ok, udsPath: stale }, "virtio-vsock"), (e: unknown) => e instanceof DriveConfigError && /another process listens/.test(e.message));
  opened.release();
  assert.equal(existsSync(stale), false, "release removes the socket it made");
  // A missing directory is a start-up error naming the path.
  const missing = join(dir, "no", "v.sock");
  assert.throws(() => vsockKind.open({ ...ok, udsPath: missing }, "virtio-vsock"), (e: unknown) => e instanceof DriveConfigError && e.message.includes(missing));
});
