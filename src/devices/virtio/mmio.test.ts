// virtio-mmio transport: virtio 1.2 §4.2.2 registers, §2.1/§3.1.1 status machine, §2.1.2 NEEDS_RESET.
import { test } from "node:test";
import assert from "node:assert/strict";
import { TransportState, VirtioMmioTransport, createTransportState } from "./mmio.js";
import { initDevice, layoutAt, r32, w32 } from "./testing.js";
import {
  F_RING_EVENT_IDX,
  F_VERSION_1,
  INT_CONFIG_CHANGE,
  INT_USED_BUFFER,
  MMIO_CONFIG,
  MMIO_CONFIG_GENERATION,
  MMIO_DEVICE_FEATURES,
  MMIO_DEVICE_FEATURES_SEL,
  MMIO_DEVICE_ID,
  MMIO_DRIVER_FEATURES,
  MMIO_DRIVER_FEATURES_SEL,
  MMIO_INTERRUPT_ACK,
  MMIO_INTERRUPT_STATUS,
  MMIO_LEGACY_QUEUE_PFN,
  MMIO_MAGIC,
  MMIO_MAGIC_VALUE,
  MMIO_QUEUE_NOTIFY,
  MMIO_QUEUE_NUM,
  MMIO_QUEUE_NUM_MAX,
  MMIO_QUEUE_READY,
  MMIO_QUEUE_SEL,
  MMIO_SHM_LEN_LOW,
  MMIO_STATUS,
  MMIO_VERSION,
  STATUS_ACKNOWLEDGE,
  STATUS_DEVICE_NEEDS_RESET,
  STATUS_DRIVER,
  STATUS_DRIVER_OK,
  STATUS_FEATURES_OK,
  bit,
} from "./spec.js";

const ALL = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;

function device(features = bit(F_RING_EVENT_IDX)) {
  const sab = createTransportState();
  const state = new TransportState(sab);
  state.setDeviceInfo({ deviceId: 2, features, numQueues: 1, queueNumMax: 64, config: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]) });
  const kicks: number[] = [];
  const dev = new VirtioMmioTransport(sab, (q) => kicks.push(q));
  return { sab, state, dev, kicks };
}

test("virtio 1.2 §4.2.2: identity registers (magic, version 2, device id), no SHM regions", () => {
  const { dev } = device();
  assert.equal(r32(dev, MMIO_MAGIC_VALUE), MMIO_MAGIC);
  assert.equal(r32(dev, MMIO_VERSION), 2);
  assert.equal(r32(dev, MMIO_DEVICE_ID), 2);
  assert.equal(r32(dev, MMIO_SHM_LEN_LOW), 0xffffffff);
  const empty = new VirtioMmioTransport(createTransportState(), () => {});
  assert.equal(r32(empty, MMIO_DEVICE_ID), 0, "no device: DeviceID 0 (§4.2.3.1.1)");
});

test("virtio 1.2 §4.2.2.2: control registers take aligned 32-bit accesses only", () => {
  const { dev } = device();
  const b = new Uint8Array(2);
  dev.read(MMIO_MAGIC_VALUE, b);
  assert.deepEqual([...b], [0, 0]);
  dev.write(MMIO_STATUS, Uint8Array.of(1)); // byte write: dropped
  assert.equal(r32(dev, MMIO_STATUS), 0);
});

test("virtio 1.2 §3.1.1: the init sequence reaches DRIVER_OK and VERSION_1 is offered", () => {
  const { dev, state } = device();
  w32(dev, MMIO_DEVICE_FEATURES_SEL, 1);
  assert.equal(r32(dev, MMIO_DEVICE_FEATURES) & 1, 1, "bit 32 = VIRTIO_F_VERSION_1");
  const layout = layoutAt(0x1000, 16);
  assert.equal(initDevice(dev, layout), ALL);
  const q = state.queue(0);
  assert.deepEqual([q.num, q.ready, q.desc, q.driver, q.device], [16, true, layout.desc, layout.avail, layout.used]);
  assert.equal(state.driverFeatures, state.deviceFeatures);
});

test("virtio 1.2 §2.2.2/§6.1: FEATURES_OK refused for features the device lacks, or without VERSION_1", () => {
  const { dev } = device();
  const layout = layoutAt(0x1000, 16);
  assert.equal(initDevice(dev, layout, (f) => f | bit(40)), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  assert.equal(initDevice(dev, layout, (f) => f & ~bit(F_VERSION_1)), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
});

test("virtio 1.2 §3.1.1: out-of-order status writes and cleared bits are ignored; 0 resets", () => {
  const { dev, state } = device();
  w32(dev, MMIO_STATUS, STATUS_DRIVER_OK);
  assert.equal(r32(dev, MMIO_STATUS), 0);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK); // skips FEATURES_OK
  assert.equal(r32(dev, MMIO_STATUS), STATUS_ACKNOWLEDGE);
  initDevice(dev, layoutAt(0x1000, 16));
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE); // clearing bits
  assert.equal(r32(dev, MMIO_STATUS), ALL);
  const resets = state.resetCount;
  w32(dev, MMIO_STATUS, 0);
  assert.equal(r32(dev, MMIO_STATUS), 0);
  assert.equal(state.queue(0).ready, false);
  assert.equal(state.resetCount, resets + 1);
});

