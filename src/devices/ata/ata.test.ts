// The ATA device model through a TypeScript driver that makes the same register accesses as the
// probe guest's driver (guest/src/ata.c), on a real PIO Bus over a real image file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { Bus } from "../bus.js";
import {
  ATA_COMMAND_BLOCK_LEN,
  ATA_CONTROL_BLOCK_LEN,
  ATA_PRIMARY_COMMAND_BASE as CMD,
  ATA_PRIMARY_CONTROL_BASE as CTL,
  ATA_STATE_BYTES,
  AtaDevice,
  FileAtaBackend,
  ataString,
  createAtaBusDevices,
  createAtaState,
  openAtaImage,
  CMD_FLUSH_CACHE,
  CMD_IDENTIFY_DEVICE,
  CMD_READ_SECTORS,
  CMD_WRITE_SECTORS,
  CTL_NIEN,
  CTL_SRST,
  DEV_DEV,
  DEV_LBA,
  DEV_OBSOLETE,
  ERR_ABRT,
  ERR_IDNF,
  ERR_UNC,
  ID_COMMAND_SET_2,
  ID_LBA28_SECTORS,
  ID_MODEL,
  ID_SERIAL,
  REG_DATA,
  REG_DEVICE,
  REG_ERROR_FEATURES,
  REG_LBA_HIGH,
  REG_LBA_LOW,
  REG_LBA_MID,
  REG_SECTOR_COUNT,
  REG_STATUS_COMMAND,
  ST_BSY,
  ST_DRDY,
  ST_DRQ,
  ST_ERR,
  type AtaBackend,
} from "./index.js";

const SECTOR = 512;

class Irq {
  n = 0;
  trigger(): void {
    this.n++;
  }
}

/** A host-side ATA PIO driver: the register sequence of ATA/ATAPI-6 §9.7/§9.8, as the guest does it. */
class Driver {
  constructor(readonly bus: Bus) {}
  outb(port: number, v: number): void {
    this.bus.write(port, Uint8Array.of(v));
  }
  inb(port: number): number {
    const d = new Uint8Array(1);
    this.bus.read(port, d);
    return d[0]!;
  }
  inw(): number {
    const d = new Uint8Array(2);
    this.bus.read(CMD + REG_DATA, d);
    return d[0]! | (d[1]! << 8);
  }
  outw(v: number): void {
    this.bus.write(CMD + REG_DATA, Uint8Array.of(v & 0xff, v >>> 8));
  }
  status(): number {
    return this.inb(CMD + REG_STATUS_COMMAND);
  }
  setup(lba: number, count: number, dev = DEV_OBSOLETE | DEV_LBA): void {
    this.outb(CMD + REG_DEVICE, dev | ((lba >>> 24) & 0x0f));
    this.outb(CMD + REG_ERROR_FEATURES, 0);
    this.outb(CMD + REG_SECTOR_COUNT, count & 0xff);
    this.outb(CMD + REG_LBA_LOW, lba & 0xff);
    this.outb(CMD + REG_LBA_MID, (lba >>> 8) & 0xff);
    this.outb(CMD + REG_LBA_HIGH, (lba >>> 16) & 0xff);
  }
  /** Reads one DRQ block (256 words) after waiting for DRQ; returns null on ERR. */
  readBlock(): Uint8Array | null {
    const st = this.status();
    if (st & ST_ERR) return null;
    assert.ok(st & ST_DRQ, `DRQ expected, status 0x${st.toString(16)}`);
    const b = new Uint8Array(SECTOR);
    for (let i = 0; i < 256; i++) {
      const w = this.inw();
      b[2 * i] = w & 0xff;
      b[2 * i + 1] = w >>> 8;
    }
    return b;
  }
  identify(): Uint8Array {
    this.outb(CMD + REG_DEVICE, DEV_OBSOLETE);
    this.outb(CMD + REG_STATUS_COMMAND, CMD_IDENTIFY_DEVICE);
    const b = this.readBlock();
    assert.ok(b);
    return b;
  }
  read(lba: number, count: number): Uint8Array | null {
    this.setup(lba, count);
    this.outb(CMD + REG_STATUS_COMMAND, CMD_READ_SECTORS);
    const n = count === 0 ? 256 : count;
    const out = new Uint8Array(n * SECTOR);
    for (let s = 0; s < n; s++) {
      const b = this.readBlock();
      if (b === null) return null;
      out.set(b, s * SECTOR);
    }
    return out;
  }
  write(lba: number, data: Uint8Array): boolean {
    const n = data.length / SECTOR;
    this.setup(lba, n);
    this.outb(CMD + REG_STATUS_COMMAND, CMD_WRITE_SECTORS);
    for (let s = 0; s < n; s++) {
      const st = this.status();
      if (st & ST_ERR) return false;
      assert.ok(st & ST_DRQ);
      for (let i = 0; i < 256; i++) this.outw(data[s * SECTOR + 2 * i]! | (data[s * SECTOR + 2 * i + 1]! << 8));
    }
    return (this.status() & (ST_ERR | ST_DRQ)) === 0;
  }
}

