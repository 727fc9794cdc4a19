// A minimal CMOS real-time clock (MC146818A) at ports 0x70 (index) / 0x71 (data): the time of
// day from the host clock in BCD, 24-hour mode, and 128 bytes of CMOS RAM. Register numbers
// from the Motorola MC146818A datasheet, "Address map"; the century byte at 0x32 as PC
// firmware places it.

import type { BusDevice } from "../bus.js";
import { SharedLock } from "../shared-state.js";

export const RTC_INDEX_PORT = 0x70;
export const RTC_DATA_PORT = 0x71;

export const REG_SECONDS = 0x00;
export const REG_MINUTES = 0x02;
export const REG_HOURS = 0x04;
export const REG_WEEKDAY = 0x06;
export const REG_DAY = 0x07;
export const REG_MONTH = 0x08;
export const REG_YEAR = 0x09;
export const REG_STATUS_A = 0x0a;
export const REG_STATUS_B = 0x0b;
export const REG_STATUS_C = 0x0c;
export const REG_STATUS_D = 0x0d;
export const REG_CENTURY = 0x32;

const STATUS_A_DIVIDER = 0x26; // 32.768 kHz time base, 1.024 kHz rate; UIP (bit 7) never set
const STATUS_B_24H = 0x02; // 24-hour mode, BCD (DM bit 2 clear)
const STATUS_D_VRT = 0x80; // valid RAM and time
const INDEX_MASK = 0x7f; // bit 7 of the index port is the NMI-disable bit

const bcd = (n: number): number => ((Math.floor(n / 10) % 10) << 4) | (n % 10);

// Shared state: lock word, index word, then the 128 bytes of CMOS RAM.
const OFF_LOCK = 0;
const OFF_INDEX = 4;
const OFF_RAM = 8;
const CMOS_BYTES = 128;

export function createRtcState(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer(OFF_RAM + CMOS_BYTES);
  const ram = new Uint8Array(sab, OFF_RAM, CMOS_BYTES);
  ram[REG_STATUS_A] = STATUS_A_DIVIDER;
  ram[REG_STATUS_B] = STATUS_B_24H;
  ram[REG_STATUS_D] = STATUS_D_VRT;
  return sab;
}

export class CmosRtc implements BusDevice {
  private readonly lock: SharedLock;
  private readonly index: Int32Array;
  private readonly ram: Uint8Array;

  constructor(
    state: SharedArrayBuffer,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.lock = new SharedLock(state, OFF_LOCK);
    this.index = new Int32Array(state, OFF_INDEX, 1);
    this.ram = new Uint8Array(state, OFF_RAM, CMOS_BYTES);
  }

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset === 0) {
      data[0] = 0xff; // the index port is write-only
      return;
    }
    data[0] = this.lock.with(() => this.register(this.index[0]!));
  }

  write(offset: number, data: Uint8Array): void {
    const v = data[0]!;
    this.lock.with(() => {
      if (offset === 0) {
        this.index[0] = v & INDEX_MASK;
        return;
      }
      // Time registers follow the host clock; writes to them are accepted and ignored.
      const i = this.index[0]!;
      if (i >= REG_STATUS_A && i !== REG_STATUS_C && i !== REG_STATUS_D) this.ram[i] = v;
    });
  }

  private register(i: number): number {
    const t = this.now();
    switch (i) {
      case REG_SECONDS:
        return bcd(t.getUTCSeconds());
      case REG_MINUTES:
        return bcd(t.getUTCMinutes());
      case REG_HOURS:
        return bcd(t.getUTCHours());
      case REG_WEEKDAY:
        return bcd(t.getUTCDay() + 1);
      case REG_DAY:
        return bcd(t.getUTCDate());
      case REG_MONTH:
        return bcd(t.getUTCMonth() + 1);
      case REG_YEAR:
        return bcd(t.getUTCFullYear() % 100);
      case REG_CENTURY:
        return bcd(Math.floor(t.getUTCFullYear() / 100));
      case REG_STATUS_C:
        return 0; // no interrupt flags: the RTC raises no interrupts here
      default:
        return this.ram[i]!;
    }
  }
}