test("virtio 1.2 §4.2.2: queue registers: NumMax, power-of-two Num, writes only between FEATURES_OK and DRIVER_OK", () => {
  const { dev, state } = device();
  w32(dev, MMIO_QUEUE_SEL, 0);
  assert.equal(r32(dev, MMIO_QUEUE_NUM_MAX), 64);
  w32(dev, MMIO_QUEUE_SEL, 1);
  assert.equal(r32(dev, MMIO_QUEUE_NUM_MAX), 0, "queue 1 does not exist");
  w32(dev, MMIO_QUEUE_SEL, 0);
  w32(dev, MMIO_QUEUE_NUM, 16); // before FEATURES_OK: dropped
  assert.equal(state.queue(0).num, 0);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  w32(dev, MMIO_DEVICE_FEATURES_SEL, 1);
  initDevice(dev, layoutAt(0x1000, 16));
  w32(dev, MMIO_QUEUE_NUM, 32); // after DRIVER_OK: dropped
  assert.equal(state.queue(0).num, 16);
  // In set-up: 48 (not a power of two) and 128 (> NumMax) are refused.
  w32(dev, MMIO_STATUS, 0);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  assert.equal(r32(dev, MMIO_STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER, "no features written: VERSION_1 missing");
  w32(dev, MMIO_DRIVER_FEATURES_SEL, 1);
  w32(dev, MMIO_DRIVER_FEATURES, 1); // VERSION_1
  w32(dev, MMIO_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  assert.equal(r32(dev, MMIO_STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
  for (const bad of [48, 128, 0]) {
    w32(dev, MMIO_QUEUE_NUM, bad);
    assert.equal(state.queue(0).num, 0, `QueueNum ${bad} refused`);
  }
  w32(dev, MMIO_QUEUE_READY, 1);
  assert.equal(r32(dev, MMIO_QUEUE_READY), 0, "not ready without a size");
  w32(dev, MMIO_QUEUE_NUM, 32);
  assert.equal(state.queue(0).num, 32);
});

test("virtio 1.2 §4.2.2: QueueNotify reaches the notifier; InterruptStatus/ACK; legacy QueuePFN ignored", () => {
  const { dev, state, kicks } = device();
  initDevice(dev, layoutAt(0x1000, 16));
  w32(dev, MMIO_QUEUE_NOTIFY, 0);
  w32(dev, MMIO_QUEUE_NOTIFY, 5); // no such queue
  assert.deepEqual(kicks, [0]);
  state.raiseInterrupt(INT_USED_BUFFER | INT_CONFIG_CHANGE);
  assert.equal(r32(dev, MMIO_INTERRUPT_STATUS), 3);
  w32(dev, MMIO_INTERRUPT_ACK, INT_USED_BUFFER);
  assert.equal(r32(dev, MMIO_INTERRUPT_STATUS), INT_CONFIG_CHANGE);
  w32(dev, MMIO_LEGACY_QUEUE_PFN, 0x1234);
  assert.equal(r32(dev, MMIO_LEGACY_QUEUE_PFN), 0);
  assert.equal(r32(dev, MMIO_QUEUE_READY), 1);
});

test("virtio 1.2 §4.2.2 Config, ConfigGeneration: any-width config reads; updates bump the generation", () => {
  const { dev, state } = device();
  const b = new Uint8Array(8);
  dev.read(MMIO_CONFIG + 1, b.subarray(0, 2));
  assert.deepEqual([...b.subarray(0, 2)], [2, 3]);
  dev.read(MMIO_CONFIG + 4, b);
  assert.deepEqual([...b], [5, 6, 7, 8, 9, 0, 0, 0], "bytes past the config read as zero");
  const g = r32(dev, MMIO_CONFIG_GENERATION);
  state.updateConfig(0, Uint8Array.of(0xaa));
  assert.equal(r32(dev, MMIO_CONFIG_GENERATION), g + 1);
  assert.equal(r32(dev, MMIO_INTERRUPT_STATUS) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
});

test("virtio 1.2 §2.1.2: NEEDS_RESET is the device's; the driver cannot clear it, reset does", () => {
  const { dev, state } = device();
  initDevice(dev, layoutAt(0x1000, 16));
  state.markNeedsReset(7);
  assert.equal(r32(dev, MMIO_STATUS), ALL | STATUS_DEVICE_NEEDS_RESET);
  assert.equal(r32(dev, MMIO_INTERRUPT_STATUS) & INT_CONFIG_CHANGE, INT_CONFIG_CHANGE);
  w32(dev, MMIO_STATUS, ALL);
  assert.equal(r32(dev, MMIO_STATUS), ALL | STATUS_DEVICE_NEEDS_RESET);
  w32(dev, MMIO_STATUS, 0);
  assert.equal(r32(dev, MMIO_STATUS), 0);
  assert.equal(state.failure, 0);
});

test("two transports (two vCPU workers) over one state see one device", () => {
  const { sab, dev } = device();
  const other = new VirtioMmioTransport(sab, () => {});
  initDevice(dev, layoutAt(0x1000, 16));
  assert.equal(r32(other, MMIO_STATUS), ALL);
  assert.throws(() => new TransportState(new SharedArrayBuffer(16)), RangeError);
});
