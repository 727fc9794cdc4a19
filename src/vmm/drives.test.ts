// Drives: edge validation, slots and the command line; and the whole virtio path on real
// threads over the fake machine: a vCPU thread's MMIO bus carries the driver's register writes
// and its QueueNotify, the card (its own worker, mapping the memfd) does the I/O and raises the
// interrupt eventfd. Only KVM's ioeventfd/irqfd registrations are not exercised here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../sys/index.js";
import { assignDriveSlots, assignDeviceSlots, cardDriveId, virtioMmioCmdline, DriveConfigError } from "./drives.js";
import { chipInit } from "../security/chip.js";
import { Vm } from "./vm.js";
import { fakeMachine, type FakeStep } from "./testing/fake-machine.js";
import { TestDriver, layoutAt, r32 } from "../devices/virtio/testing.js";
import { createVirtioMmioDevice } from "../cards/index.js";
import {
  BLK_S_OK, BLK_T_OUT, MMIO_STATUS, MMIO_QUEUE_NOTIFY, MMIO_DRIVER_FEATURES, MMIO_DRIVER_FEATURES_SEL, MMIO_QUEUE_SEL,
  MMIO_QUEUE_NUM, MMIO_QUEUE_DESC_LOW, MMIO_QUEUE_DESC_HIGH, MMIO_QUEUE_DRIVER_LOW, MMIO_QUEUE_DRIVER_HIGH,
  MMIO_QUEUE_DEVICE_LOW, MMIO_QUEUE_DEVICE_HIGH, MMIO_QUEUE_READY, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK,
  STATUS_DRIVER_OK,
} from "../devices/virtio/spec.js";
import { VIRTIO_MMIO_START, IRQ_BASE } from "../arch/x86_64/layout.js";

function image(bytes = 64 * 1024, fill = 0xee): string {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-drive-"));
  const p = join(dir, "disk.img");
  writeFileSync(p, Buffer.alloc(bytes, fill));
  return p;
}

test("drives get consecutive slots and interrupt lines, described on the command line", () => {
  const a = image();
  const b = image();
  const slots = assignDriveSlots([
    { id: "rootfs", path: a },
    { id: "data", path: b, readOnly: true },
  ]);
  assert.deepEqual(
    slots.map((s) => [cardDriveId(s.device) ?? s.device.kind.kind, s.base, s.gsi]),
    [
      ["rootfs", VIRTIO_MMIO_START, IRQ_BASE],
      ["data", VIRTIO_MMIO_START + 0x1000, IRQ_BASE + 1],
    ],
  );
  assert.equal(virtioMmioCmdline(slots), "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6");
  assert.equal(virtioMmioCmdline([]), "");
});

test("bad drives are refused at the edge, naming the drive", () => {
  assert.throws(() => assignDriveSlots([{ id: "d0", path: "/nonexistent/disk.img" }]), (e: unknown) => {
    assert.ok(e instanceof DriveConfigError);
    assert.match(e.message, /^drive d0: .*\/nonexistent\/disk\.img does not exist/);
    return true;
  });
  const p = image();
  assert.throws(() => assignDriveSlots([{ id: "x", path: p }, { id: "x", path: p }]), /drive id "x" is used twice/);
  assert.throws(() => assignDriveSlots([{ id: "has space", path: p }]), /letters, digits/);
  assert.throws(() => assignDriveSlots([{ id: "a".repeat(21), path: p }]), /1-20/);
  assert.throws(() => assignDriveSlots([{ id: "tiny", path: image(100) }]), /smaller than one 512-byte sector/);
  assert.throws(() => assignDriveSlots([{ id: "dir", path: tmpdir() }]), /drive dir: /);
});

