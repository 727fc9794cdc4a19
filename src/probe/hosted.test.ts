// The probe's own virtio drivers (guest/src/virtio.c, rng.c, nsm.c — the C code the guest runs)
// against Typervisor's own virtio-mmio transport and cards, on a host without KVM: the drivers are
// built as a host library (guest/src/hosted.c) and run on this thread; their register accesses go
// to the transport (the vCPU thread's job in a VM), their DMA areas lie in a memfd that each card
// maps itself (guest RAM in a VM), and a QueueNotify write signals the card's eventfd. What KVM
// adds — trapping the accesses, ioeventfd, irqfd — is not here; everything between driver and
// card is.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../sys/index.js";
import { loadHostedProbe, type HostedProbe } from "../sys/probe-hosted.js";
import { createTransportState, createVirtioMmioDevice, SharedPcrBank, startCard, type CardHandle, type CardOptions } from "../cards/index.js";
import { chipInit } from "../security/chip.js";
import { measureBoot, toHex, extendValue } from "../security/pcr.js";
import { verifyAttestation } from "../security/attestation.js";
import { parseProbeLines, findLine, type ProbeLine } from "./report.js";
import { probeHostedPath } from "./path.js";
import { Bus } from "../devices/bus.js";
import { openImage } from "../cards/blk-file.js";
import { createAtaBusDevices, createAtaState, FileAtaBackend, ATA_COMMAND_BLOCK_LEN, ATA_CONTROL_BLOCK_LEN, ATA_PRIMARY_CONTROL_BASE } from "../devices/ata/index.js";
import { spawnDom0, type Dom0Handle } from "../dom0/spawn.js";
import { mapControl } from "../dom0/control.js";
import { createXenblkDoorbell } from "../dom0/doorbell.js";
import { XENBLK_DOORBELL_LEN, xenblkCmdline } from "../dom0/blkif.js";
import { createRequire } from "node:module";

const cose = createRequire(import.meta.url)("cose-js") as {
  sign: { verifySync(msg: Buffer, verifier: { key: { x: Buffer; y: Buffer } }, opts: { defaultType: number }): Buffer; Sign1Tag: number };
};

const MiB = 1 << 20;
const DMA_BYTES = 16 * MiB; // virtio.c 4 MiB, rng.c +4 MiB, nsm.c +5 MiB; ata.c/xenblk.c scratch +4..16 MiB
const MMIO_BASE = 0xd0000000;
const SLOT = 0x1000;
const ATA_PORT = 0x1f0;
const XENBLK_PORT = 0x610;
/** The xenblk ring and grant pages: the last two pages of virtio.c's 4 MiB (unused by the xenblk tests). */
const XENBLK_RING_OFF = 0x3fe000;

type Device = { kind: "blk"; config: Extract<CardOptions, { kind: "blk" }>["config"] } | { kind: "rng" } | { kind: "nsm"; config: Extract<CardOptions, { kind: "nsm" }>["config"] };
interface Rig {
  /** virtio devices, one card each, in slots at MMIO_BASE + i * 4 KiB. */
  devices?: Device[];
  /** An emulated ATA disk on this image (the port I/O of the probe's ata.c goes to our AtaDevice). */
  ata?: string;
  /** A Dom0-served xenblk drive on this image (a real Dom0 process; the doorbell on the port bus). */
  dom0?: string;
}

let probe: HostedProbe;
test.before(() => {
  probe = loadHostedProbe(probeHostedPath());
});

/**
 * Maps the DMA memory where a Xen grant frame number (32 bits of page number) can name it, below
 * 2^44: the front end grants frames of its own addresses, as a guest grants guest-physical ones.
 */
function mapLow(memfd: number): bigint {
  for (let at = 0x2_0000_0000n; at < 0x800_0000_0000n; at += 0x1_0000_0000n) {
    try {
      return sys.mmap(DMA_BYTES, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED | sys.MAP_FIXED_NOREPLACE, memfd, 0, at);
    } catch (e) {
      if (!(e instanceof sys.SysError && e.code === "EEXIST")) throw e;
    }
  }
  throw new Error("no free 16 MiB below 2^43 for the hosted probe's DMA memory");
}