function rig(sectors = 1024, fill = 0xee) {
  const dir = mkdtempSync(join(tmpdir(), "ata-"));
  const path = join(dir, "disk.img");
  writeFileSync(path, Buffer.alloc(sectors * SECTOR, fill));
  const image = openAtaImage(path);
  const state = createAtaState();
  const irq = new Irq();
  const dev = createAtaBusDevices(state, new FileAtaBackend(image.fd, image.sizeBytes), irq, { serial: "SER123", model: "Test Disk" });
  const bus = new Bus("pio");
  bus.insert(CMD, ATA_COMMAND_BLOCK_LEN, "ata0", dev.commandBlock);
  bus.insert(CTL, ATA_CONTROL_BLOCK_LEN, "ata0-ctl", dev.controlBlock);
  const cleanup = () => {
    image.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { path, image, state, irq, dev, bus, drv: new Driver(bus), cleanup };
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed + (i >> 9)) & 0xff);

test("ATA: power-on signature and status (ATA/ATAPI-6 §9.12)", (t) => {
  const r = rig();
  t.after(r.cleanup);
  assert.equal(r.drv.status(), ST_DRDY | 0x10);
  assert.equal(r.drv.inb(CMD + REG_SECTOR_COUNT), 1);
  assert.equal(r.drv.inb(CMD + REG_LBA_LOW), 1);
  assert.equal(r.drv.inb(CMD + REG_LBA_MID), 0);
  assert.equal(r.drv.inb(CMD + REG_LBA_HIGH), 0);
});

test("ATA: IDENTIFY DEVICE reports LBA28 capacity, strings, FLUSH CACHE and a valid integrity word (§8.15)", (t) => {
  const r = rig(2048);
  t.after(r.cleanup);
  const id = r.drv.identify();
  const w = (i: number) => id[2 * i]! | (id[2 * i + 1]! << 8);
  assert.equal(w(ID_LBA28_SECTORS) | (w(ID_LBA28_SECTORS + 1) << 16), 2048);
  assert.equal(ataString(id, ID_MODEL, 40), "Test Disk");
  assert.equal(ataString(id, ID_SERIAL, 20), "SER123");
  assert.ok(w(ID_COMMAND_SET_2) & (1 << 12), "FLUSH CACHE supported");
  assert.ok(w(ID_COMMAND_SET_2) & (1 << 14), "word 83 bit 14 shall be one");
  assert.ok(w(49) & (1 << 9), "LBA supported");
  assert.equal(w(255) & 0xff, 0xa5);
  assert.equal(id.reduce((s, b) => s + b, 0) % 256, 0, "checksum: all 512 bytes sum to 0 mod 256");
  assert.equal(r.drv.status() & ST_DRQ, 0, "DRQ clears after the last word");
});

test("ATA: WRITE SECTORS then READ SECTORS round-trip through the image file; FLUSH CACHE completes", (t) => {
  const r = rig();
  t.after(r.cleanup);
  const data = pattern(8 * SECTOR, 7);
  assert.ok(r.drv.write(100, data));
  const file = readFileSync(r.path);
  assert.ok(file.subarray(100 * SECTOR, 108 * SECTOR).equals(data), "host file holds the sectors");
  assert.ok(file.subarray(0, 100 * SECTOR).every((b) => b === 0xee), "nothing else touched");
  assert.ok(file.subarray(108 * SECTOR).every((b) => b === 0xee));
  assert.deepEqual(r.drv.read(100, 8), data);
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_FLUSH_CACHE);
  assert.equal(r.drv.status(), ST_DRDY | 0x10);
  const m = r.dev.metrics();
  assert.equal(m.sectorsWritten, 8);
  assert.equal(m.sectorsRead, 8);
  assert.equal(m.dataAccesses, 2 * 8 * 256, "one exit per 16-bit word");
  assert.equal(m.errors, 0);
});

test("ATA: a 28-bit LBA uses the Device register's low nibble", (t) => {
  const r = rig(1024);
  t.after(r.cleanup);
  // LBA 0x0100_0000 (bits 27:24 = 1) is past this small disk: IDNF, proving the nibble is used.
  assert.equal(r.drv.read(0x1000000, 1), null);
  assert.equal(r.drv.inb(CMD + REG_ERROR_FEATURES), ERR_IDNF);
});

