// A machine without KVM, for testing the VM lifecycle for real: worker threads, the start
// barrier, console output from workers, guest-requested stops, crashes, and kicks by signal.
// Each fake vCPU replays a script of exits; a "block" step sits in poll(2) the way a running
// guest sits in KVM_RUN, so only a real tgkill gets it out (with EINTR).

import { GuestMemory } from "../../memory/guest-memory.js";
import { createMemfdGuestMemory } from "../../memory/create.js";
import * as sys from "../../sys/index.js";
import { createTransportState } from "../../cards/index.js";
import { planDevices, type DevicePlan, type DriveConfig, type EntropyConfig, type NsmConfig } from "../drives.js";
import type { MachineBuilder } from "../vm.js";
import type { AtaSlot, Dom0Slot, Machine, VirtioSlot } from "../machine.js";
import { openAtaSlot, closeAtaSlot, openDom0Slot, closeDom0Slot } from "../comparison-drives.js";
import type { BootSummary } from "../builder.js";
import { openFakeVcpu } from "./fake-vcpu.js";

export type FakeStep =
  | { out: number; bytes: number[] } // port write
  | { mmioWrite: number; bytes: number[] }
  | { inb: number } // port read; the byte read is stored in shared Int32[2]
  | { inl: number } // 4-byte port read; the value read is stored in shared Int32[2]
  | { waitFor: number } // wait until the test raises shared Int32[4] to at least this
  | { shutdown: true } // triple fault
  | { block: true } // run until kicked
  | { fail: string }; // KVM_RUN fails with this message

/** MachineVcpu.backend of a fake vCPU. */
export interface FakeVcpuBackend {
  script: FakeStep[];
  /**
   * Int32[0] mirrors kvm_run.immediate_exit; Int32[1] counts irq-line pulses; Int32[2] is the last
   * byte read; Int32[3] counts runs ended by a signal; Int32[4] is the test's go-ahead counter;
   * Int32[5] is the last irq line pulsed.
   */
  shared: SharedArrayBuffer;
}

export interface FakeMachine extends Machine {
  closed: boolean;
  shared: SharedArrayBuffer[];
}

/** The fake vCPU's worker script. */
const FAKE_VCPU_WORKER_URL = new URL("./fake-vcpu-worker.js", import.meta.url);

/**
 * `drives`: virtio-blk slots wired as on KVM but with plain eventfds (the irq eventfd is
 * non-blocking, for the test to poll) and 2 MiB of memfd guest RAM a card or Dom0 can map. An
 * emulated drive gets its image and ATA state, a dom0 drive its eventfds, as on KVM; what KVM
 * would register on them (the doorbell's PIO ioeventfd, the irqfd) is left out, so a doorbell
 * write reaches the vCPU thread's bus and the interrupt eventfd is for the test to read.
 */
export function fakeMachine(scripts: FakeStep[][], opts: { drives?: DriveConfig[]; entropy?: EntropyConfig; nsm?: NsmConfig } = {}): FakeMachine {
  const plan = planDevices(opts);
  return fakeMachineOf(scripts, plan);
}

/**
 * A MachineBuilder for Vm.create: the fake machine of the devices Vm.create planned, vCPU i
 * replaying `scripts[i]` (vCPUs beyond the scripts run until stopped).
 */
export function fakeMachineBuilder(scripts: FakeStep[][]): MachineBuilder {
  const build = (config: Parameters<MachineBuilder>[0]): FakeMachine =>
    fakeMachineOf(
      Array.from({ length: config.vcpus }, (_, i) => scripts[i] ?? [{ block: true }]),
      { virtio: [...(config.deviceSlots ?? [])], ...config.legacyDrives },
    );
  // Known before the build, as the KVM builder's: Vm.create starts dedicated vCPU threads first.
  return Object.assign(build, { vcpuWorkerUrl: FAKE_VCPU_WORKER_URL });
}

function fakeMachineOf(scripts: FakeStep[][], plan: DevicePlan): FakeMachine {
  const slots = plan.virtio;
  const ram = slots.length > 0 || plan.dom0 !== undefined ? createMemfdGuestMemory([[0, 2 * 1024 * 1024]]) : undefined;
  const ata: AtaSlot | undefined = plan.ata !== undefined ? openAtaSlot(plan.ata) : undefined;
  const dom0: Dom0Slot | undefined = plan.dom0 !== undefined ? openDom0Slot(plan.dom0, { irqNonBlocking: true }) : undefined;
  const virtio: VirtioSlot[] = slots.map((slot) => ({
    name: slot.name,
    base: slot.base,
    gsi: slot.gsi,
    state: createTransportState(),
    notifyFd: sys.eventfd(0, sys.EFD_CLOEXEC),
    irqFd: sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK),
    device: slot.device,
  }));
  const shared = scripts.map(() => new SharedArrayBuffer(24));
  const boot: BootSummary = {
    protocol: "linux64",
    kernelFormat: "elf",
    entry: 0x100000,
    cmdline: { addr: 0x20000, size: 1 },
    e820: [],
    apStartup: "direct64",
    bootInfoAddr: 0x7000,
  };
  const m: FakeMachine = {
    workerUrl: FAKE_VCPU_WORKER_URL,
    vcpus: scripts.map((script, id) => ({
      id,
      setImmediateExit: (v: 0 | 1) => Atomics.store(new Int32Array(shared[id]!), 0, v),
      backend: { script, shared: shared[id]! } satisfies FakeVcpuBackend,
      // Pooled, a "block" step polls the kick flag: there is no pool thread to signal.
      openPooled: () => ({ ...openFakeVcpu({ script, shared: shared[id]! }, id), interrupt: () => {} }),
    })),
    irqLine: () => {},
    boot,
    memory: ram?.memory ?? GuestMemory.anonymous([[0, 0x1000]]),
    virtio,
    ...(ata !== undefined ? { ata } : {}),
    ...(dom0 !== undefined ? { dom0 } : {}),
    ...(ram !== undefined
      ? { guestMemfd: { fd: ram.fd, regions: ram.memory.regions.map((r) => ({ gpa: r.gpa, size: r.size, fdOffset: r.fdOffset })) } }
      : {}),
    closed: false,
    shared,
    close() {
      m.closed = true;
      for (const v of virtio) {
        sys.close(v.notifyFd);
        sys.close(v.irqFd);
      }
      if (ata !== undefined) closeAtaSlot(ata);
      if (dom0 !== undefined) closeDom0Slot(dom0);
      ram?.close();
    },
  };
  return m;
}