/** Builds the devices of `rig` over one memfd of DMA memory and runs the probe test `testName` hosted. */
async function runHosted(t: TestContext, testName: string, rig: Rig, options = ""): Promise<{ status: number; lines: ProbeLine[]; cards: CardHandle[]; dom0?: Dom0Handle }> {
  const memfd = sys.memfdCreate("hosted-probe", sys.MFD_CLOEXEC);
  sys.ftruncate(memfd, DMA_BYTES);
  const addr = mapLow(memfd);
  // "Guest-physical" = this thread's address of the memory: the drivers use their pointers as DMA
  // addresses, and each card (and Dom0) maps the memfd itself and places it at this same address.
  const gpa = Number(addr);
  const regions = [{ gpa, size: DMA_BYTES, fdOffset: 0 }];
  const slots: Array<{ base: number; dev: ReturnType<typeof createVirtioMmioDevice> }> = [];
  const cards: CardHandle[] = [];
  const fds: number[] = [];
  const cleanups: Array<() => void | Promise<void>> = [];
  t.after(async () => {
    for (const c of cards) await c.stop();
    for (const f of cleanups.reverse()) await f();
    for (const fd of fds) sys.close(fd);
    sys.munmap(addr, DMA_BYTES);
    sys.close(memfd);
  });
  const eventfd = (flags = 0): number => {
    const fd = sys.eventfd(0, sys.EFD_CLOEXEC | flags);
    fds.push(fd);
    return fd;
  };
  const cmdline: string[] = [];
  for (const [i, d] of (rig.devices ?? []).entries()) {
    const transportState = createTransportState();
    const notifyFd = eventfd();
    const irqFd = eventfd(sys.EFD_NONBLOCK);
    const base = MMIO_BASE + i * SLOT;
    slots.push({ base, dev: createVirtioMmioDevice(transportState, notifyFd) });
    cards.push(await startCard({ ...d, memfd, regions, transportState, notifyFd, irqFd, name: `${d.kind}${i}` } as CardOptions));
    cmdline.push(`virtio_mmio.device=4K@0x${base.toString(16)}:${5 + i}`);
  }
  const pio = new Bus("pio");
  if (rig.ata !== undefined) {
    const img = openImage(rig.ata, false);
    cleanups.push(() => img.close());
    const ata = createAtaBusDevices(createAtaState(), new FileAtaBackend(img.fd, img.sizeBytes), { trigger: () => {} });
    pio.insert(ATA_PORT, ATA_COMMAND_BLOCK_LEN, "ata0", ata.commandBlock);
    pio.insert(ATA_PRIMARY_CONTROL_BASE, ATA_CONTROL_BLOCK_LEN, "ata0-ctl", ata.controlBlock);
    cmdline.push(`typervisor_ata=0x${ATA_PORT.toString(16)}:14`);
  }
  let dom0: Dom0Handle | undefined;
  if (rig.dom0 !== undefined) {
    const notifyFd = eventfd();
    const irqFd = eventfd(sys.EFD_NONBLOCK);
    const ringGpa = gpa + XENBLK_RING_OFF;
    const handle = await spawnDom0({ memfd, regions, ringGpa, imagePath: rig.dom0, notifyFd, irqFd });
    dom0 = handle;
    const control = mapControl(handle.controlFd);
    cleanups.push(async () => {
      await handle.stop();
      control.unmap();
    });
    pio.insert(XENBLK_PORT, XENBLK_DOORBELL_LEN, "xenblk", createXenblkDoorbell(control.page, notifyFd));
    cmdline.push(xenblkCmdline(ringGpa, XENBLK_PORT, 15, handle.sectors));
  }
  const slotOf = (a: number) => {
    const s = slots[Math.floor((a - MMIO_BASE) / SLOT)];
    if (s === undefined) throw new Error(`register access at 0x${a.toString(16)} outside every slot`);
    return { s, off: a - s.base };
  };
  const word = new Uint8Array(4);
  const view = new DataView(word.buffer);
  const r = probe.run(
    testName,
    [...cmdline, options].join(" ").trim(),
    addr,
    DMA_BYTES,
    (a) => {
      const { s, off } = slotOf(a);
      s.dev.read(off, word);
      return view.getUint32(0, true);
    },
    (a, v) => {
      const { s, off } = slotOf(a);
      view.setUint32(0, v, true);
      s.dev.write(off, word);
    },
    // Port I/O as the vCPU thread's PIO bus takes it (little-endian, 1, 2 or 4 bytes).
    (port, size) => {
      const d = word.subarray(0, size);
      pio.read(port, d);
      return size === 1 ? d[0]! : size === 2 ? view.getUint16(0, true) : view.getUint32(0, true);
    },
    (port, size, v) => {
      view.setUint32(0, v, true);
      pio.write(port, word.subarray(0, size));
    },
  );
  return { status: r.status, lines: parseProbeLines(r.output), cards, ...(dom0 !== undefined ? { dom0 } : {}) };
}