/** MMIO writes a driver on the vCPU makes to bring up queue 0 (virtio 1.2 §3.1.1), accepting VERSION_1 only. */
function driverInit(base: number, layout: ReturnType<typeof layoutAt>): FakeStep[] {
  const w = (off: number, v: number): FakeStep => ({ mmioWrite: base + off, bytes: [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff] });
  return [
    w(MMIO_STATUS, 0),
    w(MMIO_STATUS, STATUS_ACKNOWLEDGE),
    w(MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER),
    w(MMIO_DRIVER_FEATURES_SEL, 1),
    w(MMIO_DRIVER_FEATURES, 1), // bit 32: VIRTIO_F_VERSION_1
    w(MMIO_DRIVER_FEATURES_SEL, 0),
    w(MMIO_DRIVER_FEATURES, 0),
    w(MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK),
    w(MMIO_QUEUE_SEL, 0),
    w(MMIO_QUEUE_NUM, layout.size),
    w(MMIO_QUEUE_DESC_LOW, layout.desc),
    w(MMIO_QUEUE_DESC_HIGH, 0),
    w(MMIO_QUEUE_DRIVER_LOW, layout.avail),
    w(MMIO_QUEUE_DRIVER_HIGH, 0),
    w(MMIO_QUEUE_DEVICE_LOW, layout.used),
    w(MMIO_QUEUE_DEVICE_HIGH, 0),
    w(MMIO_QUEUE_READY, 1),
    w(MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
  ];
}

async function until(what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test("a write from the vCPU thread reaches the image through the card, and the interrupt fires", { timeout: 30_000 }, async () => {
  const path = image();
  const base = VIRTIO_MMIO_START;
  const layout = layoutAt(0x1000, 16);
  const kick: FakeStep = { mmioWrite: base + MMIO_QUEUE_NOTIFY, bytes: [0, 0, 0, 0] };
  const m = fakeMachine([[...driverInit(base, layout), { waitFor: 1 }, kick, { waitFor: 2 }, { out: 0x64, bytes: [0xfe] }]], {
    drives: [{ id: "d0", path }],
  });
  const vm = new Vm(m, -1);
  await vm.start();
  const slot = m.virtio[0]!;
  const view = createVirtioMmioDevice(slot.state, slot.notifyFd); // the host's view of the same registers
  await until("DRIVER_OK", () => r32(view, MMIO_STATUS) === 0xf);

  // The guest's request: write 1 KiB of 0x5a at sector 2.
  const mem = m.memory;
  const drv = new TestDriver(mem, layout);
  mem.writeU32(0x8000, BLK_T_OUT);
  mem.writeU64(0x8008, 2n);
  mem.fill(0x9000, 1024, 0x5a);
  mem.writeU8(0xa000, 0xff);
  drv.publish(drv.addChain([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 1024 }, { addr: 0xa000, len: 1, write: true }]));
  const words = new Int32Array(m.shared[0]!);
  Atomics.store(words, 4, 1);
  Atomics.notify(words, 4);

  const irq = new Uint8Array(8);
  await until("the card's interrupt", () => {
    try {
      sys.read(slot.irqFd, irq);
      return true;
    } catch (e) {
      if ((e as sys.SysError).code === "EAGAIN") return false;
      throw e;
    }
  });
  assert.equal(mem.readU8(0xa000), BLK_S_OK);
  assert.equal(drv.takeUsed().length, 1);
  const img = readFileSync(path);
  assert.ok(img.subarray(1024, 2048).every((b) => b === 0x5a));
  assert.equal(img[1023], 0xee);
  assert.equal(img[2048], 0xee);
  assert.equal(vm.driveMetrics()["d0"]!.requests, 1);
  assert.ok(vm.exitCounters()[0]!.MMIO_WRITE >= 19, "the driver's register writes were MMIO exits on the vCPU thread");
  assert.equal(vm.exitCounters()[0]!.UNHANDLED_MMIO, 0, "every one of them was claimed by the transport");

  Atomics.store(words, 4, 2);
  Atomics.notify(words, 4);
  assert.deepEqual(await vm.wait(), { kind: "reset" });
  vm.close();
});

test("entropy and NSM devices take the slots after the drives", () => {
  const chipDir = join(mkdtempSync(join(tmpdir(), "typervisor-chip-")), "chip");
  chipInit(chipDir);
  const slots = assignDeviceSlots({ drives: [{ id: "rootfs", path: image() }], entropy: {}, nsm: { chipDir } });
  assert.deepEqual(
    slots.map((s) => [s.name, s.base, s.gsi]),
    [
      ["virtio-blk-rootfs", VIRTIO_MMIO_START, IRQ_BASE],
      ["virtio-rng", VIRTIO_MMIO_START + 0x1000, IRQ_BASE + 1],
      ["virtio-nsm", VIRTIO_MMIO_START + 0x2000, IRQ_BASE + 2],
    ],
  );
});

test("a VM with a drive, entropy and an NSM starts one card each and stops them with the VM", { timeout: 30_000 }, async () => {
  const chipDir = join(mkdtempSync(join(tmpdir(), "typervisor-chip-")), "chip");
  chipInit(chipDir);
  const m = fakeMachine([[{ block: true }]], { drives: [{ id: "d0", path: image() }], entropy: {}, nsm: { chipDir } });
  const vm = new Vm(m, -1);
  await vm.start();
  assert.deepEqual(Object.keys(vm.deviceMetrics()).sort(), ["virtio-blk-d0", "virtio-nsm", "virtio-rng"]);
  assert.deepEqual(Object.keys(vm.driveMetrics()), ["d0"]);
  assert.throws(() => vm.updateDriveRateLimiter("rng", {}), /no running drive "rng"/);
  vm.updateDriveRateLimiter("d0", { ops: { size: 10, refillTime: 1000 } });
  vm.stop("test");
  assert.deepEqual(await vm.wait(), { kind: "stopped", by: "test" });
  vm.close();
});

test("an NSM whose chip identity is missing is refused at the edge", () => {
  assert.throws(() => assignDeviceSlots({ nsm: { chipDir: "/nonexistent/chip" } }), (e: unknown) => {
    assert.ok(e instanceof DriveConfigError);
    assert.match(e.message, /^nsm: no chip identity at \/nonexistent\/chip/);
    return true;
  });
});

test("a card that fails to start fails start() clearly and leaves nothing running", { timeout: 30_000 }, async () => {
  const chipDir = join(mkdtempSync(join(tmpdir(), "typervisor-chip-")), "chip");
  chipInit(chipDir);
  const m = fakeMachine([[{ block: true }]], { entropy: {}, nsm: { chipDir } });
  rmSync(chipDir, { recursive: true }); // gone between configuration and start
  const vm = new Vm(m, -1);
  await assert.rejects(vm.start(), /chip/);
  assert.deepEqual(vm.deviceMetrics(), {});
  vm.stop("test");
  await vm.wait();
  vm.close();
});
