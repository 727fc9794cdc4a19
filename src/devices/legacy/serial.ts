// 8250/16550A UART, the console at COM1 (0x3f8, IRQ 4).
// Register map and bits from the National Semiconductor PC16550D datasheet (June 1995),
// Table II "Register Summary"; behaviour checked against what Linux's 8250 driver probes.
// The state lives in a SharedArrayBuffer (see ../shared-state.ts) so that every vCPU worker
// and the main thread (console input) see one UART.

import type { BusDevice } from "../bus.js";
import { SharedLock } from "../shared-state.js";

/** How a legacy device raises its interrupt line. */
export interface IrqTrigger {
  trigger(): void;
}

/** Where console output goes. */
export type OutputSink = (bytes: Uint8Array) => void;

// Register offsets from the base port. PC16550D Table II.
export const RBR_THR_DLL = 0; // receive buffer (read) / transmit holding (write) / divisor latch LSB (DLAB=1)
export const IER_DLM = 1; // interrupt enable / divisor latch MSB (DLAB=1)
export const IIR_FCR = 2; // interrupt identification (read) / FIFO control (write)
export const LCR = 3; // line control
export const MCR = 4; // modem control
export const LSR = 5; // line status
export const MSR = 6; // modem status
export const SCR = 7; // scratch
export const SERIAL_PORT_COUNT = 8;

// IER bits. PC16550D §8.5.
export const IER_RDA = 0x01; // received data available
export const IER_THRE = 0x02; // transmitter holding register empty
export const IER_MASK = 0x0f;

// IIR values. PC16550D Table IV.
export const IIR_NONE = 0x01; // no interrupt pending
export const IIR_THRE = 0x02;
export const IIR_RDA = 0x04;
export const IIR_FIFO_ENABLED = 0xc0;

// FCR bits. PC16550D §8.4.
export const FCR_FIFO_ENABLE = 0x01;
export const FCR_CLEAR_RX = 0x02;

// LCR bits. PC16550D §8.7.
export const LCR_DLAB = 0x80;

// MCR bits. PC16550D §8.8.
export const MCR_DTR = 0x01;
export const MCR_RTS = 0x02;
export const MCR_OUT1 = 0x04;
export const MCR_OUT2 = 0x08;
export const MCR_LOOP = 0x10;

// LSR bits. PC16550D §8.9.
export const LSR_DATA_READY = 0x01;
export const LSR_OVERRUN = 0x02;
export const LSR_THR_EMPTY = 0x20;
export const LSR_TEMT = 0x40;

// MSR bits. PC16550D §8.10.
export const MSR_CTS = 0x10;
export const MSR_DSR = 0x20;
export const MSR_RI = 0x40;
export const MSR_DCD = 0x80;

/** Default divisor 12 = 9600 baud from the 1.8432 MHz clock; what firmware leaves behind. */
const DEFAULT_DIVISOR = 12;
/** Bytes of console input buffered before the UART reports an overrun. */
export const INPUT_CAPACITY = 4096;

// Layout of the shared state (bytes): lock word, registers, input ring.
const OFF_LOCK = 0;
const OFF_HEAD = 4; // Int32: next byte to read
const OFF_COUNT = 8; // Int32: bytes buffered
const OFF_REGS = 12; // Uint8[16]
const I_HEAD = OFF_HEAD / 4;
const I_COUNT = OFF_COUNT / 4;
const R_IER = 0;
const R_LCR = 1;
const R_MCR = 2;
const R_LSR_ERR = 3; // sticky error bits (overrun)
const R_SCR = 4;
const R_DLL = 5;
const R_DLM = 6;
const R_THRE_PENDING = 7; // THR-empty interrupt pending (cleared by reading IIR or writing THR)
const R_FCR = 8;
const OFF_RING = 28;
const STATE_BYTES = OFF_RING + INPUT_CAPACITY;

export function createSerialState(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(STATE_BYTES);
  const regs = new Uint8Array(sab, OFF_REGS, 16);
  regs[R_DLL] = DEFAULT_DIVISOR & 0xff;
  regs[R_DLM] = DEFAULT_DIVISOR >> 8;
  regs[R_MCR] = MCR_OUT2;
  return sab;
}

export class Serial8250 implements BusDevice {
  private readonly lock: SharedLock;
  private readonly ints: Int32Array;
  private readonly regs: Uint8Array;
  private readonly ring: Uint8Array;

  constructor(
    readonly state: SharedArrayBuffer,
    private readonly irq: IrqTrigger,
    private readonly out: OutputSink,
  ) {
    if (state.byteLength !== STATE_BYTES) throw new Error(`serial state must be ${STATE_BYTES} bytes`);
    this.lock = new SharedLock(state, OFF_LOCK);
    this.ints = new Int32Array(state, 0, 3);
    this.regs = new Uint8Array(state, OFF_REGS, 16);
    this.ring = new Uint8Array(state, OFF_RING, INPUT_CAPACITY);
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (data.length !== 1) return; // the UART is a byte-wide device
    let raise = false;
    data[0] = this.lock.with(() => {
      const r = this.regs;
      const dlab = (r[R_LCR]! & LCR_DLAB) !== 0;
      switch (offset) {
        case RBR_THR_DLL:
          if (dlab) return r[R_DLL]!;
          {
            const b = this.popInput();
            // More input waiting keeps the RDA interrupt asserted.
            raise = this.pendingIir() === IIR_RDA;
            return b;
          }
        case IER_DLM:
          return dlab ? r[R_DLM]! : r[R_IER]!;
        case IIR_FCR: {
          const iir = this.pendingIir();
          // Reading IIR while it reports THRE clears that source. PC16550D Table IV.
          if (iir === IIR_THRE) r[R_THRE_PENDING] = 0;
          return iir | ((r[R_FCR]! & FCR_FIFO_ENABLE) !== 0 ? IIR_FIFO_ENABLED : 0);
        }
        case LCR:
          return r[R_LCR]!;
        case MCR:
          return r[R_MCR]!;
        case LSR: {
          const v = (this.count() > 0 ? LSR_DATA_READY : 0) | LSR_THR_EMPTY | LSR_TEMT | r[R_LSR_ERR]!;
          r[R_LSR_ERR] = 0; // error bits clear on read. PC16550D §8.9.
          return v;
        }
        case MSR:
          return this.modemStatus();
        case SCR:
          return r[R_SCR]!;
        default:
          return 0;
      }
    });
    if (raise) this.irq.trigger();
  }

