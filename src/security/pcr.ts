// Platform Configuration Registers and measured boot (DESIGN.md §5; the register model of AWS Nitro Enclaves' NSM).
//
// Every register is a SHA-384 digest; an extend is PCR_new = SHA384(PCR_old || SHA384(data)). Boot measurements are
// each ONE extend of a zeroed register over the exact bytes named (see README.md in this folder for the byte
// sequences). A lock is one-way: a locked register can never be extended again for the life of the bank.

import { createHash } from "node:crypto";

/** Number of registers. aws-nitro-enclaves-nsm-api nsm-check.rs: `description.max_pcrs == 32`. */
export const PCR_COUNT = 32;
/** Bytes per register: the SHA-384 digest size (FIPS 180-4 §1, 384-bit message digest). */
export const PCR_SIZE = 48;
/** PCRs [0, 16) are locked at boot; aws-nitro-enclaves-nsm-api nsm-check.rs: "PCRs [0..16) should be locked". */
export const PCR_BOOT_LOCKED = 16;
/** The digest a bank uses, as the NSM names it (aws-nitro-enclaves-nsm-api api::Digest::SHA384). */
export const PCR_DIGEST = "SHA384";

/** Boot-measurement registers (DESIGN.md §5). */
export const PCR_IMAGE = 0; // kernel ‖ cmdline ‖ initrd
export const PCR_KERNEL = 1; // kernel ‖ cmdline
export const PCR_INITRD = 2; // initrd
export const PCR_VM_ID = 4; // the VM's id as UTF-8
export const PCR_SIGNER = 8; // DER of the image-signing certificate

export class PcrError extends Error {
  constructor(
    readonly code: "InvalidIndex" | "ReadOnlyIndex",
    message: string,
  ) {
    super(message);
    this.name = "PcrError";
  }
}

