// linux/kvm.h: struct kvm_run, the page each vCPU shares with KVM. KVM_RUN fills in exit_reason
// and the matching union member; the VMM answers in place (data of an `in` or an MMIO read) and
// calls KVM_RUN again. KvmRun works over any ArrayBuffer, so exit dispatch can be unit-tested with
// a fake kvm_run built in plain memory.
import {
  KVM_EXIT_DEBUG, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_INTR, KVM_EXIT_IO,
  KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT,
  KVM_RUN_INTERNAL_DATA_LEN, KVM_RUN_MMIO_DATA_LEN, KVM_RUN_SYSTEM_EVENT_DATA_LEN, kvm_run,
} from "../sys/kvm-abi.js";
import { KvmError } from "./errors.js";
import type { VcpuExit } from "./types.js";

const F = kvm_run.fields;

export class KvmRun {
  /** The whole mapping (KVM_GET_VCPU_MMAP_SIZE bytes for a real vCPU). */
  readonly buffer: ArrayBuffer;
  private readonly dv: DataView;
  private readonly mmioData: Uint8Array;

  constructor(buffer: ArrayBuffer) {
    if (buffer.byteLength < kvm_run.size) {
      throw new KvmError(`kvm_run buffer is ${buffer.byteLength} bytes; sizeof(struct kvm_run) is ${kvm_run.size}`);
    }
    this.buffer = buffer;
    this.dv = new DataView(buffer);
    this.mmioData = new Uint8Array(buffer, F["mmio.data"], KVM_RUN_MMIO_DATA_LEN);
  }

  /** kvm_run.exit_reason (KVM_EXIT_*). */
  get exitReason(): number {
    return this.dv.getUint32(F.exit_reason, true);
  }

  /** kvm_run.immediate_exit: when 1, the next KVM_RUN returns EINTR at once (KVM_CAP_IMMEDIATE_EXIT). */
  get immediateExit(): number {
    return this.dv.getUint8(F.immediate_exit);
  }

  set immediateExit(value: number) {
    this.dv.setUint8(F.immediate_exit, value === 0 ? 0 : 1);
  }

  /** Decodes the last exit. `data` fields alias this mapping: writes there are what the guest reads. */
  decode(): VcpuExit {
    const v = this.dv;
    const reason = this.exitReason;
    switch (reason) {
      case KVM_EXIT_IO: {
        const dir = v.getUint8(F["io.direction"]);
        if (dir !== KVM_EXIT_IO_IN && dir !== KVM_EXIT_IO_OUT) {
          throw new KvmError(`kvm_run.io.direction is ${dir}, neither KVM_EXIT_IO_IN nor KVM_EXIT_IO_OUT`);
        }
        const size = v.getUint8(F["io.size"]);
        const port = v.getUint16(F["io.port"], true);
        const count = v.getUint32(F["io.count"], true);
        // A u64; read as two halves (no BigInt on the exit path): any high bit makes it out of range.
        const offsetHi = v.getUint32(F["io.data_offset"] + 4, true);
        const offset = offsetHi === 0 ? v.getUint32(F["io.data_offset"], true) : Infinity;
        const length = size * count;
        // The data lies inside the mapping (KVM puts it in the page after struct kvm_run); an offset
        // outside it would be a corrupt kvm_run, so refuse rather than alias other memory.
        if (offset < kvm_run.size || offset + length > this.buffer.byteLength) {
          throw new KvmError(
            `kvm_run.io data at offset ${v.getBigUint64(F["io.data_offset"], true)} (+${length} bytes) lies outside the ${this.buffer.byteLength}-byte kvm_run mapping`,
          );
        }
        return {
          kind: "io",
          direction: dir === KVM_EXIT_IO_IN ? "in" : "out",
          port,
          size,
          count,
          data: new Uint8Array(this.buffer, offset, length),
        };
      }
      case KVM_EXIT_MMIO:
        return {
          kind: "mmio",
          // Two halves, exact as a Number: a guest-physical address has at most 52 bits (MAXPHYADDR,
          // Intel SDM Vol. 3A §4.1.4; AMD APM Vol. 2 §5.1), below 2^53.
          address: v.getUint32(F["mmio.phys_addr"] + 4, true) * 0x1_0000_0000 + v.getUint32(F["mmio.phys_addr"], true),
          isWrite: v.getUint8(F["mmio.is_write"]) !== 0,
          len: v.getUint32(F["mmio.len"], true),
          data: this.mmioData,
        };
      case KVM_EXIT_HLT:
        return { kind: "hlt" };
      case KVM_EXIT_SHUTDOWN:
        return { kind: "shutdown" };
      case KVM_EXIT_INTR:
        return { kind: "intr" };
      case KVM_EXIT_DEBUG:
        return { kind: "debug" };
      case KVM_EXIT_FAIL_ENTRY:
        return {
          kind: "fail_entry",
          hardwareEntryFailureReason: v.getBigUint64(F["fail_entry.hardware_entry_failure_reason"], true),
          cpu: v.getUint32(F["fail_entry.cpu"], true),
        };
      case KVM_EXIT_INTERNAL_ERROR: {
        const n = Math.min(v.getUint32(F["internal.ndata"], true), KVM_RUN_INTERNAL_DATA_LEN);
        return {
          kind: "internal_error",
          suberror: v.getUint32(F["internal.suberror"], true),
          data: Array.from({ length: n }, (_, i) => v.getBigUint64(F["internal.data"] + 8 * i, true)),
        };
      }
      case KVM_EXIT_SYSTEM_EVENT: {
        // With KVM_CAP_SYSTEM_EVENT_DATA, ndata words of data[] are valid (data[0] is the old flags).
        const n = Math.min(v.getUint32(F["system_event.ndata"], true), KVM_RUN_SYSTEM_EVENT_DATA_LEN);
        return {
          kind: "system_event",
          type: v.getUint32(F["system_event.type"], true),
          flags: Array.from({ length: n }, (_, i) => v.getBigUint64(F["system_event.data"] + 8 * i, true)),
        };
      }
      default:
        return { kind: "unknown", reason };
    }
  }
}
