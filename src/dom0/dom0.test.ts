// The Dom0 back end end to end: a real child process maps memfd guest RAM, owns the image file,
// waits on a real eventfd (the doorbell) and answers through another (the irqfd). The front end
// here is TypeScript (front.ts) writing requests and grants into that RAM, as the probe guest's
// xenblk.c does from inside a VM.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import * as sys from "../sys/index.js";
import { createMemfdGuestMemory } from "../memory/create.js";
import {
  BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT,
  BLKIF_OP_READ,
  BLKIF_OP_WRITE,
  BLKIF_RING_SIZE,
  BLKIF_RSP_EOPNOTSUPP,
  BLKIF_RSP_ERROR,
  BLKIF_RSP_OKAY,
  BLKIF_REQUEST_BYTES,
  DOORBELL_NOTIFY,
  DOORBELL_XENBUS,
  GNTST_bad_copy_arg,
  GNTST_bad_gntref,
  GNTST_bad_page,
  GNTST_general_error,
  GNTST_permission_denied,
  GTF_permit_access,
  GTF_readonly,
  SRING_HEADER_BYTES,
  SRING_REQ_PROD,
  XenbusStateClosed,
  XenbusStateConnected,
  XenbusStateInitialised,
  xenblkCmdline,
} from "./blkif.js";
import { Blkfront, type Request, type Response } from "./front.js";
import { createXenblkDoorbell } from "./doorbell.js";
import { mapControl } from "./control-page.js";
import { spawnDom0, Dom0Error, type Dom0Handle } from "./spawn.js";

