import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Serial8250, createSerialState, IER_DLM, IER_RDA, IER_THRE, IIR_FCR, IIR_NONE, IIR_RDA, IIR_THRE, LCR, LCR_DLAB,
  LSR, LSR_DATA_READY, LSR_OVERRUN, LSR_THR_EMPTY, MCR, MCR_LOOP, MCR_RTS, MSR, MSR_CTS, RBR_THR_DLL, SCR, INPUT_CAPACITY,
} from "./serial.js";
import { I8042, createI8042State, I8042_COMMAND_PORT, I8042_DATA_PORT } from "./i8042.js";
import { CmosRtc, createRtcState, REG_HOURS, REG_SECONDS, REG_YEAR, REG_CENTURY, REG_STATUS_B } from "./rtc.js";
import { DebugExit } from "./debug-exit.js";

function uart() {
  const out: number[] = [];
  let irqs = 0;
  const dev = new Serial8250(createSerialState(), { trigger: () => irqs++ }, (b) => out.push(...b));
  const rd = (off: number) => {
    const d = new Uint8Array(1);
    dev.read(off, d);
    return d[0]!;
  };
  const wr = (off: number, v: number) => dev.write(off, Uint8Array.of(v));
  return { dev, out, rd, wr, irqs: () => irqs };
}

test("8250: THR writes reach the output sink and LSR always shows THR empty", () => {
  const u = uart();
  for (const c of "hi\n") u.wr(RBR_THR_DLL, c.charCodeAt(0));
  assert.equal(Buffer.from(u.out).toString(), "hi\n");
  assert.ok((u.rd(LSR) & LSR_THR_EMPTY) !== 0);
  assert.equal(u.irqs(), 0, "no interrupt while IER is 0");
});

test("8250: DLAB switches offsets 0/1 to the divisor latch", () => {
  const u = uart();
  u.wr(LCR, LCR_DLAB);
  u.wr(RBR_THR_DLL, 0x01);
  u.wr(IER_DLM, 0x00);
  assert.equal(u.rd(RBR_THR_DLL), 0x01);
  assert.equal(u.out.length, 0, "a divisor write is not output");
  u.wr(LCR, 0x03);
  u.wr(IER_DLM, 0x0f);
  assert.equal(u.rd(IER_DLM), 0x0f);
  u.wr(SCR, 0x5a);
  assert.equal(u.rd(SCR), 0x5a);
});

test("8250: input raises RDA, is read in order, and clears DATA_READY when drained", () => {
  const u = uart();
  u.wr(IER_DLM, IER_RDA);
  assert.equal(u.dev.enqueueInput(Buffer.from("ab")), 2);
  assert.equal(u.irqs(), 1);
  assert.equal(u.rd(IIR_FCR) & 0x0f, IIR_RDA);
  assert.ok((u.rd(LSR) & LSR_DATA_READY) !== 0);
  assert.equal(u.rd(RBR_THR_DLL), "a".charCodeAt(0));
  assert.equal(u.irqs(), 2, "more data keeps the interrupt asserted");
  assert.equal(u.rd(RBR_THR_DLL), "b".charCodeAt(0));
  assert.equal(u.rd(LSR) & LSR_DATA_READY, 0);
  assert.equal(u.rd(IIR_FCR) & 0x0f, IIR_NONE);
});

test("8250: THRE interrupt on enable and after each transmit; reading IIR clears it", () => {
  const u = uart();
  u.wr(IER_DLM, IER_THRE);
  assert.equal(u.irqs(), 1);
  assert.equal(u.rd(IIR_FCR) & 0x0f, IIR_THRE);
  assert.equal(u.rd(IIR_FCR) & 0x0f, IIR_NONE);
  u.wr(RBR_THR_DLL, 0x41);
  assert.equal(u.irqs(), 2);
  assert.equal(u.rd(IIR_FCR) & 0x0f, IIR_THRE);
});

test("8250: loopback returns written bytes as input and mirrors MCR in MSR", () => {
  const u = uart();
  u.wr(MCR, MCR_LOOP | MCR_RTS);
  assert.equal(u.rd(MSR) & 0xf0, MSR_CTS);
  u.wr(RBR_THR_DLL, 0x99);
  assert.equal(u.out.length, 0);
  assert.equal(u.rd(RBR_THR_DLL), 0x99);
});

test("8250: input beyond capacity is refused and reported as overrun once", () => {
  const u = uart();
  assert.equal(u.dev.enqueueInput(new Uint8Array(INPUT_CAPACITY + 10)), INPUT_CAPACITY);
  assert.ok((u.rd(LSR) & LSR_OVERRUN) !== 0);
  assert.equal(u.rd(LSR) & LSR_OVERRUN, 0);
  assert.equal(u.dev.pendingInput(), INPUT_CAPACITY);
});