function image(t: TestContext, bytes: number, fill = 0): string {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-hosted-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const p = join(dir, "disk.img");
  writeFileSync(p, Buffer.alloc(bytes, fill));
  return p;
}

/** virtio.c pattern(): (byte offset × 0x9E3779B97F4A7C15) XOR seed, one little-endian u64 per 8 bytes. */
function patternAt(off: number, seed: bigint): bigint {
  return BigInt.asUintN(64, (BigInt(off) * 0x9e3779b97f4a7c15n) ^ seed);
}

test("blk-verify: the probe's virtio-blk driver writes, flushes and reads back through our transport and card; the host finds its pattern in the image", { timeout: 60_000 }, async (t) => {
  const img = image(t, 2 * MiB);
  const r = await runHosted(t, "blk-verify", { devices: [{ kind: "blk", config: { path: img, id: "hosted-disk" } }] }, "probe.blk.seed=0x1234");
  const line = findLine(r.lines, "blk-verify");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(line?.fields["ok"], "1");
  assert.equal(line?.fields["mismatch"], "0");
  assert.equal(line?.fields["oob_status"], "1", "a read past the end is IOERR");
  assert.equal(Buffer.from(line!.fields["id_hex"]!, "hex").toString(), "hosted-disk", "GET_ID");
  const bytes = readFileSync(img);
  for (let off = 0; off < bytes.length; off += 8) {
    if (bytes.readBigUInt64LE(off) !== patternAt(off, 0x1234n)) assert.fail(`image byte ${off} is not the probe's pattern`);
  }
  const m = r.cards[0]!.metrics();
  assert.ok(m.requests >= 2 * 32 + 1, `card requests ${m.requests}`);
  assert.ok(m.kicks > 0);
});

test("blk-hostile: bad descriptors of each kind are answered (given back unread) or make the device ask for a reset — never a hang — and a second drive keeps working", { timeout: 90_000 }, async (t) => {
  const r = await runHosted(t, "blk-hostile", {
    devices: [
      { kind: "blk", config: { path: image(t, 64 * 1024), id: "hostile" } },
      { kind: "blk", config: { path: image(t, 64 * 1024), id: "good" } },
    ],
  });
  const cases = Object.fromEntries(r.lines.filter((l) => l.name === "blk-hostile-case").map((l) => [l.fields["case"], l.fields]));
  const summary = findLine(r.lines, "blk-hostile");
  for (const l of r.lines) t.diagnostic(`${l.name} ${Object.entries(l.fields).map(([k, v]) => `${k}=${v}`).join(" ")}`);
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(summary?.fields["ok"], "1");
  assert.equal(summary?.fields["recovered"], "1");
  // What our device does with each (virtio 1.2 §2.7): a chain it cannot use is given back with used
  // length 0 and nothing written; a ring it cannot trust any more is DEVICE_NEEDS_RESET.
  const want: Record<string, string> = {
    oob_addr: "answered", huge_len: "answered", zero_len: "answered", loop: "answered", next_oob: "answered",
    wo_header: "answered", ro_status: "answered", bad_head: "reset", avail_jump: "reset",
  };
  for (const [name, outcome] of Object.entries(want)) {
    assert.equal(cases[name]?.["outcome"], outcome, `${name}: ${JSON.stringify(cases[name])}`);
    assert.equal(cases[name]?.["good_device_ok"], "1", name);
  }
  for (const name of ["oob_addr", "huge_len", "loop", "next_oob", "ro_status"]) {
    assert.equal(cases[name]?.["used_len"], "0", `${name} is given back unread`);
    assert.equal(cases[name]?.["status"], "0xff", `${name}: no status byte written`);
  }
  assert.equal(cases["wo_header"]?.["status"], "0x1", "a header the device cannot read is answered IOERR");
  assert.ok(r.cards[0]!.metrics().needsReset >= 2, "the fatal cases were counted");
  assert.equal(r.cards[1]!.metrics().needsReset, 0);
});