const MiB = 1 << 20;
const RING = 0x100000;
const DATA = 0x200000; // data frames from here: frame = DATA / 4096 + i
const FRAME0 = DATA / 4096;
const IMAGE_BYTES = 2 * MiB;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rig(t: TestContext, opts: { readOnly?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "dom0-"));
  const imagePath = join(dir, "disk.img");
  writeFileSync(imagePath, Buffer.alloc(IMAGE_BYTES, 0xee));
  const ram = createMemfdGuestMemory([[0, 4 * MiB]]);
  const notifyFd = sys.eventfd(0, sys.EFD_CLOEXEC);
  const irqFd = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  const dom0 = await spawnDom0({
    memfd: ram.fd,
    regions: [{ gpa: 0, size: 4 * MiB, fdOffset: 0 }],
    ringGpa: RING,
    imagePath,
    notifyFd,
    irqFd,
    readOnly: opts.readOnly ?? false,
  });
  const ctl = mapControl(dom0.controlFd);
  const doorbell = createXenblkDoorbell(ctl.page, notifyFd);
  const front = new Blkfront(ram.memory, RING);
  t.after(async () => {
    await dom0.stop();
    ctl.unmap();
    sys.close(notifyFd);
    sys.close(irqFd);
    ram.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const u32 = (v: number) => Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
  const kick = () => doorbell.write(DOORBELL_NOTIFY, u32(0));
  const xenbus = (state: number) => doorbell.write(DOORBELL_XENBUS, u32(state));
  const backState = () => {
    const d = new Uint8Array(4);
    doorbell.read(DOORBELL_XENBUS, d);
    return d[0]!;
  };
  async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; dom0 stderr: ${dom0.stderr()}`);
      await sleep(1);
    }
  }
  async function connect(): Promise<void> {
    front.init();
    xenbus(XenbusStateInitialised);
    await until(() => backState() === XenbusStateConnected && !dom0.broken(), "xenbus Connected");
  }
  /** Waits for the irqfd (the back end's notification). */
  async function irq(): Promise<void> {
    const b = new Uint8Array(8);
    await until(() => {
      try {
        return sys.read(irqFd, b) === 8;
      } catch {
        return false; // EAGAIN: nothing yet
      }
    }, "irqfd");
  }
  async function submit(reqs: Request[]): Promise<Response[]> {
    for (const r of reqs) front.queue(r);
    if (front.push()) kick();
    const got: Response[] = [];
    while (got.length < reqs.length) {
      await irq();
      got.push(...front.reap());
    }
    return got;
  }
  return { imagePath, ram, mem: ram.memory, dom0, front, kick, xenbus, backState, connect, submit, until };
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed + (i >> 12)) & 0xff);
const full = (gref: number) => ({ gref, first: 0, last: 7 });

test("blkif layout matches xen/include/public/io/{ring,blkif}.h on x86-64", () => {
  assert.equal(SRING_HEADER_BYTES, 64);
  assert.equal(BLKIF_REQUEST_BYTES, 112);
  assert.equal(BLKIF_RING_SIZE, 32, "(4096 - 64) / 112 = 36, rounded down to a power of two");
  assert.equal(xenblkCmdline(0x1000000, 0x610, 11, 4096), "typervisor_xenblk=0x1000000@0x610:11:4096");
});

test("dom0: spawn refuses a missing image and a ring outside RAM", async () => {
  const ram = createMemfdGuestMemory([[0, MiB]]);
  try {
    const base = { memfd: ram.fd, regions: [{ gpa: 0, size: MiB, fdOffset: 0 }], notifyFd: 0, irqFd: 0 };
    await assert.rejects(spawnDom0({ ...base, ringGpa: 0, imagePath: "/nonexistent/disk.img" }), Dom0Error);
    const dir = mkdtempSync(join(tmpdir(), "dom0-"));
    writeFileSync(join(dir, "d"), Buffer.alloc(4096));
    await assert.rejects(spawnDom0({ ...base, ringGpa: MiB - 4096, imagePath: join(dir, "d") }), /not page-aligned guest RAM/);
    rmSync(dir, { recursive: true });
  } finally {
    ram.close();
  }
});

test("dom0 end to end: granted writes reach the image, reads come back through grant copy, FLUSH answers OKAY", async (t) => {
  const r = await rig(t);
  assert.notEqual(r.dom0.pid, process.pid, "a separate process");
  await r.connect();
  const data = pattern(3 * 4096, 5);
  r.mem.write(DATA, data);
  for (let i = 0; i < 3; i++) r.front.grant(8 + i, FRAME0 + i, GTF_permit_access | GTF_readonly); // the back end only reads them
  // 3 pages at sector 16; the middle segment uses sectors 2..5 of its frame only.
  const seg = [full(8), { gref: 9, first: 2, last: 5 }, full(10)];
  let rsp = await r.submit([{ op: BLKIF_OP_WRITE, id: 0x1234n, sector: 16n, segs: seg }]);
  assert.deepEqual(rsp, [{ id: 0x1234n, op: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
  const img = readFileSync(r.imagePath);
  const expect = Buffer.concat([Buffer.from(data.subarray(0, 4096)), Buffer.from(data.subarray(4096 + 1024, 4096 + 3072)), Buffer.from(data.subarray(8192))]);
  assert.ok(img.subarray(16 * 512, 16 * 512 + expect.length).equals(expect), "image holds the granted bytes");
  assert.ok(img.subarray(0, 16 * 512).every((b) => b === 0xee), "nothing before");
  assert.ok(img.subarray(16 * 512 + expect.length).every((b) => b === 0xee), "nothing after");

  // Read it back into three other frames, granted writable.
  for (let i = 0; i < 3; i++) r.front.grant(20 + i, FRAME0 + 16 + i, GTF_permit_access);
  r.mem.fill(DATA + 16 * 4096, 3 * 4096, 0);
  rsp = await r.submit([
    { op: BLKIF_OP_READ, id: 1n, sector: 16n, segs: [full(20), { gref: 21, first: 2, last: 5 }, full(22)] },
    { op: BLKIF_OP_FLUSH_DISKCACHE, id: 2n, sector: 0n, segs: [] },
  ]);
  assert.deepEqual(rsp.map((x) => x.status), [BLKIF_RSP_OKAY, BLKIF_RSP_OKAY]);
  assert.deepEqual(r.mem.read(DATA + 16 * 4096, 4096), data.subarray(0, 4096));
  assert.deepEqual(r.mem.read(DATA + 17 * 4096 + 1024, 2048), data.subarray(4096 + 1024, 4096 + 3072));
  assert.ok(r.mem.read(DATA + 17 * 4096, 1024).every((b) => b === 0), "sectors 0-1 of the frame untouched");
  assert.deepEqual(r.mem.read(DATA + 18 * 4096, 4096), data.subarray(8192));
  const m = r.dom0.metrics();
  assert.equal(m.requests, 3);
  assert.equal(m.bytes, 2 * expect.length);
  assert.equal(m.copiedBytes / m.bytes, 2, "two data copies per byte: kernel <-> bounce, bounce <-> granted frame");
  assert.equal(m.flushes, 1);
  assert.ok(m.notifyOut >= 2);
  assert.ok(r.dom0.cpuSeconds() > 0, `the back end's own CPU time for 2 batches is counted: ${r.dom0.cpuSeconds()} s`);
});

