// Kvm / VmFd / VcpuFd. The error paths run everywhere; the rest needs /dev/kvm and runs in the box
// where this host has none (src/testing/kvm.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as sys from "../sys/index.js";
import {
  KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_IOEVENTFD, KVM_CAP_IRQCHIP, KVM_CAP_IRQFD, KVM_CAP_IRQ_ROUTING, KVM_CAP_USER_MEMORY,
  KVM_IRQCHIP_IOAPIC, kvm_run,
} from "../sys/kvm-abi.js";
import { Kvm } from "./kvm.js";
import { KvmError } from "./errors.js";
import { VcpuFd } from "./vcpu-fd.js";
import { VmFd } from "./vm-fd.js";
import { MpState } from "./types.js";
import { IN_BOX, kvmTests } from "../testing/kvm.js";

const kvmTest = kvmTests(import.meta.url);

const KVM_PATH = "/dev/kvm";

test("Kvm.open on a missing device: KvmError `<path> not available: ENOENT (...)` with code ENOENT", () => {
  assert.throws(
    () => Kvm.open("/nonexistent/kvm"),
    (e: unknown) =>
      e instanceof KvmError && e.code === "ENOENT" &&
      e.message.startsWith("/nonexistent/kvm not available: ENOENT (") &&
      e.cause instanceof sys.SysError,
  );
});

test("Kvm.open() with the default path: opens /dev/kvm where it exists, fails clearly naming it where not", () => {
  if (existsSync(KVM_PATH)) {
    assert.equal(Kvm.open().apiVersion(), 12);
    return;
  }
  assert.throws(() => Kvm.open(), (e: unknown) => e instanceof KvmError && e.message.startsWith("/dev/kvm not available: ENOENT"));
});

test("Kvm.open on a device that is not KVM: the failed KVM_GET_API_VERSION is named", () => {
  assert.throws(
    () => Kvm.open("/dev/null"),
    (e: unknown) => e instanceof KvmError && e.code === "ENOTTY" && e.message === "/dev/null is not a KVM device: KVM_GET_API_VERSION failed: ENOTTY",
  );
});

const MEM_SIZE = 2 * 1024 * 1024;

kvmTest("KVM integration: system ioctls", { need: "kvm" }, () => {
  const kvm = Kvm.open();
  try {
    assert.equal(kvm.apiVersion(), 12);
    assert.ok(kvm.checkExtension(KVM_CAP_USER_MEMORY) > 0);
    kvm.requireExtensions([KVM_CAP_USER_MEMORY, KVM_CAP_IRQCHIP, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD]);
    assert.throws(() => kvm.requireExtensions([KVM_CAP_USER_MEMORY, 99999, 99998]), {
      message: "KVM is missing required capabilities: KVM_CAP(99999), KVM_CAP(99998)",
    });
    assert.ok(kvm.vcpuMmapSize() >= kvm_run.size);
    const cpuid = kvm.supportedCpuid();
    assert.ok(cpuid.some((e) => e.function === 0), "CPUID leaf 0 is supported");
    const msrs = kvm.msrIndexList();
    assert.ok(msrs.length > 0);
  } finally {
    kvm.close();
  }
});