for (const path of ["ata", "dom0"] as const) {
  const testName = path === "ata" ? "ata-verify" : "xenblk-verify";
  test(`${testName}: the probe's ${path === "ata" ? "ATA PIO driver against our emulated disk" : "Xen blkfront against our Dom0 back-end process"} writes, flushes and reads back; the host finds its pattern in the image`, { timeout: 90_000 }, async (t) => {
    const img = image(t, 1 * MiB);
    const r = await runHosted(t, testName, { [path]: img }, "probe.blk.seed=0xabc");
    const line = findLine(r.lines, testName);
    assert.equal(r.status, 0, JSON.stringify(r.lines));
    assert.equal(line?.fields["ok"], "1");
    assert.equal(line?.fields["mismatch"], "0");
    const bytes = readFileSync(img);
    for (let off = 0; off < bytes.length; off += 8) {
      if (bytes.readBigUInt64LE(off) !== patternAt(off, 0xabcn)) assert.fail(`image byte ${off} is not the probe's pattern`);
    }
    if (path === "dom0") {
      const m = r.dom0!.metrics();
      assert.ok(m.requests > 0 && m.copiedBytes >= 2 * MiB, `Dom0 answered ${m.requests} requests, copied ${m.copiedBytes} bytes`);
    }
  });
}

test("blk-ro: on a read-only drive the probe's write is refused (IOERR) and the image is unchanged", { timeout: 60_000 }, async (t) => {
  const img = image(t, 64 * 1024, 0x77);
  const before = createHash("sha256").update(readFileSync(img)).digest("hex");
  const r = await runHosted(t, "blk-ro", { devices: [{ kind: "blk", config: { path: img, readOnly: true } }] });
  const line = findLine(r.lines, "blk-ro");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(line?.fields["write_status"], "1");
  assert.equal(line?.fields["unchanged"], "1");
  assert.equal(createHash("sha256").update(readFileSync(img)).digest("hex"), before);
});

test("rng: the probe's virtio-rng driver gets the bytes it asked for from our card, spread over every value", { timeout: 60_000 }, async (t) => {
  const r = await runHosted(t, "rng", { devices: [{ kind: "rng" }] }, "probe.rng.bytes=65536");
  const line = findLine(r.lines, "rng");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(line?.fields["bytes"], "65536");
  assert.equal(r.cards[0]!.metrics().bytes, 65536);
});

test("nsm: the probe's NSM driver extends PCR16 and gets an attestation document that verifies against the chip root, with its nonce and user data", { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-hosted-chip-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { chip } = chipInit(join(dir, "chip"));
  const pcrs = SharedPcrBank.from(measureBoot({ kernel: Buffer.from("hosted kernel"), cmdline: "probe.run=nsm", vmId: "vm-hosted" }));
  const nonce = "00112233445566778899aabbccddeeff";
  const userData = "75736572"; // "user"
  const r = await runHosted(t, "nsm", { devices: [{ kind: "nsm", config: { signer: { chipDir: join(dir, "chip") }, moduleId: "i-hosted-probe", pcrs } }] }, `probe.nsm.nonce=${nonce} probe.nsm.user_data=${userData}`);
  const line = findLine(r.lines, "nsm");
  assert.equal(r.status, 0, JSON.stringify(r.lines));
  assert.equal(Buffer.from(line!.fields["module_id_hex"]!, "hex").toString(), "i-hosted-probe");
  // PCR16 as the guest saw it after ExtendPCR("probe-nsm"), and as the host's bank holds it.
  const want = toHex(extendValue(new Uint8Array(48), new TextEncoder().encode("probe-nsm")));
  assert.equal(line?.fields["pcr_hex"], want);
  assert.equal(toHex(pcrs.get(16)), want);
  const doc = new Uint8Array(Buffer.from(line!.fields["attestation_hex"]!, "hex"));
  const v = verifyAttestation(doc, { root: chip.root.der, nonce: new Uint8Array(Buffer.from(nonce, "hex")), expectedPcrs: new Map([[0, toHex(pcrs.get(0))]]) });
  assert.ok(v.ok, v.ok ? "" : `${v.check}: ${v.message}`);
  if (v.ok) {
    assert.equal(v.document.module_id, "i-hosted-probe");
    assert.equal(Buffer.from(v.document.user_data!).toString("hex"), userData);
  }
  // And an independent COSE implementation (cose-js) checks the ES384 signature with the chip's leaf key.
  const jwk = chip.leaf.publicKey.export({ format: "jwk" });
  const key = { x: Buffer.from(jwk.x!, "base64url"), y: Buffer.from(jwk.y!, "base64url") };
  assert.ok(cose.sign.verifySync(Buffer.from(doc), { key }, { defaultType: cose.sign.Sign1Tag }).length > 0);
});
