// A raw image file under a virtio-blk drive: pread/pwrite/fdatasync through src/sys.
// Opening is done once, on the VMM's thread, so a missing or unwritable image is a start-up
// error with a clear message; the card worker receives the open descriptor.

import { closeSync, constants, fstatSync, openSync } from "node:fs";
import * as sys from "../sys/index.js";
import { BlockIoError, writeZeroesByChunks, type BlockBackend } from "../devices/virtio/blk/device.js";
import { BLK_SECTOR_SIZE } from "../devices/virtio/spec.js";

export class DriveConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DriveConfigError";
  }
}

export interface OpenedImage {
  fd: number;
  sizeBytes: number;
  close(): void;
}

/** Opens a raw image read-write (or read-only); throws DriveConfigError with the reason. */
export function openImage(path: string, readOnly: boolean): OpenedImage {
  let fd: number;
  try {
    fd = openSync(path, readOnly ? constants.O_RDONLY : constants.O_RDWR);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    const why =
      code === "ENOENT"
        ? "does not exist"
        : code === "EACCES" || code === "EPERM" || code === "EROFS"
          ? `cannot be opened ${readOnly ? "for reading" : "for writing (mark the drive read-only, or fix its permissions)"}`
          : `cannot be opened`;
    throw new DriveConfigError(`virtio-blk image ${path} ${why} (${code})`);
  }
  const st = fstatSync(fd);
  if (!st.isFile() && !st.isBlockDevice()) {
    closeSync(fd);
    throw new DriveConfigError(`virtio-blk image ${path} is not a regular file or block device`);
  }
  if (st.size < BLK_SECTOR_SIZE) {
    closeSync(fd);
    throw new DriveConfigError(`virtio-blk image ${path} is ${st.size} bytes, smaller than one ${BLK_SECTOR_SIZE}-byte sector`);
  }
  let closed = false;
  return {
    fd,
    sizeBytes: st.size,
    close() {
      if (!closed) closeSync(fd);
      closed = true;
    },
  };
}

/** BlockBackend over an open image descriptor (no ownership: the card handle closes it). */
export class FileBackend implements BlockBackend {
  constructor(
    private readonly fd: number,
    readonly sizeBytes: number,
  ) {}

  read(into: Uint8Array, offset: number): void {
    for (let done = 0; done < into.byteLength; ) {
      const n = sys.pread(this.fd, into.subarray(done), offset + done);
      if (n === 0) throw new BlockIoError(`image ended at ${offset + done} while reading ${into.byteLength} bytes at ${offset}`);
      done += n;
    }
  }

  write(from: Uint8Array, offset: number): void {
    for (let done = 0; done < from.byteLength; ) {
      const n = sys.pwrite(this.fd, from.subarray(done), offset + done);
      if (n === 0) throw new BlockIoError(`image refused bytes at ${offset + done}`);
      done += n;
    }
  }

  readAt(host: number, len: number, offset: number): void {
    for (let done = 0; done < len; ) {
      const n = sys.preadAt(this.fd, host + done, len - done, offset + done);
      if (n === 0) throw new BlockIoError(`image ended at ${offset + done} while reading ${len} bytes at ${offset}`);
      done += n;
    }
  }

  writeAt(host: number, len: number, offset: number): void {
    for (let done = 0; done < len; ) {
      const n = sys.pwriteAt(this.fd, host + done, len - done, offset + done);
      if (n === 0) throw new BlockIoError(`image refused bytes at ${offset + done}`);
      done += n;
    }
  }

  flush(): void {
    sys.fdatasync(this.fd);
  }

  writeZeroes(offset: number, len: number, unmap: boolean): void {
    // virtio 1.2 §5.2.6.2: with unmap the device may deallocate (a hole reads as zeros); without
    // it the range stays allocated, which FALLOC_FL_ZERO_RANGE does without writing the bytes.
    const mode = unmap ? sys.FALLOC_FL_PUNCH_HOLE : sys.FALLOC_FL_ZERO_RANGE;
    if (!this.tryFallocate(mode, offset, len)) writeZeroesByChunks((b, o) => this.write(b, o), offset, len);
  }

  /** A discard deallocates the range (a hole, which reads as zeros); zeroing is the fallback. */
  discard(offset: number, len: number): void {
    if (!this.tryFallocate(sys.FALLOC_FL_PUNCH_HOLE, offset, len)) writeZeroesByChunks((b, o) => this.write(b, o), offset, len);
  }

  /** Modes this file's file system refused (EOPNOTSUPP): asked once, then not again. */
  private readonly unsupported = new Set<number>();

  /** fallocate(mode | KEEP_SIZE); false when the file system cannot (the caller zeroes instead). */
  private tryFallocate(mode: number, offset: number, len: number): boolean {
    if (this.unsupported.has(mode)) return false;
    try {
      sys.fallocate(this.fd, mode | sys.FALLOC_FL_KEEP_SIZE, offset, len);
      return true;
    } catch (e) {
      if (e instanceof sys.SysError && (e.code === "EOPNOTSUPP" || e.code === "ENOSYS" || e.code === "ENODEV")) {
        this.unsupported.add(mode);
        return false;
      }
      throw e;
    }
  }
}
