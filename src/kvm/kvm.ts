// The KVM system handle (/dev/kvm), the rust-vmm `Kvm`: version and capability checks, host
// CPUID/MSR lists, and VM creation.
import * as sys from "../sys/index.js";
import {
  KVM_API_VERSION, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_API_VERSION, KVM_GET_MSR_INDEX_LIST,
  KVM_GET_SUPPORTED_CPUID, KVM_GET_VCPU_MMAP_SIZE, capName, kvm_msr_list,
} from "../sys/kvm-abi.js";
import { KvmError } from "./errors.js";
import { decodeCpuid2, decodeMsrList, encodeCpuid2, encodeMsrList } from "./structs.js";
import type { CpuidEntry } from "./types.js";
import { VmFd } from "./vm-fd.js";

/** Why opening the KVM device failed, in words an operator can act on. */
function openHint(code: string): string {
  switch (code) {
    case "ENOENT":
      return "no such device node: this host has no KVM (enable virtualization, or load kvm_intel, kvm_amd or kvm_pvm)";
    case "EACCES":
    case "EPERM":
      return "permission denied: add this user to the kvm group, or run as root";
    case "ENXIO":
    case "ENODEV":
      return "the device node exists but no KVM module backs it";
    default:
      return "the KVM device could not be opened";
  }
}

/** Largest kvm_cpuid2 we will offer KVM_GET_SUPPORTED_CPUID before giving up. */
const MAX_CPUID_ENTRIES = 4096;

/** KVM_CREATE_VM attempts that a signal may interrupt (EINTR) before the error is the caller's. */
const CREATE_VM_TRIES = 1000;

export class Kvm {
  readonly fd: number;
  readonly path: string;
  private mmapSize: number | undefined;
  private closed = false;

  private constructor(fd: number, path: string) {
    this.fd = fd;
    this.path = path;
  }

  /**
   * Opens the KVM device and checks KVM_GET_API_VERSION == 12. A missing or unopenable device is a
   * KvmError whose message starts `/dev/kvm not available: ENOENT` and whose `code` is the errno name.
   */
  static open(path = "/dev/kvm"): Kvm {
    let fd: number;
    try {
      fd = sys.open(path, sys.O_RDWR | sys.O_CLOEXEC);
    } catch (e) {
      if (e instanceof sys.SysError) {
        throw new KvmError(`${path} not available: ${e.code} (${openHint(e.code)})`, { code: e.code, cause: e });
      }
      throw e;
    }
    try {
      const version = sys.ioctlValue(fd, KVM_GET_API_VERSION, 0);
      if (version !== KVM_API_VERSION) {
        throw new KvmError(`${path} speaks KVM API version ${version}; Typervisor needs version ${KVM_API_VERSION}`);
      }
    } catch (e) {
      sys.close(fd);
      if (e instanceof sys.SysError) {
        throw new KvmError(`${path} is not a KVM device: ${e.message}`, { code: e.code, cause: e });
      }
      throw e;
    }
    return new Kvm(fd, path);
  }

  /** KVM_GET_API_VERSION. */
  apiVersion(): number {
    return sys.ioctlValue(this.fd, KVM_GET_API_VERSION, 0);
  }

  /** KVM_CHECK_EXTENSION: 0 when the capability is absent, else a positive (sometimes meaningful) value. */
  checkExtension(cap: number): number {
    return sys.ioctlValue(this.fd, KVM_CHECK_EXTENSION, cap);
  }

  /** Throws one KvmError naming every capability in `caps` that this KVM lacks. */
  requireExtensions(caps: readonly number[]): void {
    const missing = caps.filter((cap) => this.checkExtension(cap) <= 0);
    if (missing.length > 0) {
      throw new KvmError(`KVM is missing required capabilities: ${missing.map(capName).join(", ")}`);
    }
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes to mmap from each vCPU fd (struct kvm_run and the pages after it). */
  vcpuMmapSize(): number {
    this.mmapSize ??= sys.ioctlValue(this.fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    return this.mmapSize;
  }

  /** KVM_GET_SUPPORTED_CPUID, growing the buffer while KVM answers E2BIG. */
  supportedCpuid(): CpuidEntry[] {
    for (let capacity = 128; capacity <= MAX_CPUID_ENTRIES; capacity *= 2) {
      const buf = encodeCpuid2([], capacity);
      try {
        sys.ioctl(this.fd, KVM_GET_SUPPORTED_CPUID, buf);
      } catch (e) {
        if (e instanceof sys.SysError && e.code === "E2BIG") continue;
        throw e;
      }
      return decodeCpuid2(buf);
    }
    throw new KvmError(`KVM_GET_SUPPORTED_CPUID needs more than ${MAX_CPUID_ENTRIES} entries`);
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs KVM can save and restore. */
  msrIndexList(): number[] {
    // With nmsrs too small KVM answers E2BIG and writes the count it needs into nmsrs.
    let buf = encodeMsrList(0);
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        sys.ioctl(this.fd, KVM_GET_MSR_INDEX_LIST, buf);
        return decodeMsrList(buf);
      } catch (e) {
        if (!(e instanceof sys.SysError && e.code === "E2BIG")) throw e;
        const needed = new DataView(buf.buffer, buf.byteOffset).getUint32(kvm_msr_list.fields.nmsrs, true);
        buf = encodeMsrList(Math.max(needed, 2 * (buf.byteLength / 4)));
      }
    }
    throw new KvmError("KVM_GET_MSR_INDEX_LIST kept answering E2BIG");
  }

  /**
   * KVM_CREATE_VM (machine type 0). A signal that arrives while KVM registers the VM's MMU
   * notifier fails the call with EINTR before anything is made (mm_take_all_locks gives up on a
   * pending signal, and the more mappings the process has the longer it takes): tried again, up
   * to CREATE_VM_TRIES times. Measured: under a profiler's SIGPROF every 20 µs it failed every time.
   */
  createVm(): VmFd {
    for (let tries = 1; ; tries++) {
      try {
        return VmFd.fromRaw(sys.ioctlValue(this.fd, KVM_CREATE_VM, 0), this.vcpuMmapSize());
      } catch (e) {
        if (!(e instanceof sys.SysError && e.code === "EINTR") || tries >= CREATE_VM_TRIES) throw e;
      }
    }
  }

  /** Closes /dev/kvm (VMs created from it stay valid). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    sys.close(this.fd);
  }
}