test("ATA: Sector Count 0 transfers 256 sectors (§8.27.3.1)", (t) => {
  const r = rig(600);
  t.after(r.cleanup);
  const data = pattern(256 * SECTOR, 3);
  writeFileSync(r.path, Buffer.concat([Buffer.from(data), Buffer.alloc(344 * SECTOR)]));
  r.irq.n = 0;
  const got = r.drv.read(0, 0);
  assert.ok(got);
  assert.equal(got.length, 256 * SECTOR);
  assert.deepEqual(got, data);
  assert.equal(r.irq.n, 256, "one INTRQ per DRQ block");
  assert.equal(r.dev.metrics().sectorsRead, 256);
});

test("ATA hostile: a bad LBA is refused with ERR + IDNF, nothing read or written", (t) => {
  const r = rig(64);
  t.after(r.cleanup);
  const before = readFileSync(r.path);
  assert.equal(r.drv.read(64, 1), null, "first sector past the end");
  assert.equal(r.drv.inb(CMD + REG_ERROR_FEATURES), ERR_IDNF);
  assert.equal(r.drv.read(60, 8), null, "a run that crosses the end");
  assert.equal(r.drv.write(63, new Uint8Array(2 * SECTOR)), false);
  assert.equal(r.drv.inb(CMD + REG_ERROR_FEATURES), ERR_IDNF);
  assert.equal(r.drv.status() & ST_DRQ, 0);
  assert.ok(readFileSync(r.path).equals(before), "image unchanged");
  assert.equal(r.dev.metrics().errors, 3);
  assert.deepEqual(r.drv.read(63, 1), new Uint8Array(SECTOR).fill(0xee), "the last sector itself is fine");
});

test("ATA hostile: reading or writing Data without DRQ floats the bus and changes nothing", (t) => {
  const r = rig();
  t.after(r.cleanup);
  const before = readFileSync(r.path);
  for (let i = 0; i < 300; i++) assert.equal(r.drv.inw(), 0xffff);
  for (let i = 0; i < 300; i++) r.drv.outw(0x1234);
  const d4 = new Uint8Array(4);
  r.bus.read(CMD, d4);
  assert.deepEqual([...d4], [0xff, 0xff, 0xff, 0xff]);
  assert.equal(r.drv.status(), ST_DRDY | 0x10);
  assert.equal(r.dev.metrics().spuriousData, 601);
  assert.ok(readFileSync(r.path).equals(before));
  // Reading past the end of a transfer floats too.
  r.drv.read(0, 1);
  assert.equal(r.drv.inw(), 0xffff);
});

test("ATA hostile: CHS addressing and unknown commands are aborted (ABRT)", (t) => {
  const r = rig();
  t.after(r.cleanup);
  r.drv.setup(1, 1, DEV_OBSOLETE); // LBA bit clear
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_READ_SECTORS);
  assert.equal(r.drv.status(), ST_DRDY | 0x10 | ST_ERR);
  assert.equal(r.drv.inb(CMD + REG_ERROR_FEATURES), ERR_ABRT);
  for (const cmd of [0x00, 0xc8, 0x25, 0xca, 0xff, 0x24]) {
    r.drv.outb(CMD + REG_STATUS_COMMAND, cmd);
    assert.equal(r.drv.inb(CMD + REG_ERROR_FEATURES), ERR_ABRT, `command 0x${cmd.toString(16)}`);
  }
  // The next good command clears the error.
  assert.ok(r.drv.read(0, 1));
  assert.equal(r.drv.inb(CMD + REG_ERROR_FEATURES), 0);
});

test("ATA hostile: a new command in the middle of a transfer ends it; a half-written sector is never written", (t) => {
  const r = rig();
  t.after(r.cleanup);
  const before = readFileSync(r.path);
  r.drv.setup(5, 2);
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_WRITE_SECTORS);
  for (let i = 0; i < 100; i++) r.drv.outw(0xabcd); // 200 of 512 bytes
  const id = r.drv.identify(); // interrupts the write
  assert.equal(id[2 * 60], 1024 & 0xff);
  assert.ok(readFileSync(r.path).equals(before), "nothing written");
});

test("ATA: device 1 is absent: its registers read 0 and commands to it are ignored", (t) => {
  const r = rig();
  t.after(r.cleanup);
  r.drv.outb(CMD + REG_DEVICE, DEV_OBSOLETE | DEV_DEV);
  assert.equal(r.drv.status(), 0);
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_IDENTIFY_DEVICE);
  assert.equal(r.drv.status(), 0);
  assert.equal(r.drv.inw(), 0xffff);
  assert.equal(r.dev.metrics().commands, 0);
});

