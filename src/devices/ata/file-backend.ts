// A raw image file under the emulated ATA disk: pread/pwrite/fdatasync through src/sys, on the
// vCPU thread that took the exit (that is the point of the emulated path: the vCPU waits).
// The descriptor is a process-wide number, so every vCPU worker's device uses the same open file.

import { closeSync, constants, fstatSync, openSync } from "node:fs";
import * as sys from "../../sys/index.js";
import type { IrqTrigger } from "../legacy/serial.js";
import { AtaDevice, type AtaBackend, type AtaIdentity } from "./device.js";
import { ATA_SECTOR_SIZE } from "./spec.js";

export class AtaImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AtaImageError";
  }
}

export class FileAtaBackend implements AtaBackend {
  constructor(
    private readonly fd: number,
    readonly sizeBytes: number,
    private readonly readOnly = false,
  ) {}

  read(into: Uint8Array, offset: number): void {
    for (let done = 0; done < into.byteLength; ) {
      const n = sys.pread(this.fd, into.subarray(done), offset + done);
      if (n === 0) throw new AtaImageError(`image ended at ${offset + done} while reading ${into.byteLength} bytes at ${offset}`);
      done += n;
    }
  }

  write(from: Uint8Array, offset: number): void {
    if (this.readOnly) throw new AtaImageError(`image is read-only: write of ${from.byteLength} bytes at ${offset} refused`);
    for (let done = 0; done < from.byteLength; ) {
      const n = sys.pwrite(this.fd, from.subarray(done), offset + done);
      if (n === 0) throw new AtaImageError(`image refused bytes at ${offset + done}`);
      done += n;
    }
  }

  flush(): void {
    if (!this.readOnly) sys.fdatasync(this.fd);
  }
}

export interface OpenedAtaImage {
  fd: number;
  sizeBytes: number;
  close(): void;
}

/** Opens a raw image for the ATA disk; throws AtaImageError naming the file and the reason. */
export function openAtaImage(path: string, readOnly = false): OpenedAtaImage {
  let fd: number;
  try {
    fd = openSync(path, readOnly ? constants.O_RDONLY : constants.O_RDWR);
  } catch (e) {
    throw new AtaImageError(`ATA image ${path} cannot be opened (${(e as NodeJS.ErrnoException).code ?? "error"})`);
  }
  const size = fstatSync(fd).size;
  if (size < ATA_SECTOR_SIZE) {
    closeSync(fd);
    throw new AtaImageError(`ATA image ${path} is ${size} bytes, smaller than one ${ATA_SECTOR_SIZE}-byte sector`);
  }
  let closed = false;
  return {
    fd,
    sizeBytes: size,
    close() {
      if (!closed) closeSync(fd);
      closed = true;
    },
  };
}

/** The factory the VMM calls in each vCPU worker: one AtaDevice over shared `state`. */
export function createAtaBusDevices(state: SharedArrayBuffer, backend: AtaBackend, irq: IrqTrigger, identity?: AtaIdentity): AtaDevice {
  return new AtaDevice(state, backend, irq, identity);
}
