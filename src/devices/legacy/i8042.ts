// i8042 keyboard controller: just enough for a guest to reset the machine and for Linux's
// i8042 driver to probe it without hanging. Port 0x60 is data, 0x64 status (read) and
// command (write). Commands from the IBM PS/2 Technical Reference and Linux's
// drivers/input/serio/i8042.h.

import type { BusDevice } from "../bus.js";
import { SharedLock } from "../shared-state.js";

export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;

// Commands (written to 0x64).
export const CMD_READ_CTR = 0x20; // read controller configuration byte
export const CMD_WRITE_CTR = 0x60; // next data byte is the configuration byte
export const CMD_DISABLE_AUX = 0xa7;
export const CMD_ENABLE_AUX = 0xa8;
export const CMD_SELF_TEST = 0xaa; // answers 0x55
export const CMD_KBD_TEST = 0xab; // answers 0x00
export const CMD_DISABLE_KBD = 0xad;
export const CMD_ENABLE_KBD = 0xae;
export const CMD_RESET_CPU = 0xfe; // pulse the CPU reset line

// Status register bits.
export const STATUS_OUTPUT_FULL = 0x01;
export const STATUS_SYSTEM_FLAG = 0x04;
export const STATUS_CMD_DATA = 0x08; // last write was a command

// Controller configuration byte bits.
export const CTR_KBD_INT = 0x01; // raise IRQ 1 when keyboard data is ready
export const CTR_SYSTEM_FLAG = 0x04;
export const CTR_TRANSLATE = 0x40; // translate scan code set 2 to set 1

const SELF_TEST_OK = 0x55;
// Keyboard interrupt and system flag, no translation: the keyboard's bytes (scan code set 2)
// reach the guest as they are, as with Firecracker's i8042, so Linux's atkbd reads set 2.
const DEFAULT_CTR = CTR_KBD_INT | CTR_SYSTEM_FLAG;

/** The ISA interrupt line of the keyboard. */
export const I8042_KBD_IRQ = 1;

// Scan code set 2 (IBM PS/2 Technical Reference, "Keyboard scan codes"): the make codes of the
// Ctrl+Alt+Del chord, in the order Firecracker sends them for SendCtrlAltDel.
const SC2_LEFT_CTRL = [0x14];
const SC2_LEFT_ALT = [0x11];
const SC2_DELETE = [0xe0, 0x71];
export const CTRL_ALT_DEL = [...SC2_LEFT_CTRL, ...SC2_LEFT_ALT, ...SC2_DELETE];

/** Bytes of keyboard data the controller buffers for the guest. */
export const KBD_BUFFER = 16;

// Shared state words: lock, configuration byte, status, output byte (-1 = empty), pending command
// (-1 = none), then the keyboard buffer: head, count and KBD_BUFFER bytes (one per word).
const W_LOCK = 0;
const W_CTR = 1;
const W_STATUS = 2;
const W_OUTPUT = 3;
const W_PENDING = 4;
const W_KBD_HEAD = 5;
const W_KBD_COUNT = 6;
const W_KBD = 7;
const STATE_WORDS = W_KBD + KBD_BUFFER;

export function createI8042State(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(STATE_WORDS * 4);
  const w = new Int32Array(sab);
  w[W_CTR] = DEFAULT_CTR;
  w[W_STATUS] = STATUS_SYSTEM_FLAG;
  w[W_OUTPUT] = -1;
  w[W_PENDING] = -1;
  return sab;
}

export class I8042 implements BusDevice {
  private readonly lock: SharedLock;
  private readonly w: Int32Array;

  /**
   * `base` is the lowest port of the range this device is registered at (it spans 0x60-0x64);
   * `onReset` is called when the guest asks for a CPU reset (command 0xfe); `irq` raises IRQ 1.
   */
  constructor(
    private readonly base: number,
    state: SharedArrayBuffer,
    private readonly onReset: () => void,
    private readonly irq: { trigger(): void } = { trigger() {} },
  ) {
    this.lock = new SharedLock(state, W_LOCK * 4);
    this.w = new Int32Array(state, 0, STATE_WORDS);
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    const port = this.base + offset;
    const w = this.w;
    const raise = this.lock.with(() => {
      if (port === I8042_COMMAND_PORT) {
        data[0] = w[W_STATUS]! | (w[W_OUTPUT]! >= 0 ? STATUS_OUTPUT_FULL : 0);
        return false;
      }
      if (port === I8042_DATA_PORT) {
        data[0] = Math.max(0, w[W_OUTPUT]!);
        w[W_OUTPUT] = -1;
        // The next buffered keyboard byte moves into the output register.
        return this.loadKeyboardByte();
      }
      return false;
    });
    if (raise) this.irq.trigger();
  }

  /**
   * Queues keyboard bytes (scan code set 2) for the guest, raising IRQ 1 as each one becomes
   * readable. Returns false, queuing nothing, when they do not all fit.
   */
  sendKeys(bytes: readonly number[]): boolean {
    const w = this.w;
    const result = this.lock.with(() => {
      if (w[W_KBD_COUNT]! + bytes.length > KBD_BUFFER) return { ok: false, raise: false };
      for (const b of bytes) {
        w[W_KBD + ((w[W_KBD_HEAD]! + w[W_KBD_COUNT]!) % KBD_BUFFER)] = b & 0xff;
        w[W_KBD_COUNT] = w[W_KBD_COUNT]! + 1;
      }
      return { ok: true, raise: w[W_OUTPUT]! < 0 && this.loadKeyboardByte() };
    });
    if (result.raise) this.irq.trigger();
    return result.ok;
  }

  /** Ctrl+Alt+Del, as Firecracker's SendCtrlAltDel delivers it. */
  sendCtrlAltDel(): boolean {
    return this.sendKeys(CTRL_ALT_DEL);
  }

  /** Under the lock, with the output register empty: moves the next keyboard byte into it. */
  private loadKeyboardByte(): boolean {
    const w = this.w;
    if (w[W_KBD_COUNT]! === 0) return false;
    w[W_OUTPUT] = w[W_KBD + w[W_KBD_HEAD]!]!;
    w[W_KBD_HEAD] = (w[W_KBD_HEAD]! + 1) % KBD_BUFFER;
    w[W_KBD_COUNT] = w[W_KBD_COUNT]! - 1;
    return (w[W_CTR]! & CTR_KBD_INT) !== 0;
  }

  write(offset: number, data: Uint8Array): void {
    const port = this.base + offset;
    const v = data[0]!;
    const w = this.w;
    const reset = this.lock.with(() => {
      if (port === I8042_COMMAND_PORT) {
        w[W_STATUS] = w[W_STATUS]! | STATUS_CMD_DATA;
        w[W_PENDING] = -1;
        switch (v) {
          case CMD_RESET_CPU:
            return true;
          case CMD_READ_CTR:
            w[W_OUTPUT] = w[W_CTR]!;
            break;
          case CMD_WRITE_CTR:
            w[W_PENDING] = v;
            break;
          case CMD_SELF_TEST:
            w[W_OUTPUT] = SELF_TEST_OK;
            break;
          case CMD_KBD_TEST:
            w[W_OUTPUT] = 0x00;
            break;
          default:
            // Enable/disable and unknown commands have no visible effect here.
            break;
        }
      } else if (port === I8042_DATA_PORT) {
        w[W_STATUS] = w[W_STATUS]! & ~STATUS_CMD_DATA;
        if (w[W_PENDING] === CMD_WRITE_CTR) w[W_CTR] = v;
        w[W_PENDING] = -1;
      }
      return false;
    });
    if (reset) this.onReset();
  }
}