test("ATA: SRST holds BSY, then restores the signature; nIEN masks INTRQ (§9.2, §7.8)", (t) => {
  const r = rig();
  t.after(r.cleanup);
  r.drv.setup(0, 1);
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_READ_SECTORS);
  r.drv.outb(CTL, CTL_SRST);
  assert.equal(r.drv.inb(CTL), ST_BSY);
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_IDENTIFY_DEVICE);
  assert.equal(r.drv.inb(CTL), ST_BSY, "commands ignored while BSY");
  r.drv.outb(CTL, 0);
  assert.equal(r.drv.status(), ST_DRDY | 0x10);
  assert.equal(r.drv.inb(CMD + REG_SECTOR_COUNT), 1);
  assert.equal(r.drv.inw(), 0xffff, "the interrupted transfer is gone");
  r.drv.outb(CTL, CTL_NIEN);
  r.irq.n = 0;
  assert.ok(r.drv.read(0, 4));
  assert.equal(r.irq.n, 0);
});

test("ATA: a write to a read-only image fails with UNC and leaves the file alone", (t) => {
  const r = rig();
  t.after(r.cleanup);
  const fd = openSync(r.path, "r");
  t.after(() => closeSync(fd));
  const dev = new AtaDevice(createAtaState(), new FileAtaBackend(fd, 1024 * SECTOR, true), new Irq());
  const bus = new Bus("pio");
  bus.insert(CMD, ATA_COMMAND_BLOCK_LEN, "ata0", dev.commandBlock);
  const drv = new Driver(bus);
  assert.equal(drv.write(0, new Uint8Array(SECTOR).fill(1)), false);
  assert.equal(drv.inb(CMD + REG_ERROR_FEATURES), ERR_UNC);
  assert.equal(readFileSync(r.path)[0], 0xee);
});

test("ATA: two devices over one shared state (two vCPU workers) see one transfer", (t) => {
  const r = rig();
  t.after(r.cleanup);
  const other = new AtaDevice(r.state, new FileAtaBackend(r.image.fd, r.image.sizeBytes), new Irq());
  const bus2 = new Bus("pio");
  bus2.insert(CMD, ATA_COMMAND_BLOCK_LEN, "ata0", other.commandBlock);
  const d2 = new Driver(bus2);
  const data = pattern(SECTOR, 9);
  writeFileSync(r.path, Buffer.from(data), { flag: "r+" });
  r.drv.setup(0, 1);
  r.drv.outb(CMD + REG_STATUS_COMMAND, CMD_READ_SECTORS);
  const half: number[] = [];
  for (let i = 0; i < 128; i++) half.push(r.drv.inw());
  for (let i = 0; i < 128; i++) half.push(d2.inw()); // the other vCPU finishes the same block
  const got = new Uint8Array(Uint16Array.from(half).buffer);
  assert.deepEqual(got, data);
  assert.equal(d2.status() & ST_DRQ, 0);
  assert.equal(ATA_STATE_BYTES, r.state.byteLength);
});

test("ATA fuzz: arbitrary register sequences never throw, never write outside the image, and leave a sane status", (t) => {
  const r = rig(64);
  t.after(r.cleanup);
  const size = readFileSync(r.path).length;
  const op = fc.record({
    port: fc.constantFrom(CMD, CMD + 1, CMD + 2, CMD + 3, CMD + 4, CMD + 5, CMD + 6, CMD + 7, CTL),
    write: fc.boolean(),
    len: fc.constantFrom(1, 2, 4),
    value: fc.integer({ min: 0, max: 0xffffffff }),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 600 }), (ops) => {
      for (const o of ops) {
        const len = o.port === CTL ? 1 : o.len;
        if (o.port + len > CMD + 8 && o.port !== CTL) continue;
        const d = new Uint8Array(len);
        new DataView(d.buffer).setUint8(0, o.value & 0xff);
        if (len > 1) d[1] = (o.value >>> 8) & 0xff;
        if (o.write) r.bus.write(o.port, d);
        else r.bus.read(o.port, d);
      }
      r.drv.outb(CTL, CTL_SRST); // reset between runs
      r.drv.outb(CTL, 0);
      return r.drv.status() === (ST_DRDY | 0x10);
    }),
    { numRuns: 200 },
  );
  assert.equal(readFileSync(r.path).length, size, "image size unchanged");
});

test("ATA: constructor refuses wrong state sizes and empty images", () => {
  const tiny: AtaBackend = { sizeBytes: 100, read() {}, write() {}, flush() {} };
  assert.throws(() => new AtaDevice(new SharedArrayBuffer(16), tiny, new Irq()), /state must be/);
  assert.throws(() => new AtaDevice(createAtaState(), tiny, new Irq()), /holds no 512-byte sector/);
});
