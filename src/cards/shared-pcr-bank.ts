// The VM's PCR bank in a SharedArrayBuffer, so that the NSM card (the guest's ExtendPCR, LockPCR)
// and the VMM's main thread (host-side attestation, the API's view of the PCRs) read and change
// one bank. Same registers, extend rule and one-way locks as src/security/pcr.ts PcrBank, whose
// public methods it implements (what handleNsmRequest calls), and the same PcrError codes.
//
// Layout (bytes): [0,4) SharedLock word; [4,8) generation (Int32, bumped on every change);
// [8,40) one lock flag per register (0/1); [40, 40 + 32*48) the register values.
// Every method runs under the lock, so a reader never sees half an extend.

import { SharedLock } from "../devices/shared-state.js";
import { PCR_COUNT, PCR_SIZE, PcrError, extendValue, toHex, type PcrRegisters } from "../security/pcr.js";

const OFF_LOCK = 0;
const OFF_GENERATION = 4;
const OFF_FLAGS = 8;
const OFF_VALUES = OFF_FLAGS + PCR_COUNT;
export const SHARED_PCR_BANK_BYTES = OFF_VALUES + PCR_COUNT * PCR_SIZE;

/** Plain data of a bank, for save/restore and tests. */
export interface PcrBankState {
  values: string[];
  locked: boolean[];
}

export class SharedPcrBank implements PcrRegisters {
  readonly sab: SharedArrayBuffer;
  private readonly lockWord: SharedLock;
  private readonly gen: Int32Array;
  private readonly flags: Uint8Array;
  private readonly values: Uint8Array;

  /** Attaches to `sab` (another thread's bank), or makes a zeroed, unlocked bank. */
  constructor(sab: SharedArrayBuffer = new SharedArrayBuffer(SHARED_PCR_BANK_BYTES)) {
    if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < SHARED_PCR_BANK_BYTES) {
      throw new RangeError(`a shared PCR bank needs a SharedArrayBuffer of ${SHARED_PCR_BANK_BYTES} bytes`);
    }
    this.sab = sab;
    this.lockWord = new SharedLock(sab, OFF_LOCK);
    this.gen = new Int32Array(sab, OFF_GENERATION, 1);
    this.flags = new Uint8Array(sab, OFF_FLAGS, PCR_COUNT);
    this.values = new Uint8Array(sab, OFF_VALUES, PCR_COUNT * PCR_SIZE);
  }

  /** A shared copy of `bank` (values and locks), e.g. of measureBoot's result, made before the VM starts. */
  static from(bank: Pick<PcrRegisters, "get" | "isLocked">): SharedPcrBank {
    const s = new SharedPcrBank();
    for (let i = 0; i < PCR_COUNT; i++) {
      s.values.set(bank.get(i), i * PCR_SIZE);
      s.flags[i] = bank.isLocked(i) ? 1 : 0;
    }
    return s;
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= PCR_COUNT) {
      throw new PcrError("InvalidIndex", `PCR index ${index} is out of range [0, ${PCR_COUNT})`);
    }
  }

  private changed(): void {
    Atomics.add(this.gen, 0, 1);
  }

  /** Bumped by every extend and lock: a cheap "did anything change" for the VMM. */
  get generation(): number {
    return Atomics.load(this.gen, 0);
  }

  get(index: number): Uint8Array {
    this.check(index);
    return this.lockWord.with(() => this.values.slice(index * PCR_SIZE, (index + 1) * PCR_SIZE));
  }

  isLocked(index: number): boolean {
    this.check(index);
    return this.lockWord.with(() => this.flags[index] === 1);
  }

  extend(index: number, data: Uint8Array): Uint8Array {
    this.check(index);
    return this.lockWord.with(() => {
      if (this.flags[index] === 1) throw new PcrError("ReadOnlyIndex", `PCR ${index} is locked and cannot be extended`);
      const next = extendValue(this.values.slice(index * PCR_SIZE, (index + 1) * PCR_SIZE), data);
      this.values.set(next, index * PCR_SIZE);
      this.changed();
      return next;
    });
  }

  lock(index: number): void {
    this.check(index);
    this.lockWord.with(() => {
      if (this.flags[index] === 1) throw new PcrError("ReadOnlyIndex", `PCR ${index} is already locked`);
      this.flags[index] = 1;
      this.changed();
    });
  }

  lockRange(range: number): void {
    if (!Number.isInteger(range) || range < 0 || range > PCR_COUNT) {
      throw new PcrError("InvalidIndex", `PCR lock range ${range} is out of range [0, ${PCR_COUNT}]`);
    }
    this.lockWord.with(() => {
      for (let i = 0; i < range; i++) this.flags[i] = 1;
      this.changed();
    });
  }

  lockedIndexes(): number[] {
    return this.lockWord.with(() => this.lockedUnlocked());
  }

  private lockedUnlocked(): number[] {
    const out: number[] = [];
    for (let i = 0; i < PCR_COUNT; i++) if (this.flags[i] === 1) out.push(i);
    return out;
  }

  /** Index → value of every locked register, read in one critical section (what a document carries). */
  lockedValues(): Map<number, Uint8Array> {
    return this.lockWord.with(() => {
      const m = new Map<number, Uint8Array>();
      for (const i of this.lockedUnlocked()) m.set(i, this.values.slice(i * PCR_SIZE, (i + 1) * PCR_SIZE));
      return m;
    });
  }

  toJSON(): Record<string, string> {
    const s = this.state();
    const out: Record<string, string> = {};
    s.values.forEach((v, i) => (out[`pcr${i}`] = v));
    return out;
  }

  /** Values (hex) and locks, read in one critical section. */
  state(): PcrBankState {
    return this.lockWord.with(() => ({
      values: Array.from({ length: PCR_COUNT }, (_, i) => toHex(this.values.subarray(i * PCR_SIZE, (i + 1) * PCR_SIZE))),
      locked: Array.from(this.flags, (f) => f === 1),
    }));
  }
}
