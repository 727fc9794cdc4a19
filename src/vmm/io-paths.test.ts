// The emulated and dom0 drive paths wired into the VM, end to end over the fake machine: real vCPU
// worker threads take scripted port I/O exits on their PIO bus; the emulated ATA disk writes the
// image from the vCPU thread; the dom0 drive's doorbell on the vCPU thread wakes a real Dom0
// child process that grant-copies from memfd guest RAM into the image. Left out (no /dev/kvm
// here): KVM's PIO ioeventfd on the doorbell, the irqfd, and KVM_IRQ_LINE for IRQ 14.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../sys/index.js";
import { planDevices, devicesCmdline, DriveConfigError, XENBLK_RING_GPA, type DriveConfig } from "./drives.js";
import { Vm } from "./vm.js";
import { fakeMachine, type FakeStep } from "./testing/fake-machine.js";
import {
  ATA_PRIMARY_COMMAND_BASE as ATA, ATA_PRIMARY_IRQ, CMD_WRITE_SECTORS, DEV_LBA, DEV_OBSOLETE, REG_DATA, REG_DEVICE,
  REG_LBA_HIGH, REG_LBA_LOW, REG_LBA_MID, REG_SECTOR_COUNT, REG_STATUS_COMMAND, ST_DRDY, ST_DRQ, ST_ERR, ST_BSY,
} from "../devices/ata/index.js";
import {
  BLKIF_OP_WRITE, BLKIF_RSP_OKAY, DOORBELL_NOTIFY, DOORBELL_XENBUS, GTF_permit_access, XENBLK_DOORBELL_PORT,
  XENBLK_SHARED_BYTES, XenbusStateClosing, XenbusStateConnected, XenbusStateInitialised,
} from "../dom0/blkif.js";
import { Blkfront } from "../dom0/front.js";
import {
  CMDLINE_START, CMDLINE_MAX_SIZE, EBDA_START, IRQ_BASE, PAGE_SIZE, PD_START, PD_MAX_COUNT, VIRTIO_MMIO_START, e820Map,
  memoryLayout, E820_RAM,
} from "../arch/x86_64/index.js";

function image(bytes = 64 * 1024, fill = 0xee): string {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-iopath-"));
  const p = join(dir, "disk.img");
  writeFileSync(p, Buffer.alloc(bytes, fill));
  return p;
}