function sha384(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha384");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** One extend step: SHA384(old || SHA384(data)) (DESIGN.md §5). `old` must be PCR_SIZE bytes. */
export function extendValue(old: Uint8Array, data: Uint8Array): Uint8Array {
  if (old.length !== PCR_SIZE) throw new RangeError(`a PCR value is ${PCR_SIZE} bytes, got ${old.length}`);
  return sha384(old, sha384(data));
}

/** One extend of a zeroed register over the concatenation of `parts` (no separators, no length prefixes). */
export function measure(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha384");
  for (const p of parts) h.update(p);
  return sha384(new Uint8Array(PCR_SIZE), new Uint8Array(h.digest()));
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

/** What reads and changes a bank (PcrBank's public surface; src/cards SharedPcrBank implements it too). */
export type PcrRegisters = Pick<PcrBank, "get" | "isLocked" | "extend" | "lock" | "lockRange" | "lockedIndexes" | "lockedValues" | "toJSON">;

/** 32 SHA-384 registers with one-way locks. Plain data inside (`values`, `locked`) so it can be saved/restored. */
export class PcrBank {
  private readonly values: Uint8Array[];
  private readonly locked: boolean[];

  constructor() {
    this.values = Array.from({ length: PCR_COUNT }, () => new Uint8Array(PCR_SIZE));
    this.locked = Array.from({ length: PCR_COUNT }, () => false);
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= PCR_COUNT) {
      throw new PcrError("InvalidIndex", `PCR index ${index} is out of range [0, ${PCR_COUNT})`);
    }
  }

  /** A copy of register `index`. */
  get(index: number): Uint8Array {
    this.check(index);
    return this.values[index]!.slice();
  }

  isLocked(index: number): boolean {
    this.check(index);
    return this.locked[index]!;
  }

  /** Extends register `index` with `data`; returns the new value. A locked register refuses (ReadOnlyIndex). */
  extend(index: number, data: Uint8Array): Uint8Array {
    this.check(index);
    if (this.locked[index]) throw new PcrError("ReadOnlyIndex", `PCR ${index} is locked and cannot be extended`);
    this.values[index] = extendValue(this.values[index]!, data);
    return this.values[index]!.slice();
  }

  /** Locks one register. Locking an already locked register is refused, as the NSM does (nsm-check.rs). */
  lock(index: number): void {
    this.check(index);
    if (this.locked[index]) throw new PcrError("ReadOnlyIndex", `PCR ${index} is already locked`);
    this.locked[index] = true;
  }

  /** Locks [0, range). range may be 0..PCR_COUNT; already locked registers in the range are fine (nsm-check.rs). */
  lockRange(range: number): void {
    if (!Number.isInteger(range) || range < 0 || range > PCR_COUNT) {
      throw new PcrError("InvalidIndex", `PCR lock range ${range} is out of range [0, ${PCR_COUNT}]`);
    }
    for (let i = 0; i < range; i++) this.locked[i] = true;
  }

  lockedIndexes(): number[] {
    const out: number[] = [];
    for (let i = 0; i < PCR_COUNT; i++) if (this.locked[i]) out.push(i);
    return out;
  }

  /** Index → value of every locked register: what an attestation document carries (nsm-api AttestationDoc.pcrs). */
  lockedValues(): Map<number, Uint8Array> {
    const m = new Map<number, Uint8Array>();
    for (const i of this.lockedIndexes()) m.set(i, this.values[i]!.slice());
    return m;
  }

  /** Sets a register directly; for measured boot only, before the boot lock. */
  private setMeasured(index: number, value: Uint8Array): void {
    this.values[index] = value.slice();
  }

  /** Builds a bank from boot measurements: values set, then PCRs [0, 16) locked. */
  static fromMeasurements(measured: Map<number, Uint8Array>): PcrBank {
    const bank = new PcrBank();
    for (const [i, v] of measured) {
      bank.check(i);
      if (v.length !== PCR_SIZE) throw new RangeError(`PCR ${i} measurement must be ${PCR_SIZE} bytes`);
      bank.setMeasured(i, v);
    }
    bank.lockRange(PCR_BOOT_LOCKED);
    return bank;
  }

  /** `{"pcr0": "<96 hex>", ...}` for every register. */
  toJSON(): Record<string, string> {
    const out: Record<string, string> = {};
    for (let i = 0; i < PCR_COUNT; i++) out[`pcr${i}`] = toHex(this.values[i]!);
    return out;
  }
}

export interface BootImage {
  kernel: Uint8Array;
  initrd?: Uint8Array | undefined;
  /** The kernel command line exactly as passed to the guest; measured as UTF-8 with no terminator. */
  cmdline: string;
  vmId: string;
  /** DER of the certificate that signed the image (PCR8), when the image is signed. */
  signingCert?: Uint8Array | undefined;
}

/** The boot measurements alone (index → value), without the bank: what `measure` prints. */
export function bootMeasurements(img: BootImage): Map<number, Uint8Array> {
  const cmdline = new TextEncoder().encode(img.cmdline);
  const m = new Map<number, Uint8Array>();
  const initrd = img.initrd ?? new Uint8Array(0);
  m.set(PCR_IMAGE, measure(img.kernel, cmdline, initrd));
  m.set(PCR_KERNEL, measure(img.kernel, cmdline));
  // "PCR2 = initrd (empty when there is none)": with no initrd the register stays zeroed, as an unused NSM PCR.
  if (img.initrd !== undefined) m.set(PCR_INITRD, measure(img.initrd));
  m.set(PCR_VM_ID, measure(new TextEncoder().encode(img.vmId)));
  if (img.signingCert !== undefined) m.set(PCR_SIGNER, measure(img.signingCert));
  return m;
}

/** Measured boot: a fresh bank holding the boot measurements, PCRs [0, 16) locked. */
export function measureBoot(img: BootImage): PcrBank {
  return PcrBank.fromMeasurements(bootMeasurements(img));
}
