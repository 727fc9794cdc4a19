// A KVM vCPU (the fd KVM_CREATE_VCPU returns), the rust-vmm `VcpuFd`: KVM_RUN and register state.
// Its kvm_run page is mapped once; a worker thread rebuilds the handle from the fd and the mapping's
// address (fromRaw), since postMessage would copy a view rather than share it.
import * as sys from "../sys/index.js";
import {
  KVM_GET_FPU, KVM_GET_LAPIC, KVM_GET_MP_STATE, KVM_GET_MSRS, KVM_GET_REGS, KVM_GET_SREGS, KVM_RUN, KVM_SET_CPUID2,
  KVM_SET_FPU, KVM_SET_LAPIC, KVM_SET_MP_STATE, KVM_SET_MSRS, KVM_SET_REGS, KVM_SET_SREGS, kvm_fpu,
  kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs,
} from "../sys/kvm-abi.js";
import { KvmError } from "./errors.js";
import type { VcpuHandle } from "./hypervisor.js";
import { KvmRun } from "./run.js";
import {
  decodeFpu, decodeMpState, decodeMsrs, decodeRegs, decodeSregs, encodeCpuid2, encodeFpu, encodeMpState,
  encodeMsrs, encodeRegs, encodeSregs,
} from "./structs.js";
import type { CpuidEntry, Fpu, MsrEntry, Regs, Sregs } from "./types.js";

const hex = (n: number): string => `0x${n.toString(16)}`;

export class VcpuFd implements VcpuHandle {
  readonly id: number;
  readonly fd: number;
  /** Host address of the kvm_run mapping (process-wide: valid in every thread). */
  readonly runAddress: bigint;
  readonly runSize: number;
  /** The kvm_run page, zero-copy. Invalid after close(): do not keep it beyond the VcpuFd. */
  readonly kvmRun: KvmRun;
  private closed = false;

  private constructor(id: number, fd: number, runAddress: bigint, runSize: number) {
    this.id = id;
    this.fd = fd;
    this.runAddress = runAddress;
    this.runSize = runSize;
    // Safe: [runAddress, runAddress + runSize) is the vCPU's kvm_run mapping, which stays mapped
    // until close() (by this handle or the one it was rebuilt from).
    this.kvmRun = new KvmRun(sys.view(runAddress, runSize));
  }

  /**
   * Rebuilds a handle from numbers (in a worker thread). Exactly one of the handles sharing a
   * mapping may close() it; the others must simply be dropped.
   */
  static fromRaw(id: number, fd: number, runAddress: bigint, runSize: number): VcpuFd {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`VcpuFd.fromRaw: ${fd} is not a file descriptor`);
    return new VcpuFd(id, fd, runAddress, runSize);
  }

  /**
   * KVM_RUN until the next exit; decode it with `kvmRun.decode()`. A signal or immediate_exit
   * makes it throw SysError with code "EINTR" (`KVM_RUN failed: EINTR`): callers test `e.code`.
   */
  run(): void {
    sys.ioctl(this.fd, KVM_RUN, null);
  }

  /**
   * KVM_RUN on a thread of libuv's pool (sys.ioctlAsync): resolves at the next exit, rejects as
   * run() throws. Which pool thread runs it is not known to the caller: a kick is
   * sys.signalThreadsIn(fd, KVM_RUN) after immediate_exit is set.
   */
  async runAsync(): Promise<void> {
    await sys.ioctlAsync(this.fd, KVM_RUN, null);
  }

  /** Interrupts a runAsync() in progress, whichever pool thread runs it (see runAsync). */
  interruptAsyncRun(): void {
    sys.signalThreadsIn(this.fd, KVM_RUN, sys.SIGUSR2);
  }

  getRegs(): Regs {
    const buf = new Uint8Array(kvm_regs.size);
    sys.ioctl(this.fd, KVM_GET_REGS, buf);
    return decodeRegs(buf);
  }

  setRegs(regs: Regs): void {
    sys.ioctl(this.fd, KVM_SET_REGS, encodeRegs(regs));
  }

  getSregs(): Sregs {
    const buf = new Uint8Array(kvm_sregs.size);
    sys.ioctl(this.fd, KVM_GET_SREGS, buf);
    return decodeSregs(buf);
  }

  setSregs(sregs: Sregs): void {
    sys.ioctl(this.fd, KVM_SET_SREGS, encodeSregs(sregs));
  }

  getFpu(): Fpu {
    const buf = new Uint8Array(kvm_fpu.size);
    sys.ioctl(this.fd, KVM_GET_FPU, buf);
    return decodeFpu(buf);
  }

  setFpu(fpu: Fpu): void {
    sys.ioctl(this.fd, KVM_SET_FPU, encodeFpu(fpu));
  }

  /** KVM_SET_MSRS. KVM returns how many it set, stopping at the first it refuses: fewer is an error. */
  setMsrs(entries: readonly MsrEntry[]): void {
    const set = sys.ioctl(this.fd, KVM_SET_MSRS, encodeMsrs(entries));
    if (set < entries.length) {
      throw new KvmError(
        `KVM_SET_MSRS set ${set} of ${entries.length} MSRs; MSR ${hex(entries[set]!.index)} was refused`,
      );
    }
  }

  /** KVM_GET_MSRS for `indices`, in order. An MSR KVM cannot read is an error naming it. */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    const buf = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const got = sys.ioctl(this.fd, KVM_GET_MSRS, buf);
    if (got < indices.length) {
      throw new KvmError(`KVM_GET_MSRS read ${got} of ${indices.length} MSRs; MSR ${hex(indices[got]!)} was refused`);
    }
    return decodeMsrs(buf, indices.length);
  }

  /** KVM_SET_CPUID2. */
  setCpuid2(entries: readonly CpuidEntry[]): void {
    sys.ioctl(this.fd, KVM_SET_CPUID2, encodeCpuid2(entries));
  }

  /** KVM_GET_LAPIC: the 1024-byte LAPIC register page (needs the in-kernel irqchip). */
  getLapic(): Uint8Array {
    const buf = new Uint8Array(kvm_lapic_state.size);
    sys.ioctl(this.fd, KVM_GET_LAPIC, buf);
    return buf;
  }

  /** KVM_SET_LAPIC with a 1024-byte register page. */
  setLapic(state: Uint8Array): void {
    if (state.byteLength !== kvm_lapic_state.size) {
      throw new RangeError(`LAPIC state is ${state.byteLength} bytes, must be ${kvm_lapic_state.size}`);
    }
    sys.ioctl(this.fd, KVM_SET_LAPIC, state);
  }

  /** KVM_GET_MP_STATE (MpState in types.ts). */
  getMpState(): number {
    const buf = new Uint8Array(kvm_mp_state.size);
    sys.ioctl(this.fd, KVM_GET_MP_STATE, buf);
    return decodeMpState(buf);
  }

  /** KVM_SET_MP_STATE. */
  setMpState(state: number): void {
    sys.ioctl(this.fd, KVM_SET_MP_STATE, encodeMpState(state));
  }

  /** munmap of kvm_run, then close of the fd. Idempotent; kvmRun must not be touched afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      sys.munmap(this.runAddress, this.runSize);
    } finally {
      sys.close(this.fd);
    }
  }
}
