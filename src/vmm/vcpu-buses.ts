// The buses of one vCPU, whichever thread handles its exits (its own worker: vcpu-thread.ts; the
// event loop, for a pooled vCPU: vcpu-pooled.ts): the legacy devices over the VM's shared device
// state, the virtio register files (their queues belong to cards), and the emulated disk or the
// dom0 doorbell of a VM that has one (imported only then: each worker is an isolate of its own,
// and what it imports it compiles and keeps, per vCPU).

import { Bus } from "../devices/bus.js";
import { attachLegacyDevices } from "./legacy.js";
import type { VcpuStop } from "./exit-loop.js";
import type { VmControl } from "./vcpu-control.js";
import { createVirtioMmioDevice } from "../cards/notify.js";
import { VIRTIO_MMIO_SLOT_SIZE } from "../arch/x86_64/layout.js";
import type { MappedControl } from "../dom0/control-page.js";
import type { OpenedVcpu, VcpuWorkerData } from "./vcpu-thread.js";

export interface VcpuBuses {
  pio: Bus;
  mmio: Bus;
  /** The stop a device on these buses asked for (i8042 reset, debug exit), for the exit loop. */
  pendingStop(): VcpuStop | undefined;
  /** Releases what the buses mapped (the dom0 control page), once the exit loop is over. */
  close(): void;
}

/**
 * Builds the vCPU's buses. A device that stops the VM (i8042 reset, debug exit) raises `control`'s
 * stop flag and leaves its reason for pendingStop(); `output` takes the UART's console bytes.
 */
export async function attachVcpuBuses(
  data: VcpuWorkerData,
  opened: OpenedVcpu,
  control: VmControl,
  output: (bytes: Uint8Array) => void,
): Promise<VcpuBuses> {
  let pending: VcpuStop | undefined;
  const requestStop = (stop: VcpuStop): void => {
    pending ??= stop;
    control.requestStop();
  };
  const pio = new Bus("pio");
  const mmio = new Bus("mmio");
  attachLegacyDevices(pio, data.legacy, {
    irq: (line) => ({
      trigger: () => {
        // An ISA edge: assert then deassert the line on the in-kernel PIC/IOAPIC.
        opened.irqLine(line, true);
        opened.irqLine(line, false);
      },
    }),
    output,
    onReset: () => requestStop({ kind: "reset" }),
    onDebugExit: (status) => requestStop({ kind: "debug-exit", status }),
  });

  // Only the register file is handled on this thread: queue work belongs to the device's card.
  for (const v of data.virtio) mmio.insert(v.base, VIRTIO_MMIO_SLOT_SIZE, v.name, createVirtioMmioDevice(v.state, v.notifyFd));

  // The emulated disk is the opposite: the whole device runs here, every register access an exit,
  // the image read and written on this thread while the vCPU waits (docs/xen-vs-nitro.md).
  let dom0Control: MappedControl | undefined;
  try {
    if (data.ata !== undefined) {
      const { ATA_COMMAND_BLOCK_LEN, ATA_CONTROL_BLOCK_LEN, ATA_PRIMARY_CONTROL_BASE, FileAtaBackend, createAtaBusDevices } = await import("../devices/ata/index.js");
      const a = data.ata;
      const irq = a.irq;
      const ata = createAtaBusDevices(a.state, new FileAtaBackend(a.imageFd, a.sizeBytes, a.readOnly), {
        trigger: () => {
          // An ISA edge, as for the UART: INTRQ of the primary channel on IRQ 14.
          opened.irqLine(irq, true);
          opened.irqLine(irq, false);
        },
      });
      pio.insert(a.port, ATA_COMMAND_BLOCK_LEN, "ata0", ata.commandBlock);
      pio.insert(ATA_PRIMARY_CONTROL_BASE, ATA_CONTROL_BLOCK_LEN, "ata0-ctl", ata.controlBlock);
    }
    // The dom0 doorbell: on KVM the event-channel port is an ioeventfd and never reaches this bus;
    // the xenbus state port does (connect, disconnect). Each vCPU maps the control page itself.
    if (data.dom0 !== undefined) {
      const [{ mapControl }, { createXenblkDoorbell }, { XENBLK_DOORBELL_LEN }] = await Promise.all([
        import("../dom0/control-page.js"),
        import("../dom0/doorbell.js"),
        import("../dom0/blkif.js"),
      ]);
      dom0Control = mapControl(data.dom0.controlFd);
      pio.insert(data.dom0.port, XENBLK_DOORBELL_LEN, "xenblk", createXenblkDoorbell(dom0Control.page, data.dom0.notifyFd));
    }
  } catch (e) {
    dom0Control?.unmap();
    throw e;
  }
  return { pio, mmio, pendingStop: () => pending, close: () => dom0Control?.unmap() };
}