  write(offset: number, data: Uint8Array): void {
    if (data.length !== 1) return;
    const v = data[0]!;
    let output: number | undefined;
    const raise = this.lock.with(() => {
      const r = this.regs;
      const dlab = (r[R_LCR]! & LCR_DLAB) !== 0;
      switch (offset) {
        case RBR_THR_DLL:
          if (dlab) {
            r[R_DLL] = v;
            return false;
          }
          if ((r[R_MCR]! & MCR_LOOP) !== 0) {
            // Loopback: the byte comes back as input instead of going out. PC16550D §8.8.
            this.pushInput(v);
          } else {
            output = v;
          }
          // We transmit instantly, so THR is empty again at once.
          r[R_THRE_PENDING] = 1;
          return (r[R_IER]! & IER_THRE) !== 0 || this.pendingIir() === IIR_RDA;
        case IER_DLM:
          if (dlab) {
            r[R_DLM] = v;
            return false;
          } else {
            const before = r[R_IER]!;
            r[R_IER] = v & IER_MASK;
            // Enabling THRE while THR is empty raises the interrupt at once (Linux's
            // serial8250 "THRE test" relies on this).
            if ((v & IER_THRE) !== 0 && (before & IER_THRE) === 0) r[R_THRE_PENDING] = 1;
            return this.pendingIir() !== IIR_NONE;
          }
        case IIR_FCR:
          r[R_FCR] = v & ~(FCR_CLEAR_RX | 0x04);
          if ((v & FCR_CLEAR_RX) !== 0) this.ints[I_COUNT] = 0;
          return false;
        case LCR:
          r[R_LCR] = v;
          return false;
        case MCR:
          r[R_MCR] = v & 0x1f;
          return false;
        case SCR:
          r[R_SCR] = v;
          return false;
        default:
          // LSR and MSR are read-only: writes are ignored.
          return false;
      }
    });
    if (output !== undefined) this.out(Uint8Array.of(output));
    if (raise) this.irq.trigger();
  }

  /**
   * Console input from the host. Returns how many bytes were accepted; the rest overflowed
   * (the guest sees LSR_OVERRUN).
   */
  enqueueInput(bytes: Uint8Array): number {
    let accepted = 0;
    const raise = this.lock.with(() => {
      for (const b of bytes) {
        if (!this.pushInput(b)) break;
        accepted++;
      }
      return accepted > 0 && (this.regs[R_IER]! & IER_RDA) !== 0;
    });
    if (raise) this.irq.trigger();
    return accepted;
  }

  /** Bytes waiting for the guest to read. */
  pendingInput(): number {
    return this.lock.with(() => this.count());
  }

  private count(): number {
    return this.ints[I_COUNT]!;
  }

  private pushInput(b: number): boolean {
    const n = this.count();
    if (n >= INPUT_CAPACITY) {
      this.regs[R_LSR_ERR] = this.regs[R_LSR_ERR]! | LSR_OVERRUN;
      return false;
    }
    this.ring[(this.ints[I_HEAD]! + n) % INPUT_CAPACITY] = b;
    this.ints[I_COUNT] = n + 1;
    return true;
  }

  private popInput(): number {
    const n = this.count();
    if (n === 0) return 0;
    const head = this.ints[I_HEAD]!;
    const b = this.ring[head]!;
    this.ints[I_HEAD] = (head + 1) % INPUT_CAPACITY;
    this.ints[I_COUNT] = n - 1;
    return b;
  }

  /** Highest-priority pending interrupt source. PC16550D Table IV priorities. */
  private pendingIir(): number {
    const ier = this.regs[R_IER]!;
    if ((ier & IER_RDA) !== 0 && this.count() > 0) return IIR_RDA;
    if ((ier & IER_THRE) !== 0 && this.regs[R_THRE_PENDING] === 1) return IIR_THRE;
    return IIR_NONE;
  }

  private modemStatus(): number {
    const mcr = this.regs[R_MCR]!;
    if ((mcr & MCR_LOOP) !== 0) {
      // Loopback wires MCR outputs to MSR inputs. PC16550D §8.8.
      return (
        ((mcr & MCR_RTS) !== 0 ? MSR_CTS : 0) |
        ((mcr & MCR_DTR) !== 0 ? MSR_DSR : 0) |
        ((mcr & MCR_OUT1) !== 0 ? MSR_RI : 0) |
        ((mcr & MCR_OUT2) !== 0 ? MSR_DCD : 0)
      );
    }
    // A console that is always connected and ready.
    return MSR_DCD | MSR_DSR | MSR_CTS;
  }
}