test("8250: two device objects over one shared state see one UART (two vCPU workers)", () => {
  const state = createSerialState();
  const out: number[] = [];
  const a = new Serial8250(state, { trigger() {} }, (b) => out.push(...b));
  const b = new Serial8250(state, { trigger() {} }, (x) => out.push(...x));
  a.write(LCR, Uint8Array.of(0x03));
  const d = new Uint8Array(1);
  b.read(LCR, d);
  assert.equal(d[0], 0x03);
  a.enqueueInput(Uint8Array.of(7));
  b.read(RBR_THR_DLL, d);
  assert.equal(d[0], 7);
});

test("8250: wider-than-byte accesses read zero and write nothing", () => {
  const u = uart();
  const d = new Uint8Array(2).fill(9);
  u.dev.read(LSR, d);
  assert.deepEqual([...d], [0, 0]);
  u.dev.write(RBR_THR_DLL, Uint8Array.of(1, 2));
  assert.equal(u.out.length, 0);
});

test("i8042: command 0xfe resets; self-test answers 0x55; CTR round trip", () => {
  let resets = 0;
  const dev = new I8042(I8042_DATA_PORT, createI8042State(), () => resets++);
  const cmd = (v: number) => dev.write(I8042_COMMAND_PORT - I8042_DATA_PORT, Uint8Array.of(v));
  const data = () => {
    const d = new Uint8Array(1);
    dev.read(0, d);
    return d[0]!;
  };
  const status = () => {
    const d = new Uint8Array(1);
    dev.read(I8042_COMMAND_PORT - I8042_DATA_PORT, d);
    return d[0]!;
  };
  cmd(0xaa);
  assert.equal(status() & 1, 1);
  assert.equal(data(), 0x55);
  assert.equal(status() & 1, 0);
  cmd(0x60);
  dev.write(0, Uint8Array.of(0x21));
  cmd(0x20);
  assert.equal(data(), 0x21);
  assert.equal(resets, 0);
  cmd(0xfe);
  assert.equal(resets, 1);
});

test("RTC: time registers are BCD of the host clock, 24-hour mode; CMOS RAM is writable", () => {
  const when = new Date(Date.UTC(2026, 10, 26, 21, 7, 59));
  const rtc = new CmosRtc(createRtcState(), () => when);
  const get = (reg: number) => {
    rtc.write(0, Uint8Array.of(reg | 0x80)); // NMI-disable bit is masked off
    const d = new Uint8Array(1);
    rtc.read(1, d);
    return d[0]!;
  };
  assert.equal(get(REG_SECONDS), 0x59);
  assert.equal(get(REG_HOURS), 0x21);
  assert.equal(get(REG_YEAR), 0x26);
  assert.equal(get(REG_CENTURY), 0x20);
  assert.equal(get(REG_STATUS_B), 0x02);
  rtc.write(0, Uint8Array.of(0x40));
  rtc.write(1, Uint8Array.of(0xab));
  assert.equal(get(0x40), 0xab);
  rtc.write(0, Uint8Array.of(REG_SECONDS));
  rtc.write(1, Uint8Array.of(0x00));
  assert.equal(get(REG_SECONDS), 0x59, "time registers ignore writes");
});

test("debug exit decodes little-endian values of any width", () => {
  const seen: number[] = [];
  const dev = new DebugExit((s) => seen.push(s));
  dev.write(0, Uint8Array.of(3));
  dev.write(0, Uint8Array.of(0x01, 0x02, 0, 0));
  assert.deepEqual(seen, [3, 0x201]);
});

test("i8042: Ctrl+Alt+Del arrives as scan code set 2 bytes, one IRQ 1 per byte, in order", () => {
  let irqs = 0;
  const dev = new I8042(I8042_DATA_PORT, createI8042State(), () => {}, { trigger: () => irqs++ });
  const status = () => {
    const d = new Uint8Array(1);
    dev.read(I8042_COMMAND_PORT - I8042_DATA_PORT, d);
    return d[0]!;
  };
  const data = () => {
    const d = new Uint8Array(1);
    dev.read(0, d);
    return d[0]!;
  };
  assert.equal(dev.sendCtrlAltDel(), true);
  const got: number[] = [];
  while (status() & 1) got.push(data());
  assert.deepEqual(got, [0x14, 0x11, 0xe0, 0x71]);
  assert.equal(irqs, 4, "one interrupt as each byte becomes readable");
  // The buffer is bounded: what does not fit is refused whole.
  for (let i = 0; i < 4; i++) assert.equal(dev.sendCtrlAltDel(), true);
  assert.equal(dev.sendCtrlAltDel(), false);
});

test("i8042: with the keyboard interrupt disabled in the CTR, keys are readable but raise nothing", () => {
  let irqs = 0;
  const dev = new I8042(I8042_DATA_PORT, createI8042State(), () => {}, { trigger: () => irqs++ });
  dev.write(I8042_COMMAND_PORT - I8042_DATA_PORT, Uint8Array.of(0x60));
  dev.write(0, Uint8Array.of(0x04));
  dev.sendKeys([0x1c]);
  const d = new Uint8Array(1);
  dev.read(0, d);
  assert.equal(d[0], 0x1c);
  assert.equal(irqs, 0);
});
