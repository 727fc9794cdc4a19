// A KVM VM (the fd KVM_CREATE_VM returns), the rust-vmm `VmFd`: memory slots, in-kernel
// irqchip and PIT, vCPUs, ioeventfd/irqfd wiring and interrupt injection.
import * as sys from "../sys/index.js";
import {
  KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_CREATE_VCPU, KVM_GET_VCPU_MMAP_SIZE, KVM_IOEVENTFD, KVM_IRQFD, KVM_IRQ_LINE,
  KVM_PIT_SPEAKER_DUMMY, KVM_SET_GSI_ROUTING, KVM_SET_IDENTITY_MAP_ADDR, KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION, KVM_SIGNAL_MSI,
} from "../sys/kvm-abi.js";
import {
  encodeGsiRouting, encodeIoEventFd, encodeIrqFd, encodeIrqLevel, encodeMsi, encodePitConfig, encodeU64,
  encodeUserMemoryRegion,
} from "./structs.js";
import type { GsiRoute, IoEventFd, IrqFd, UserMemoryRegion } from "./types.js";
import { VcpuFd } from "./vcpu-fd.js";

export class VmFd {
  readonly fd: number;
  private mmapSize: number | undefined;
  private closed = false;

  private constructor(fd: number, vcpuMmapSize: number | undefined) {
    this.fd = fd;
    this.mmapSize = vcpuMmapSize;
  }

  /**
   * Wraps an existing VM fd (a worker thread receives the number: fds are process-wide).
   * `vcpuMmapSize` is only needed to create vCPUs; without it createVcpu asks /dev/kvm once.
   */
  static fromRaw(fd: number, vcpuMmapSize?: number): VmFd {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`VmFd.fromRaw: ${fd} is not a file descriptor`);
    return new VmFd(fd, vcpuMmapSize);
  }

  /** KVM_SET_TSS_ADDR: three pages of guest-physical space KVM uses for real-mode emulation (Intel). */
  setTssAddr(addr: number): void {
    sys.ioctlValue(this.fd, KVM_SET_TSS_ADDR, addr);
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map (Intel); must not overlap the TSS. */
  setIdentityMapAddr(addr: bigint): void {
    sys.ioctl(this.fd, KVM_SET_IDENTITY_MAP_ADDR, encodeU64("identity_map_addr", addr));
  }

  /** KVM_CREATE_IRQCHIP: in-kernel PIC + IOAPIC (+ LAPICs). Do it before creating vCPUs. */
  createIrqchip(): void {
    sys.ioctl(this.fd, KVM_CREATE_IRQCHIP, null);
  }

  /** KVM_CREATE_PIT2 with KVM_PIT_SPEAKER_DUMMY (port 0x61 reads answer from the kernel). */
  createPit2(): void {
    sys.ioctl(this.fd, KVM_CREATE_PIT2, encodePitConfig(KVM_PIT_SPEAKER_DUMMY));
  }

  /** KVM_SET_USER_MEMORY_REGION (memorySize 0 deletes the slot). */
  setUserMemoryRegion(r: UserMemoryRegion): void {
    sys.ioctl(this.fd, KVM_SET_USER_MEMORY_REGION, encodeUserMemoryRegion(r));
  }

  /** KVM_CREATE_VCPU, then mmap of its kvm_run (KVM_GET_VCPU_MMAP_SIZE bytes, shared). */
  createVcpu(id: number): VcpuFd {
    const runSize = this.vcpuMmapSize();
    const fd = sys.ioctlValue(this.fd, KVM_CREATE_VCPU, id);
    let runAddress: bigint;
    try {
      runAddress = sys.mmap(runSize, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
    } catch (e) {
      sys.close(fd);
      throw e;
    }
    return VcpuFd.fromRaw(id, fd, runAddress, runSize);
  }

  /** KVM_IOEVENTFD: a guest write to addr/len (optionally of `datamatch`) signals `fd` without an exit. */
  ioeventfd(e: IoEventFd): void {
    sys.ioctl(this.fd, KVM_IOEVENTFD, encodeIoEventFd(e));
  }

  /** KVM_IRQFD: a write to `fd` raises `gsi` (needs the in-kernel irqchip). */
  irqfd(e: IrqFd): void {
    sys.ioctl(this.fd, KVM_IRQFD, encodeIrqFd(e));
  }

  /** KVM_SET_GSI_ROUTING: replaces the whole routing table. */
  setGsiRouting(routes: readonly GsiRoute[]): void {
    sys.ioctl(this.fd, KVM_SET_GSI_ROUTING, encodeGsiRouting(routes));
  }

  /** KVM_IRQ_LINE: drive an irqchip input (GSI) high or low. */
  irqLine(irq: number, level: boolean): void {
    sys.ioctl(this.fd, KVM_IRQ_LINE, encodeIrqLevel(irq, level));
  }

  /** KVM_SIGNAL_MSI: > 0 delivered, 0 blocked by the guest (e.g. masked). */
  signalMsi(addressLo: number, addressHi: number, data: number): number {
    return sys.ioctl(this.fd, KVM_SIGNAL_MSI, encodeMsi(addressLo, addressHi, data));
  }

  /** Closes the VM fd. The VM lives on in the kernel until its vCPU fds are closed too. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    sys.close(this.fd);
  }

  private vcpuMmapSize(): number {
    if (this.mmapSize === undefined) {
      // A VmFd rebuilt from a raw fd does not know the size: only /dev/kvm answers it.
      const kvmFd = sys.open("/dev/kvm", sys.O_RDWR | sys.O_CLOEXEC);
      try {
        this.mmapSize = sys.ioctlValue(kvmFd, KVM_GET_VCPU_MMAP_SIZE, 0);
      } finally {
        sys.close(kvmFd);
      }
    }
    return this.mmapSize;
  }
}
