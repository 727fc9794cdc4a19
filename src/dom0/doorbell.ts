// The xenblk doorbell on the VMM's PIO bus: the event channel (port + 0) and the xenbus state
// register (port + 4). In production the VMM registers an ioeventfd on port + 0, so a guest
// notification reaches Dom0 without a userspace exit; when it does reach this device (no
// ioeventfd), the device signals the same eventfd itself. The xenbus port always exits: the front
// end uses it only to connect and disconnect.

import type { BusDevice } from "../devices/bus.js";
import { DOORBELL_NOTIFY, DOORBELL_XENBUS } from "./blkif.js";
import { C_XENBUS_BACK, C_XENBUS_FRONT, C_XENBUS_GEN, signal, type ControlPage } from "./control-page.js";

export function createXenblkDoorbell(control: ControlPage, notifyFd: number): BusDevice {
  return {
    read(offset: number, data: Uint8Array): void {
      data.fill(0);
      if (offset === DOORBELL_XENBUS) data[0] = Atomics.load(control.ints, C_XENBUS_BACK) & 0xff;
    },
    write(offset: number, data: Uint8Array): void {
      if (offset === DOORBELL_NOTIFY) {
        signal(notifyFd);
      } else if (offset === DOORBELL_XENBUS) {
        Atomics.store(control.ints, C_XENBUS_FRONT, data[0]!);
        Atomics.add(control.ints, C_XENBUS_GEN, 1);
        signal(notifyFd);
      }
    },
  };
}
