import { test } from "node:test";
import assert from "node:assert/strict";
import { Bus, BusError, type BusDevice } from "./bus.js";

class Recorder implements BusDevice {
  reads: number[] = [];
  writes: Array<[number, number[]]> = [];
  read(offset: number, data: Uint8Array): void {
    this.reads.push(offset);
    data.fill(offset);
  }
  write(offset: number, data: Uint8Array): void {
    this.writes.push([offset, [...data]]);
  }
}

test("bus dispatches by range with offsets relative to the base", () => {
  const bus = new Bus("pio");
  const a = new Recorder();
  const b = new Recorder();
  bus.insert(0x3f8, 8, "com1", a);
  bus.insert(0x60, 5, "i8042", b);
  const d = new Uint8Array(1);
  assert.equal(bus.read(0x3fd, d), true);
  assert.deepEqual(a.reads, [5]);
  assert.equal(d[0], 5);
  assert.equal(bus.write(0x64, Uint8Array.of(0xfe)), true);
  assert.deepEqual(b.writes, [[4, [0xfe]]]);
});

test("unclaimed reads return all ones and report false; unclaimed writes are dropped", () => {
  const bus = new Bus("pio");
  bus.insert(0x3f8, 8, "com1", new Recorder());
  const d = new Uint8Array(4);
  assert.equal(bus.read(0x600, d), false);
  assert.deepEqual([...d], [0xff, 0xff, 0xff, 0xff]);
  assert.equal(bus.write(0x600, Uint8Array.of(1)), false);
  // An access that starts inside a range but runs past its end is not the device's.
  assert.equal(bus.read(0x3ff, new Uint8Array(2)), false);
});

test("overlapping ranges are refused with both names in the error", () => {
  const bus = new Bus("mmio");
  bus.insert(0x1000, 0x100, "first", new Recorder());
  assert.throws(() => bus.insert(0x10ff, 2, "second", new Recorder()), (e: unknown) => {
    assert.ok(e instanceof BusError);
    assert.match(e.message, /second at 0x10ff\+0x2 overlaps first at 0x1000\+0x100/);
    return true;
  });
  assert.throws(() => bus.insert(-1, 1, "neg", new Recorder()), BusError);
  assert.throws(() => bus.insert(0, 0, "empty", new Recorder()), BusError);
});

test("find works across many ranges (binary search)", () => {
  const bus = new Bus("mmio");
  for (let i = 99; i >= 0; i--) bus.insert(i * 0x1000, 0x200, `d${i}`, new Recorder());
  for (let i = 0; i < 100; i++) {
    assert.equal(bus.find(i * 0x1000 + 0x1ff)?.name, `d${i}`);
    assert.equal(bus.find(i * 0x1000 + 0x200), undefined);
  }
});
