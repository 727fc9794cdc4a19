// The legacy ISA devices of every VM, at their classic ports, and the shared state that lets
// each vCPU worker (and the main thread, for console input) drive the same device instances.

import { Bus } from "../devices/bus.js";
import { Serial8250, createSerialState, SERIAL_PORT_COUNT, type IrqTrigger, type OutputSink } from "../devices/legacy/serial.js";
import { I8042, createI8042State, I8042_DATA_PORT, I8042_COMMAND_PORT, I8042_KBD_IRQ } from "../devices/legacy/i8042.js";
import { CmosRtc, createRtcState, RTC_INDEX_PORT } from "../devices/legacy/rtc.js";
import { DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_LEN } from "../devices/legacy/debug-exit.js";

/** COM1. */
export const SERIAL_PORT = 0x3f8;
/** COM1's ISA interrupt line. */
export const SERIAL_IRQ = 4;
const RTC_PORT_COUNT = 2;

/** Plain data (SharedArrayBuffers), so it can be posted to every vCPU worker. */
export interface LegacyStates {
  serial: SharedArrayBuffer;
  i8042: SharedArrayBuffer;
  rtc: SharedArrayBuffer;
}

export function createLegacyStates(): LegacyStates {
  return { serial: createSerialState(), i8042: createI8042State(), rtc: createRtcState() };
}

export interface LegacySinks {
  /** Raises an ISA interrupt line. */
  irq: (line: number) => IrqTrigger;
  /** Console output. */
  output: OutputSink;
  /** i8042 CPU reset. */
  onReset: () => void;
  /** Debug-exit port write. */
  onDebugExit: (status: number) => void;
}

/** Registers the legacy devices on `pio` and returns the UART (the main thread feeds it input). */
export function attachLegacyDevices(pio: Bus, states: LegacyStates, sinks: LegacySinks): { serial: Serial8250; i8042: I8042 } {
  const serial = new Serial8250(states.serial, sinks.irq(SERIAL_IRQ), sinks.output);
  pio.insert(SERIAL_PORT, SERIAL_PORT_COUNT, "serial0", serial);
  const i8042 = new I8042(I8042_DATA_PORT, states.i8042, sinks.onReset, sinks.irq(I8042_KBD_IRQ));
  pio.insert(I8042_DATA_PORT, I8042_COMMAND_PORT - I8042_DATA_PORT + 1, "i8042", i8042);
  pio.insert(RTC_INDEX_PORT, RTC_PORT_COUNT, "rtc", new CmosRtc(states.rtc));
  pio.insert(DEBUG_EXIT_PORT, DEBUG_EXIT_LEN, "debug-exit", new DebugExit(sinks.onDebugExit));
  return { serial, i8042 };
}
