// The card runtime serves every queue of a device and polls a model's own descriptors beside the
// kicks (device-kind.ts CardModel), the shape virtio-net (a TAP) and vsock (sockets) need: a
// two-queue test model (testing/two-queue-model.ts) on a real worker, memfd RAM and eventfds.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../sys/index.js";
import { signalEventfd } from "./index.js";
import { startWiredCard } from "./testing.js";
import { startKindCard } from "./card.js";
import { TestDriver, initDevice, layoutAt, w32 } from "../devices/virtio/testing.js";
import { F_RING_INDIRECT_DESC, F_VERSION_1, MMIO_QUEUE_NOTIFY, bit } from "../devices/virtio/spec.js";
import type { VirtioDeviceKind } from "../devices/virtio/device-kind.js";
import type { TwoQueueData } from "./testing/two-queue-model.js";

const MiB = 1024 * 1024;

const twoQueueKind: VirtioDeviceKind<TwoQueueData> = {
  kind: "two-queue",
  instances: () => [],
  slotName: () => "two-queue",
  cardConfig: (c) => c,
  open: (c) => ({
    info: { deviceId: 0x7f, features: bit(F_VERSION_1) | bit(F_RING_INDIRECT_DESC), numQueues: 2, queueNumMax: 16, config: new Uint8Array(0) },
    workerData: c,
    release: () => {},
  }),
  model: new URL("./testing/two-queue-model.js", import.meta.url),
  loadModel: () => import("./testing/two-queue-model.js"),
};

/** Polls `cond` every ms until it holds or `ms` pass. */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 1));
  }
}

test("card runtime: a kick on queue 0 and a ready descriptor of the model's own are both served, queue 1 too, with one interrupt line", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-two-queue-"));
  const inFd = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  const outPath = join(dir, "out");
  const outFd = sys.open(outPath, sys.O_RDWR | sys.O_CREAT | sys.O_CLOEXEC, 0o600);
  const { card, guest, dev, irqFd } = await startWiredCard(t, 2 * MiB, (wiring) => startKindCard(twoQueueKind, { outFd, inFd }, wiring));
  t.after(() => {
    for (const fd of [inFd, outFd]) sys.close(fd);
    rmSync(dir, { recursive: true, force: true });
  });
  const tx = layoutAt(0x1000, 16);
  const rx = layoutAt(0x4000, 16);
  assert.equal(initDevice(dev, [tx, rx]) & 0xff, 0xf, "both queues set up, DRIVER_OK");
  const txDrv = new TestDriver(guest.memory, tx);
  const rxDrv = new TestDriver(guest.memory, rx);
  const irqs = () => {
    try {
      const b = new Uint8Array(8);
      sys.read(irqFd, b);
      return Number(new DataView(b.buffer).getBigUint64(0, true));
    } catch {
      return 0; // EAGAIN: none since the last read
    }
  };

  // Queue 0: two chains of readable bytes, one kick naming queue 0.
  guest.memory.write(0x10000, new TextEncoder().encode("hello, "));
  guest.memory.write(0x10100, new TextEncoder().encode("card"));
  txDrv.publish(txDrv.addChain([{ addr: 0x10000, len: 7 }]));
  txDrv.publish(txDrv.addChain([{ addr: 0x10100, len: 4 }]));
  w32(dev, MMIO_QUEUE_NOTIFY, 0);
  await until(() => txDrv.usedIdx() === 2);
  assert.deepEqual(txDrv.takeUsed(), [{ id: 0, len: 0 }, { id: 1, len: 0 }]);
  assert.equal(readFileSync(outPath, "utf8"), "hello, card");

  // The model's own descriptor: three tokens wait for queue 1 buffers; two are posted (and kicked
  // on queue 1), so two are delivered and one waits.
  // The interrupt follows the used-ring update: wait for it.
  let raised = 0;
  await until(() => (raised = irqs()) > 0);
  rxDrv.publish(rxDrv.addChain([{ addr: 0x20000, len: 16, write: true }]));
  rxDrv.publish(rxDrv.addChain([{ addr: 0x20100, len: 16, write: true }]));
  w32(dev, MMIO_QUEUE_NOTIFY, 1);
  signalEventfd(inFd);
  signalEventfd(inFd);
  signalEventfd(inFd);
  await until(() => rxDrv.usedIdx() === 2);
  assert.deepEqual(rxDrv.takeUsed(), [{ id: 0, len: 4 }, { id: 1, len: 4 }]);
  assert.deepEqual([guest.memory.readU32(0x20000), guest.memory.readU32(0x20100)], [0, 1]);
  await until(() => (raised = irqs()) > 0);
  assert.ok(raised >= 1);
  // The third token is delivered once the driver posts a buffer and kicks queue 1.
  rxDrv.publish(rxDrv.addChain([{ addr: 0x20200, len: 16, write: true }]));
  w32(dev, MMIO_QUEUE_NOTIFY, 1);
  await until(() => rxDrv.usedIdx() === 3);
  assert.deepEqual(rxDrv.takeUsed(), [{ id: 2, len: 4 }]);
  assert.equal(guest.memory.readU32(0x20200), 2);
  const m = card.metrics();
  assert.equal(m.requests, 5, "two sends and three deliveries");
  assert.equal(m.bytes, 11 + 3 * 4);
  assert.equal(m.errors, 0);
  assert.equal(card.failure, undefined);
});
