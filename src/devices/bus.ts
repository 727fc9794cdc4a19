// Address buses for port I/O and MMIO exits. A device registers a [base, base+len) range and
// receives accesses as (offset within its range, data view). Ranges never overlap; an access
// that no device claims is reported to the caller so it can count it and answer the guest
// the way an empty ISA bus does (reads all ones, writes dropped).

export interface BusDevice {
  /** Fills `data` (length 1, 2, 4 or 8) with the value at `offset`. */
  read(offset: number, data: Uint8Array): void;
  /** Consumes `data` written at `offset`. */
  write(offset: number, data: Uint8Array): void;
}

export interface BusRange {
  readonly base: number;
  readonly len: number;
  readonly name: string;
  readonly device: BusDevice;
}

export class BusError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BusError";
  }
}

const hex = (n: number): string => `0x${n.toString(16)}`;

export class Bus {
  private ranges: BusRange[] = [];

  constructor(readonly name: string) {}

  insert(base: number, len: number, name: string, device: BusDevice): void {
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(len) || len <= 0) {
      throw new BusError(`${this.name} bus: invalid range ${base}+${len} for ${name}`);
    }
    const clash = this.ranges.find((r) => base < r.base + r.len && r.base < base + len);
    if (clash) {
      throw new BusError(
        `${this.name} bus: ${name} at ${hex(base)}+${hex(len)} overlaps ${clash.name} at ${hex(clash.base)}+${hex(clash.len)}`,
      );
    }
    this.ranges.push({ base, len, name, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  /** The range containing `addr`, or undefined. Binary search: the bus is read on every exit. */
  find(addr: number): BusRange | undefined {
    const rs = this.ranges;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid]!;
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.len) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  /** Dispatches a read; returns false (and fills all ones) when no device claims the address. */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined || addr + data.length > r.base + r.len) {
      data.fill(0xff);
      return false;
    }
    r.device.read(addr - r.base, data);
    return true;
  }

  /** Dispatches a write; returns false when no device claims the address. */
  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined || addr + data.length > r.base + r.len) return false;
    r.device.write(addr - r.base, data);
    return true;
  }

  list(): readonly BusRange[] {
    return this.ranges;
  }
}