// (The name stays ASCII: the box's result port reads a name as latin1, so "µs" would not match.)
kvmTest("KVM_CREATE_VM under a signal storm (a profiler's SIGPROF every 20 microseconds; 2 ms in the box): the EINTRs are tried again, 20 VMs made and closed", { need: "kvm", timeout: 120_000 }, (t) => {
  // Without the retry every VM of this process failed with EINTR on the PVM host (measured). In the
  // box a 50 kHz timer starves the emulated machine (it stopped making progress: measured), so
  // there the profiler samples every 2 ms: a VM still made under it, EINTR or not.
  const interval = IN_BOX ? "2000" : "20";
  t.diagnostic(`--cpu-prof-interval ${interval} µs`);
  const dir = mkdtempSync(join(tmpdir(), "tv-kvm-prof-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const script = `const { Kvm } = await import(${JSON.stringify(new URL("./kvm.js", import.meta.url).href)});
    const kvm = Kvm.open();
    for (let i = 0; i < 20; i++) kvm.createVm().close();
    kvm.close();
    console.log("made 20");`;
  const r = spawnSync(process.execPath, ["--cpu-prof", "--cpu-prof-interval", interval, "--cpu-prof-dir", dir, "--input-type=module", "-e", script], { encoding: "utf8", timeout: 100_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), "made 20");
});

kvmTest("KVM integration: VM, memory slot, irqchip, vCPU and register round trips", { need: "kvm" }, () => {
  const kvm = Kvm.open();
  const vm = kvm.createVm();
  const memFd = sys.memfdCreate("kvm-test", sys.MFD_CLOEXEC);
  let memAddr: bigint | undefined;
  let vcpu: VcpuFd | undefined;
  try {
    vm.setTssAddr(0xfffb_d000);
    vm.setIdentityMapAddr(0xfffb_c000n);
    vm.createIrqchip();
    vm.createPit2();

    sys.ftruncate(memFd, MEM_SIZE);
    memAddr = sys.mmap(MEM_SIZE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED | sys.MAP_NORESERVE, memFd, 0);
    vm.setUserMemoryRegion({ slot: 0, flags: 0, guestPhysAddr: 0n, memorySize: BigInt(MEM_SIZE), userspaceAddr: memAddr });
    assert.throws(
      () => vm.setUserMemoryRegion({ slot: 1, flags: 0, guestPhysAddr: 0x1000n, memorySize: 123n, userspaceAddr: memAddr! }),
      (e: unknown) => e instanceof sys.SysError && e.message === "KVM_SET_USER_MEMORY_REGION failed: EINVAL",
    );

    vcpu = vm.createVcpu(0);
    assert.equal(vcpu.runSize, kvm.vcpuMmapSize());
    assert.throws(() => vm.createVcpu(0), (e: unknown) => e instanceof sys.SysError && e.message === "KVM_CREATE_VCPU failed: EEXIST");

    vcpu.setCpuid2(kvm.supportedCpuid());

    const regs = vcpu.getRegs();
    const want = { ...regs, rax: 0x1122_3344_5566_7788n, rsi: 0x7000n, rsp: 0x8000n, rip: 0x10_0000n, rflags: 0x2n };
    vcpu.setRegs(want);
    assert.deepEqual(vcpu.getRegs(), want);

    const sregs = vcpu.getSregs();
    vcpu.setSregs(sregs);
    assert.deepEqual(vcpu.getSregs(), sregs);

    // KVM_SET_FPU / KVM_GET_FPU carry the x87 state and the XMM registers but not MXCSR: Linux's
    // kvm_arch_vcpu_ioctl_set_fpu never stores fpu->mxcsr and _get_fpu never fills it (arch/x86/kvm/
    // x86.c, every version since the ioctls exist; seen in the box on kvm_amd, where GET returns 0).
    // A guest's MXCSR starts at its reset value 0x1f80 from KVM's own fpstate set-up either way.
    const xmm = new Uint8Array(256).map((_, i) => (i * 7 + 1) & 0xff);
    const fpu = { ...vcpu.getFpu(), fcw: 0x37f, fsw: 0x0800, xmm };
    vcpu.setFpu(fpu);
    const fpuBack = vcpu.getFpu();
    assert.equal(fpuBack.fcw, 0x37f);
    assert.equal(fpuBack.fsw, 0x0800);
    assert.deepEqual(fpuBack.xmm, xmm);

    // IA32_SYSENTER_CS (0x174) is saved/restored by every KVM.
    vcpu.setMsrs([{ index: 0x174, data: 0x10n }]);
    assert.deepEqual(vcpu.getMsrs([0x174]), [{ index: 0x174, data: 0x10n }]);
    assert.throws(() => vcpu!.setMsrs([{ index: 0x174, data: 0n }, { index: 0xdead_beef, data: 1n }]), {
      message: "KVM_SET_MSRS set 1 of 2 MSRs; MSR 0xdeadbeef was refused",
    });

    const lapic = vcpu.getLapic();
    assert.equal(lapic.byteLength, 1024);
    vcpu.setLapic(lapic);

    assert.equal(vcpu.getMpState(), MpState.RUNNABLE);
    vcpu.setMpState(MpState.RUNNABLE);

    // Interrupt plumbing: eventfds wired both ways, the routing table, a line and an MSI.
    const kick = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
    const irq = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
    try {
      if (kvm.checkExtension(KVM_CAP_IRQ_ROUTING) > 0) {
        vm.setGsiRouting([
          { gsi: 5, kind: "irqchip", irqchip: KVM_IRQCHIP_IOAPIC, pin: 5 },
          { gsi: 24, kind: "msi", addressLo: 0xfee0_0000, addressHi: 0, data: 0x31 },
        ]);
      }
      vm.ioeventfd({ addr: 0xd000_0000n, len: 4, fd: kick });
      vm.ioeventfd({ addr: 0xd000_0000n, len: 4, fd: kick, deassign: true });
      vm.irqfd({ fd: irq, gsi: 5 });
      vm.irqfd({ fd: irq, gsi: 5, deassign: true });
      vm.irqLine(4, true);
      vm.irqLine(4, false);
      // An MSI to APIC ID 0 (Intel SDM Vol.3 §11.11.1 address format): the LAPIC comes out of reset
      // software-disabled (SVR bit 8 clear, §11.4.7.1), so KVM accepts nothing (0); once the SVR
      // enables it, the fixed interrupt is delivered to one LAPIC (1).
      assert.equal(vm.signalMsi(0xfee0_0000, 0, 0x31), 0, "software-disabled LAPIC: not delivered");
      const lapic = vcpu!.getLapic();
      const regs = new DataView(lapic.buffer, lapic.byteOffset, lapic.byteLength);
      const APIC_SVR = 0xf0; // SDM Vol.3 Table 11-1: Spurious Interrupt Vector Register
      regs.setUint32(APIC_SVR, regs.getUint32(APIC_SVR, true) | 0x100 | 0xff, true); // APIC enable, vector 0xff
      vcpu!.setLapic(lapic);
      assert.equal(vm.signalMsi(0xfee0_0000, 0, 0x31), 1, "enabled LAPIC: delivered to one");
    } finally {
      sys.close(kick);
      sys.close(irq);
    }

    // immediate_exit makes KVM_RUN return EINTR before entering the guest (no guest code needed).
    if (kvm.checkExtension(KVM_CAP_IMMEDIATE_EXIT) > 0) {
      vcpu.kvmRun.immediateExit = 1;
      assert.throws(() => vcpu!.run(), (e: unknown) => e instanceof sys.SysError && e.code === "EINTR" && e.message === "KVM_RUN failed: EINTR");
      vcpu.kvmRun.immediateExit = 0;
    }

    // A handle rebuilt from numbers (as a worker does) aliases the same kvm_run page.
    const twin = VcpuFd.fromRaw(vcpu.id, vcpu.fd, vcpu.runAddress, vcpu.runSize);
    vcpu.kvmRun.immediateExit = 1;
    assert.equal(twin.kvmRun.immediateExit, 1);
    vcpu.kvmRun.immediateExit = 0;
    assert.deepEqual(twin.getRegs(), want);
    // A VmFd rebuilt from its number works too (and asks /dev/kvm for the mmap size).
    const vmTwin = VmFd.fromRaw(vm.fd);
    vmTwin.irqLine(4, false);
    const second = vmTwin.createVcpu(1);
    assert.equal(second.runSize, kvm.vcpuMmapSize());
    second.close();
  } finally {
    vcpu?.close();
    vm.close();
    if (memAddr !== undefined) sys.munmap(memAddr, MEM_SIZE);
    sys.close(memFd);
    kvm.close();
  }
});