test("dom0: every bad grant is refused per request with the GNTST reason; good requests in the same batch still succeed", async (t) => {
  const r = await rig(t);
  await r.connect();
  const F = FRAME0;
  r.front.grant(10, F, GTF_permit_access); // good, writable
  r.front.grant(11, F + 1, 0); // GTF_invalid
  r.front.grant(12, F + 2, GTF_permit_access, 7); // granted to domain 7, not us
  r.front.grant(13, F + 3, GTF_permit_access | GTF_readonly); // read-only
  r.front.grant(14, 0xfffff, GTF_permit_access); // frame far outside RAM
  r.front.grant(15, RING / 4096, GTF_permit_access); // the ring page itself
  r.front.grant(16, (RING + 4096) / 4096, GTF_permit_access); // the grant table
  r.mem.fill(DATA + 3 * 4096, 4096, 0x77);
  const before = readFileSync(r.imagePath);
  const cases: Array<[Request, number, number | null]> = [
    [{ op: BLKIF_OP_READ, id: 1n, sector: 0n, segs: [full(600)] }, BLKIF_RSP_ERROR, GNTST_bad_gntref],
    [{ op: BLKIF_OP_READ, id: 2n, sector: 0n, segs: [full(0xffffffff)] }, BLKIF_RSP_ERROR, GNTST_bad_gntref],
    [{ op: BLKIF_OP_READ, id: 3n, sector: 0n, segs: [full(11)] }, BLKIF_RSP_ERROR, GNTST_general_error],
    [{ op: BLKIF_OP_READ, id: 4n, sector: 0n, segs: [full(12)] }, BLKIF_RSP_ERROR, GNTST_general_error],
    [{ op: BLKIF_OP_READ, id: 5n, sector: 0n, segs: [full(13)] }, BLKIF_RSP_ERROR, GNTST_permission_denied],
    [{ op: BLKIF_OP_READ, id: 6n, sector: 0n, segs: [full(14)] }, BLKIF_RSP_ERROR, GNTST_bad_page],
    [{ op: BLKIF_OP_READ, id: 7n, sector: 0n, segs: [full(15)] }, BLKIF_RSP_ERROR, GNTST_bad_page],
    [{ op: BLKIF_OP_READ, id: 8n, sector: 0n, segs: [full(16)] }, BLKIF_RSP_ERROR, GNTST_bad_page],
    [{ op: BLKIF_OP_READ, id: 9n, sector: 0n, segs: [{ gref: 10, first: 5, last: 2 }] }, BLKIF_RSP_ERROR, GNTST_bad_copy_arg],
    [{ op: BLKIF_OP_READ, id: 10n, sector: 0n, segs: [{ gref: 10, first: 0, last: 8 }] }, BLKIF_RSP_ERROR, GNTST_bad_copy_arg],
    [{ op: BLKIF_OP_WRITE, id: 11n, sector: 0n, segs: [full(10), full(12)] }, BLKIF_RSP_ERROR, GNTST_general_error], // one bad of two: no I/O
    [{ op: BLKIF_OP_READ, id: 12n, sector: 0n, segs: [], nrSegments: 0 }, BLKIF_RSP_ERROR, null],
    [{ op: BLKIF_OP_READ, id: 13n, sector: 0n, segs: [full(10)], nrSegments: 12 }, BLKIF_RSP_ERROR, null],
    [{ op: BLKIF_OP_READ, id: 14n, sector: BigInt(IMAGE_BYTES / 512 - 4), segs: [full(10)] }, BLKIF_RSP_ERROR, null], // crosses the end
    [{ op: BLKIF_OP_READ, id: 15n, sector: 0xffffffffffffff00n, segs: [full(10)] }, BLKIF_RSP_ERROR, null],
    [{ op: BLKIF_OP_INDIRECT, id: 16n, sector: 0n, segs: [] }, BLKIF_RSP_EOPNOTSUPP, null],
    [{ op: 0xff, id: 17n, sector: 0n, segs: [] }, BLKIF_RSP_EOPNOTSUPP, null],
  ];
  for (const [req, status, gntst] of cases) {
    const [rsp] = await r.submit([req]);
    assert.equal(rsp!.id, req.id);
    assert.equal(rsp!.status, status, `request ${req.id}`);
    if (gntst !== null) assert.equal(r.dom0.lastGrantStatus(), gntst, `request ${req.id}: GNTST`);
  }
  assert.ok(r.mem.read(DATA + 3 * 4096, 4096).every((b) => b === 0x77), "the read-only frame was not written");
  assert.ok(readFileSync(r.imagePath).equals(before), "no refused write reached the image");
  // A batch mixing good and bad: per-request answers, in order.
  r.mem.write(DATA, pattern(4096, 1));
  const rsp = await r.submit([
    { op: BLKIF_OP_WRITE, id: 100n, sector: 8n, segs: [full(10)] },
    { op: BLKIF_OP_WRITE, id: 101n, sector: 16n, segs: [full(999)] },
    { op: BLKIF_OP_WRITE, id: 102n, sector: 24n, segs: [full(13)] }, // read-only grant is fine for a write (we read the frame)
  ]);
  assert.deepEqual(rsp.map((x) => [x.id, x.status]), [[100n, 0], [101n, -1], [102n, 0]]);
  const img = readFileSync(r.imagePath);
  assert.deepEqual(new Uint8Array(img.subarray(8 * 512, 8 * 512 + 4096)), pattern(4096, 1));
  assert.ok(img.subarray(16 * 512, 24 * 512).every((b) => b === 0xee));
  assert.ok(r.dom0.metrics().grantErrors >= 12);
  assert.ok(r.dom0.alive());
});

