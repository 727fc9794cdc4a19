// The "debug exit" port: a guest that is done writes its status here and the VMM stops,
// exactly as QEMU's isa-debug-exit device does at the same port, so one probe binary ends
// cleanly under both. (Under PVM `hlt` never reaches the VMM, DESIGN.md §6, so a guest must
// say that it is done.)

import type { BusDevice } from "../bus.js";

export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_LEN = 4;

export class DebugExit implements BusDevice {
  constructor(private readonly onExit: (status: number) => void) {}

  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }

  write(_offset: number, data: Uint8Array): void {
    let v = 0;
    for (let i = data.length - 1; i >= 0; i--) v = v * 256 + data[i]!;
    this.onExit(v);
  }
}