async function until(what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const u32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
const go = (shared: SharedArrayBuffer, n: number): void => {
  const words = new Int32Array(shared);
  Atomics.store(words, 4, n);
  Atomics.notify(words, 4);
};
const reset: FakeStep = { out: 0x64, bytes: [0xfe] }; // i8042 CPU reset: the fake guest is done

test("each I/O path gets its place: virtio slots, the ATA channel, the xenblk ring, doorbell and next GSI", () => {
  const plan = planDevices({
    drives: [
      { id: "root", path: image() },
      { id: "ide", path: image(), ioPath: "emulated" },
      { id: "xen", path: image(64 * 1024), ioPath: "dom0", readOnly: true },
      { id: "data", path: image(), ioPath: "card" },
    ],
    entropy: {},
  });
  assert.deepEqual(plan.virtio.map((s) => [s.name, s.base, s.gsi]), [
    ["virtio-blk-root", VIRTIO_MMIO_START, IRQ_BASE],
    ["virtio-blk-data", VIRTIO_MMIO_START + 0x1000, IRQ_BASE + 1],
    ["virtio-rng", VIRTIO_MMIO_START + 0x2000, IRQ_BASE + 2],
  ]);
  assert.deepEqual(plan.ata && { id: plan.ata.drive.id, port: plan.ata.port, irq: plan.ata.irq }, { id: "ide", port: 0x1f0, irq: 14 });
  assert.deepEqual(plan.dom0 && { ...plan.dom0, drive: plan.dom0.drive.id }, {
    drive: "xen",
    ringGpa: 0x9d000,
    port: 0x610,
    gsi: IRQ_BASE + 3,
    sectors: 128,
  });
  assert.equal(
    devicesCmdline(plan),
    "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6 virtio_mmio.device=4K@0xd0003000:7 " +
      "typervisor_ata=0x1f0:14 typervisor_xenblk=0x9d000@0x610:8:128",
  );
});

test("the xenblk ring pages are e820 RAM that no boot table uses, below the EBDA", () => {
  assert.equal(XENBLK_RING_GPA % PAGE_SIZE, 0);
  assert.ok(XENBLK_RING_GPA + XENBLK_SHARED_BYTES <= EBDA_START, "below the BIOS-reserved EBDA");
  assert.ok(XENBLK_RING_GPA >= CMDLINE_START + CMDLINE_MAX_SIZE, "above the command line");
  assert.ok(XENBLK_RING_GPA >= PD_START + PD_MAX_COUNT * PAGE_SIZE, "above the identity page tables");
  // guest/src/xenblk.c refuses a ring that is not RAM in the e820 map (ring_not_ram).
  const ram = e820Map(memoryLayout(16 * 1024 * 1024)).filter((e) => e.type === E820_RAM);
  assert.ok(ram.some((e) => e.addr <= XENBLK_RING_GPA && e.addr + e.size >= XENBLK_RING_GPA + XENBLK_SHARED_BYTES));
});

test("IRQ 14 is skipped for virtio slots when the ATA channel has it", () => {
  const drives: DriveConfig[] = Array.from({ length: 11 }, (_, i) => ({ id: `d${i}`, path: image(4096) }));
  const without = planDevices({ drives });
  assert.equal(without.virtio[9]!.gsi, ATA_PRIMARY_IRQ, "without an emulated drive, GSIs run on from IRQ_BASE");
  const withAta = planDevices({ drives: [...drives, { id: "ide", path: image(4096), ioPath: "emulated" }] });
  assert.deepEqual(withAta.virtio.map((s) => s.gsi).filter((g) => g === ATA_PRIMARY_IRQ), []);
  assert.equal(withAta.virtio[9]!.gsi, ATA_PRIMARY_IRQ + 1);
});

test("I/O path configuration errors are refused at the edge, naming the drive", () => {
  const is = (re: RegExp) => (e: unknown) => {
    assert.ok(e instanceof DriveConfigError, String(e));
    assert.match(e.message, re);
    return true;
  };
  assert.throws(
    () => planDevices({ drives: [{ id: "a", path: image(), ioPath: "emulated" }, { id: "b", path: image(), ioPath: "emulated" }] }),
    is(/^drive b: only one emulated drive fits \(ATA primary channel, device 0\), and a has it$/),
  );
  assert.throws(
    () => planDevices({ drives: [{ id: "a", path: image(), ioPath: "dom0" }, { id: "b", path: image(), ioPath: "dom0" }] }),
    is(/^drive b: only one dom0 drive is supported/),
  );
  assert.throws(
    () => planDevices({ drives: [{ id: "a", path: image(), ioPath: "emulated", rateLimiter: { ops: { size: 1, refillTime: 1000 } } }] }),
    is(/^drive a: rate limiters are a card feature; an emulated drive has none$/),
  );
  assert.throws(() => planDevices({ drives: [{ id: "a", path: image(), ioPath: "scsi" as "card" }] }), is(/^drive a: I\/O path "scsi" is not one of card, emulated, dom0$/));
  assert.throws(() => planDevices({ drives: [{ id: "a", path: "/nonexistent/x.img", ioPath: "dom0" }] }), is(/^drive a: .*does not exist/));
  assert.throws(() => planDevices({ drives: [{ id: "a", path: image(100), ioPath: "emulated" }] }), is(/^drive a: .*smaller than one 512-byte sector/));
  // Read-only is supported on both paths (FileAtaBackend refuses writes; Dom0 opens O_RDONLY and answers BLKIF_RSP_ERROR).
  assert.doesNotThrow(() => planDevices({ drives: [{ id: "a", path: image(), ioPath: "emulated", readOnly: true }, { id: "b", path: image(), ioPath: "dom0", readOnly: true }] }));
});

/** The probe's WRITE SECTORS (guest/src/ata.c, ATA/ATAPI-6 §9.8 PIO data-out) of one sector at `lba`, 16-bit data writes. */
function ataWriteOneSector(lba: number, sector: Uint8Array): FakeStep[] {
  const out = (reg: number, v: number): FakeStep => ({ out: ATA + reg, bytes: [v] });
  const steps: FakeStep[] = [
    out(REG_DEVICE, DEV_OBSOLETE | DEV_LBA | ((lba >>> 24) & 0x0f)),
    out(REG_SECTOR_COUNT, 1),
    out(REG_LBA_LOW, lba & 0xff),
    out(REG_LBA_MID, (lba >>> 8) & 0xff),
    out(REG_LBA_HIGH, (lba >>> 16) & 0xff),
    out(REG_STATUS_COMMAND, CMD_WRITE_SECTORS),
    { inb: ATA + REG_STATUS_COMMAND }, // DRQ set: the device wants the sector
    { waitFor: 1 },
  ];
  for (let i = 0; i < sector.length; i += 2) steps.push({ out: ATA + REG_DATA, bytes: [sector[i]!, sector[i + 1]!] });
  steps.push({ inb: ATA + REG_STATUS_COMMAND }); // the status after the write: DRDY, no DRQ, no ERR
  return steps;
}

test("emulated drive: WRITE SECTORS from the vCPU thread's port I/O reaches the image and raises IRQ 14", { timeout: 30_000 }, async () => {
  const path = image(64 * 1024, 0xee);
  const sector = Uint8Array.from({ length: 512 }, (_, i) => (i * 7 + 3) & 0xff);
  const m = fakeMachine([[...ataWriteOneSector(3, sector), { waitFor: 2 }, reset]], { drives: [{ id: "ide", path, ioPath: "emulated" }] });
  const vm = new Vm(m, -1);
  await vm.start();
  const words = new Int32Array(m.shared[0]!);
  await until("the status read after the command", () => (Atomics.load(words, 2) & ST_DRQ) !== 0);
  assert.equal(Atomics.load(words, 2) & (ST_BSY | ST_ERR), 0);
  go(m.shared[0]!, 1);
  await until("the status read after the data", () => (Atomics.load(words, 2) & ST_DRQ) === 0);
  assert.equal(Atomics.load(words, 2) & (ST_DRDY | ST_ERR | ST_BSY), ST_DRDY);
  // The fake counts each irqLine call: assert + deassert is one ISA edge, INTRQ at the end of the command.
  assert.equal(Atomics.load(words, 1), 2, "one INTRQ edge on the vCPU's irq line");
  assert.equal(Atomics.load(words, 5), ATA_PRIMARY_IRQ);

  const img = readFileSync(path);
  assert.deepEqual(new Uint8Array(img.subarray(3 * 512, 4 * 512)), sector);
  assert.equal(img[3 * 512 - 1], 0xee);
  assert.equal(img[4 * 512], 0xee);
  const d = vm.driveMetrics()["ide"]!;
  assert.equal(d.ioPath, "emulated");
  assert.equal(d.requests, 1);
  assert.equal(d.bytes, 512);
  assert.equal(d.ata!.sectorsWritten, 1);
  assert.equal(d.ata!.dataAccesses, 256, "one exit per 16-bit word");
  assert.equal(vm.exitCounters()[0]!.UNHANDLED_IO, 0, "every port the driver touched was claimed");
  assert.throws(() => vm.updateDriveRateLimiter("ide", {}), /uses the emulated I\/O path: rate limiters are a card feature/);
  await assert.rejects(vm.updateDrivePath("ide", path), /uses the emulated I\/O path: replacing its image while the VM runs is a card feature/);

  go(m.shared[0]!, 2);
  assert.deepEqual(await vm.wait(), { kind: "reset" });
  vm.close();
});

test("emulated drive on two vCPUs: both workers see one device (shared state, one image)", { timeout: 30_000 }, async () => {
  const path = image(64 * 1024, 0);
  const sector = new Uint8Array(512).fill(0x42);
  // vCPU 0 issues the command and half the data; vCPU 1 writes the other half.
  const steps = ataWriteOneSector(9, sector);
  const cmd = steps.slice(0, 8);
  const data = steps.slice(8, 8 + 256);
  const m = fakeMachine(
    [
      [...cmd, ...data.slice(0, 128), { waitFor: 3 }, reset],
      [{ waitFor: 2 }, ...data.slice(128), { inb: ATA + REG_STATUS_COMMAND }, { block: true }],
    ],
    { drives: [{ id: "ide", path, ioPath: "emulated" }] },
  );
  const vm = new Vm(m, -1);
  await vm.start();
  go(m.shared[0]!, 1);
  await until("vCPU 0's half", () => vm.driveMetrics()["ide"]!.ata!.dataAccesses === 128);
  go(m.shared[1]!, 2);
  await until("the sector written", () => vm.driveMetrics()["ide"]!.ata!.sectorsWritten === 1);
  assert.ok(readFileSync(path).subarray(9 * 512, 10 * 512).every((b) => b === 0x42));
  go(m.shared[0]!, 3);
  assert.deepEqual(await vm.wait(), { kind: "reset" });
  vm.close();
});

test("dom0 drive: a doorbell write on the vCPU thread wakes the Dom0 process, which grant-copies guest RAM into the image", { timeout: 30_000 }, async () => {
  const path = image(64 * 1024, 0xee);
  const port = XENBLK_DOORBELL_PORT;
  const m = fakeMachine(
    [
      [
        { out: port + DOORBELL_XENBUS, bytes: u32(XenbusStateInitialised) }, // after SHARED_RING_INIT
        { waitFor: 1 },
        { out: port + DOORBELL_NOTIFY, bytes: u32(0) }, // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY said so
        { waitFor: 2 },
        { inl: port + DOORBELL_XENBUS },
        { out: port + DOORBELL_XENBUS, bytes: u32(XenbusStateClosing) },
        reset,
      ],
    ],
    { drives: [{ id: "xen", path, ioPath: "dom0" }] },
  );
  const slot = m.dom0!;
  assert.equal(slot.ringGpa, XENBLK_RING_GPA);
  // The guest's front end, before its vCPU runs: ring initialised, one frame granted, one request queued.
  const front = new Blkfront(m.memory, slot.ringGpa);
  front.init();
  const frame = 0x100; // guest page at 1 MiB
  m.memory.fill(frame * PAGE_SIZE, PAGE_SIZE, 0x77);
  front.grant(0, frame, GTF_permit_access);

  const vm = new Vm(m, -1);
  await vm.start();
  const pid = vm.driveMetrics()["xen"]!.dom0!.pid;
  assert.doesNotThrow(() => process.kill(pid, 0), "the Dom0 process runs while the VM does");
  await until("xenbus Connected", () => vm.driveMetrics()["xen"]!.dom0!.xenbusState === XenbusStateConnected);

  front.queue({ op: BLKIF_OP_WRITE, id: 7n, sector: 8n, segs: [{ gref: 0, first: 0, last: 7 }] });
  assert.equal(front.push(), true, "the back end asked to be notified");
  go(m.shared[0]!, 1);
  const irq = new Uint8Array(8);
  await until("the Dom0 interrupt (irqfd)", () => {
    try {
      return sys.read(slot.irqFd, irq) === 8;
    } catch (e) {
      if ((e as sys.SysError).code === "EAGAIN") return false;
      throw e;
    }
  });
  assert.deepEqual(front.reap(), [{ id: 7n, op: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
  const img = readFileSync(path);
  assert.ok(img.subarray(8 * 512, 16 * 512).every((b) => b === 0x77));
  assert.equal(img[8 * 512 - 1], 0xee);
  assert.equal(img[16 * 512], 0xee);

  go(m.shared[0]!, 2);
  assert.deepEqual(await vm.wait(), { kind: "reset" });
  assert.equal(new Int32Array(m.shared[0]!)[2], XenbusStateConnected, "the xenbus port read the back end's state");
  // The VM stopped its Dom0; the metrics stay readable.
  const d = vm.driveMetrics()["xen"]!;
  assert.equal(d.ioPath, "dom0");
  assert.equal(d.requests, 1);
  assert.equal(d.bytes, 4096);
  assert.equal(d.errors, 0);
  assert.ok(d.kicks >= 1 && d.interrupts >= 1);
  assert.equal(d.needsReset, 0);
  assert.ok(d.cpuMicros > 0, `the Dom0 process's CPU time for its request is counted: ${d.cpuMicros} µs`);
  assert.equal(d.dom0!.cpuSeconds, d.cpuMicros / 1e6, "cpuSeconds is the same CPU time as cpuMicros");
  assert.equal(d.dom0!.copiedBytes, 2 * 4096, "disk <-> bounce buffer <-> granted frame");
  assert.throws(() => process.kill(pid, 0), /ESRCH/, "the Dom0 process ended with the VM");
  vm.close();
});

test("dom0 drive whose image went away before start: start() fails clearly and leaves nothing running", { timeout: 30_000 }, async () => {
  const path = image();
  const m = fakeMachine([[{ block: true }]], { drives: [{ id: "xen", path, ioPath: "dom0" }] });
  rmSync(path);
  const vm = new Vm(m, -1);
  await assert.rejects(vm.start(), /dom0 image .* cannot be read \(ENOENT\)/);
  assert.deepEqual(vm.driveMetrics(), {});
  vm.stop("test");
  await vm.wait();
  vm.close();
});