test("dom0 survives garbage rings: a bogus producer index gives up the ring until reconnect; random request bytes are answered", async (t) => {
  const r = await rig(t);
  await r.connect();
  // Producer index far ahead of anything the ring can hold (RING_REQUEST_PROD_OVERFLOW).
  r.mem.writeU32(RING + SRING_REQ_PROD, 1000);
  r.kick();
  await r.until(() => r.dom0.broken(), "ring given up");
  assert.equal(r.backState(), XenbusStateClosed);
  assert.ok(r.dom0.alive());
  assert.equal(r.dom0.metrics().ringErrors, 1);
  r.kick(); // ignored while broken
  await sleep(20);
  assert.ok(r.dom0.alive());

  // Reconnect and feed whole rings of random bytes.
  await r.connect();
  const image = readFileSync(r.imagePath);
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 32 * 112, maxLength: 32 * 112 }), async (junk) => {
      // Keep writes harmless to the check below: force every op byte to read/flush/unknown, never write.
      for (let i = 0; i < 32; i++) if ((junk[i * 112]! & 0xff) === BLKIF_OP_WRITE) junk[i * 112] = BLKIF_OP_READ;
      r.mem.write(RING + SRING_HEADER_BYTES, junk.subarray(0, 32 * 112));
      const n = 1 + (junk[0]! % 31);
      r.front.reqProdPvt = (r.front.reqProdPvt + n) >>> 0;
      if (r.front.push()) r.kick();
      let got = 0;
      const end = Date.now() + 5000;
      while (got < n && Date.now() < end) {
        got += r.front.reap().length;
        if (got < n) await sleep(1);
      }
      return got === n && r.dom0.alive();
    }),
    { numRuns: 25 },
  );
  assert.ok(readFileSync(r.imagePath).equals(image), "garbage reads never changed the image");
  // And it still serves a proper request.
  r.front.grant(10, FRAME0, GTF_permit_access);
  const [rsp] = await r.submit([{ op: BLKIF_OP_READ, id: 77n, sector: 0n, segs: [full(10)] }]);
  assert.equal(rsp!.status, BLKIF_RSP_OKAY);
  assert.ok(r.mem.read(DATA, 4096).every((b) => b === 0xee));
});

test("dom0: a read-only drive refuses writes; stop ends the process", async (t) => {
  const r = await rig(t, { readOnly: true });
  await r.connect();
  r.front.grant(10, FRAME0, GTF_permit_access);
  const rsp = await r.submit([
    { op: BLKIF_OP_WRITE, id: 1n, sector: 0n, segs: [full(10)] },
    { op: BLKIF_OP_READ, id: 2n, sector: 0n, segs: [full(10)] },
  ]);
  assert.deepEqual(rsp.map((x) => x.status), [BLKIF_RSP_ERROR, BLKIF_RSP_OKAY]);
  await r.dom0.stop();
  assert.equal(r.dom0.alive(), false);
});

export type { Dom0Handle };
