// TAP devices for the network card: open /dev/net/tun, attach to (or create) a TAP interface with
// a virtio-net header on every frame, set its offloads, and move frames with read/writev.
// The ioctl numbers, flags and struct layouts are transcribed from <linux/if_tun.h>, <linux/if.h>
// (struct ifreq) and <sys/uio.h> (struct iovec), and checked against those headers by
// src/sys/abi-check.c (src/sys/kvm-abi.test.ts, "TUN/TAP ABI").
//
// A TAP opened with IFF_VNET_HDR and TUNSETVNETHDRSZ = 12 puts a 12-byte struct
// virtio_net_hdr_mrg_rxbuf in front of each frame, in both directions: the layout of the
// virtio 1.2 §5.1.6 header with VERSION_1, so frames pass between a virtqueue and the TAP
// header and all. The kernel writes the first 10 bytes on read and skips num_buffers (the card
// fills it); on write it ignores num_buffers. One read returns one frame; one write sends one.
//
// Like libc.ts, this file binds libc through koffi itself (read, writev: a failure that only means
// "try again later" must not cost an exception on every empty poll), loaded on first use, per thread.
import { createRequire } from "node:module";
import type * as KoffiModule from "koffi";
import { SysError, errnoName } from "./errors.js";
import { _IOR, _IOW, type StructLayout } from "./kvm-abi.js";
import { O_CLOEXEC, O_NONBLOCK, O_RDWR, close, ioctl, ioctlValue, open } from "./libc.js";

// ---------------------------------------------------------------------------------------------
// ABI: <linux/if_tun.h>, <linux/if.h>, <sys/uio.h>, <limits.h>, <linux/virtio_net.h>.
// ---------------------------------------------------------------------------------------------

/** linux/if_tun.h: the ioctl type of every TUN* request, 'T'. */
const TUN_IOC_TYPE = 0x54;
/** linux/if_tun.h: TUNSETIFF _IOW('T', 202, int) — the argument is really a struct ifreq. */
export const TUNSETIFF = _IOW(TUN_IOC_TYPE, 202, 4);
/** linux/if_tun.h: TUNSETOFFLOAD _IOW('T', 208, unsigned int) — the flags are the argument value itself. */
export const TUNSETOFFLOAD = _IOW(TUN_IOC_TYPE, 208, 4);
/** linux/if_tun.h: TUNGETVNETHDRSZ _IOR('T', 215, int) */
export const TUNGETVNETHDRSZ = _IOR(TUN_IOC_TYPE, 215, 4);
/** linux/if_tun.h: TUNSETVNETHDRSZ _IOW('T', 216, int) — through a pointer to an int. */
export const TUNSETVNETHDRSZ = _IOW(TUN_IOC_TYPE, 216, 4);

/** linux/if_tun.h: IFF_TAP — an Ethernet (layer 2) device */
export const IFF_TAP = 0x0002;
/** linux/if_tun.h: IFF_NO_PI — no 4-byte packet-information prefix */
export const IFF_NO_PI = 0x1000;
/** linux/if_tun.h: IFF_VNET_HDR — a virtio_net_hdr in front of every frame */
export const IFF_VNET_HDR = 0x4000;

/** linux/if_tun.h: TUN_F_CSUM — "You can hand me unchecksummed packets." */
export const TUN_F_CSUM = 0x01;
/** linux/if_tun.h: TUN_F_TSO4 — "I can handle TSO for IPv4 packets" */
export const TUN_F_TSO4 = 0x02;
/** linux/if_tun.h: TUN_F_TSO6 — "I can handle TSO for IPv6 packets" */
export const TUN_F_TSO6 = 0x04;
/** linux/if_tun.h: TUN_F_TSO_ECN — "I can handle TSO with ECN bits." */
export const TUN_F_TSO_ECN = 0x08;
/** linux/if_tun.h: TUN_F_UFO — "I can handle UFO packets" */
export const TUN_F_UFO = 0x10;
const TUN_F_ALL = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO;

/** linux/if.h: IFNAMSIZ — interface names are at most 15 bytes and a NUL. */
export const IFNAMSIZ = 16;
/** limits.h: IOV_MAX — writev(2) takes at most this many buffers (EINVAL beyond: the kernel's UIO_MAXIOV). */
export const IOV_MAX = 1024;

const layout = (size: number, fields: Record<string, number>): StructLayout => Object.freeze({ size, fields: Object.freeze(fields) });

/** linux/if.h: struct ifreq { char ifr_name[IFNAMSIZ]; union { ... short ifr_flags; ... struct ifmap (24 bytes) } } */
export const ifreq = layout(40, { ifr_name: 0, ifr_flags: 16 });
/** sys/uio.h: struct iovec { void *iov_base; size_t iov_len; } */
export const iovec = layout(16, { iov_base: 0, iov_len: 8 });
/** linux/virtio_net.h: struct virtio_net_hdr_mrg_rxbuf — what a TAP with TUNSETVNETHDRSZ 12 carries. */
export const virtio_net_hdr_mrg_rxbuf = layout(12, {
  "hdr.flags": 0, "hdr.gso_type": 1, "hdr.hdr_len": 2, "hdr.gso_size": 4, "hdr.csum_start": 6, "hdr.csum_offset": 8,
  num_buffers: 10,
});

/** Every ioctl, constant and struct above, by header name, for the ABI check. */
export const TUN_IOCTLS: Readonly<Record<string, number>> = Object.freeze({ TUNSETIFF, TUNSETOFFLOAD, TUNGETVNETHDRSZ, TUNSETVNETHDRSZ });
export const TUN_CONSTANTS: Readonly<Record<string, number>> = Object.freeze({
  IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, IFNAMSIZ, IOV_MAX,
});
export const TUN_STRUCTS: Readonly<Record<string, StructLayout>> = Object.freeze({ ifreq, iovec, virtio_net_hdr_mrg_rxbuf });

/** The minimum TUNSETVNETHDRSZ accepts: sizeof(struct virtio_net_hdr), linux/virtio_net.h. */
const VNET_HDR_SIZE_MIN = 10;
/** The character device of the tun driver (Documentation/networking/tuntap.rst). */
export const TUN_DEVICE_PATH = "/dev/net/tun";

// ---------------------------------------------------------------------------------------------
// The binding (read and writev), loaded lazily, per thread.
// ---------------------------------------------------------------------------------------------

type Fn = (...args: unknown[]) => unknown;
interface TunLibc {
  koffi: typeof KoffiModule;
  read: Fn;
  writev: Fn;
}
let bound: TunLibc | undefined;

function bind(): TunLibc {
  if (bound !== undefined) return bound;
  const require = createRequire(import.meta.url);
  const koffi = require("koffi") as typeof KoffiModule;
  const lib = koffi.load("libc.so.6");
  // Anonymous struct type: a named one would be registered process-wide in koffi.
  const iov = koffi.struct({ iov_base: "void *", iov_len: "size_t" });
  if (koffi.sizeof(iov) !== iovec.size) throw new Error(`koffi lays out struct iovec in ${koffi.sizeof(iov)} bytes, not ${iovec.size}`);
  bound = {
    koffi,
    read: lib.func("intptr_t read(int fd, void *buf, size_t count)"),
    // koffi passes each typed array's memory (its byteOffset honoured) as iov_base for the call.
    writev: lib.func("writev", "intptr_t", ["int", koffi.pointer(iov), "int"]),
  };
  return bound;
}

/** A SysError whose message ends with what a user can do about it. */
function sysError(call: string, errno: number, hint?: string): SysError {
  const e = new SysError(call, errno);
  if (hint !== undefined) e.message = `${e.message} (${hint})`;
  return e;
}

function rethrowWith(e: unknown, call: string, hints: Readonly<Record<string, string>>): never {
  if (e instanceof SysError) throw sysError(call, e.errno, hints[e.code]);
  throw e;
}

// ---------------------------------------------------------------------------------------------
// TAP.
// ---------------------------------------------------------------------------------------------

export interface TapOptions {
  /** Bytes of virtio-net header per frame (TUNSETVNETHDRSZ): 12 for a VERSION_1 device. Default 12. */
  vnetHdrSize?: number;
}

export interface Tap {
  /** Non-blocking, close-on-exec; close(2) it to detach (a non-persistent TAP then disappears). */
  fd: number;
  /** The interface name the kernel gave (the one asked for, or tapN for a "tap%d" pattern or ""). */
  name: string;
  vnetHdrSize: number;
}

/** Interface names as the kernel accepts them (net/core/dev.c dev_valid_name): 1–15 bytes, no '/', ':' or space. */
function checkIfName(name: string): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length >= IFNAMSIZ) throw new RangeError(`TAP name "${name}" is ${bytes.length} bytes; interface names have at most ${IFNAMSIZ - 1}`);
  if (name === "." || name === ".." || /[/:\s\0]/.test(name)) throw new RangeError(`TAP name "${name}" is not a valid interface name (no '/', ':', spaces; not "." or "..")`);
  return bytes;
}

/**
 * Opens /dev/net/tun and attaches it to the TAP `name` (created if it does not exist; "" or a name
 * with "%d" lets the kernel number it), with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a
 * `vnetHdrSize`-byte header. The descriptor is O_NONBLOCK | O_CLOEXEC. Errors are SysErrors that
 * say what to do: no tun driver, no CAP_NET_ADMIN, interface busy or of another kind.
 */
export function openTap(name: string, opts: TapOptions = {}): Tap {
  const vnetHdrSize = opts.vnetHdrSize ?? 12;
  if (!Number.isInteger(vnetHdrSize) || vnetHdrSize < VNET_HDR_SIZE_MIN || vnetHdrSize > 0x7fffffff) {
    throw new RangeError(`vnetHdrSize ${vnetHdrSize} is below sizeof(struct virtio_net_hdr) = ${VNET_HDR_SIZE_MIN}`);
  }
  const nameBytes = checkIfName(name);
  let fd: number;
  try {
    fd = open(TUN_DEVICE_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  } catch (e) {
    rethrowWith(e, `open(${TUN_DEVICE_PATH})`, {
      ENOENT: `${TUN_DEVICE_PATH} is missing: load the tun module (modprobe tun) or create the node (mknod ${TUN_DEVICE_PATH} c 10 200)`,
      ENODEV: "the kernel has no tun driver: load the tun module (modprobe tun)",
      EACCES: `no permission to open ${TUN_DEVICE_PATH}: run as root or make the node readable and writable for this user`,
      EPERM: `no permission to open ${TUN_DEVICE_PATH}: run as root or make the node readable and writable for this user`,
    });
  }
  try {
    const ifr = new Uint8Array(ifreq.size);
    ifr.set(nameBytes, ifreq.fields.ifr_name!);
    new DataView(ifr.buffer).setUint16(ifreq.fields.ifr_flags!, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
    const label = name === "" ? "TUNSETIFF" : `TUNSETIFF(${name})`;
    try {
      ioctl(fd, TUNSETIFF, ifr);
    } catch (e) {
      rethrowWith(e, label, {
        EPERM: "creating or attaching a TAP needs CAP_NET_ADMIN: run as root, grant the capability, or use a persistent TAP made for this user (ip tuntap add <name> mode tap user <user>)",
        EBUSY: `the TAP ${name} is in use: another process has it open`,
        EINVAL: `a network interface named ${name} exists and is not a TAP, or the name is not valid`,
      });
    }
    // The kernel writes the name it chose back into ifr_name (NUL-terminated).
    const raw = ifr.subarray(ifreq.fields.ifr_name!, ifreq.fields.ifr_name! + IFNAMSIZ);
    const nul = raw.indexOf(0);
    const actual = new TextDecoder().decode(raw.subarray(0, nul < 0 ? IFNAMSIZ : nul));
    const size = new Uint8Array(4);
    new DataView(size.buffer).setInt32(0, vnetHdrSize, true);
    try {
      ioctl(fd, TUNSETVNETHDRSZ, size);
    } catch (e) {
      rethrowWith(e, `TUNSETVNETHDRSZ(${vnetHdrSize})`, {});
    }
    return { fd, name: actual, vnetHdrSize };
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** TUNGETVNETHDRSZ: the header size the TAP uses. */
export function tapVnetHdrSize(fd: number): number {
  const out = new Uint8Array(4);
  try {
    ioctl(fd, TUNGETVNETHDRSZ, out);
  } catch (e) {
    rethrowWith(e, "TUNGETVNETHDRSZ", {});
  }
  return new DataView(out.buffer).getInt32(0, true);
}

/**
 * TUNSETOFFLOAD: which offloads the reader (the guest) takes in frames the TAP hands out — partial
 * checksums (TUN_F_CSUM), TSO (TUN_F_TSO4/6, only with TUN_F_CSUM), UFO. The kernel completes
 * checksums and segments in software for whatever is not set.
 */
export function tapSetOffload(fd: number, flags: number): void {
  if (!Number.isInteger(flags) || (flags & ~TUN_F_ALL) !== 0 || flags < 0) {
    throw new RangeError(`offload flags 0x${flags.toString(16)} are not a combination of TUN_F_CSUM/TSO4/TSO6/TSO_ECN/UFO`);
  }
  try {
    ioctlValue(fd, TUNSETOFFLOAD, flags);
  } catch (e) {
    rethrowWith(e, `TUNSETOFFLOAD(0x${flags.toString(16)})`, {
      EINVAL: "the kernel refuses an offload it does not know; TSO flags need TUN_F_CSUM",
    });
  }
}

function checkFd(fd: number, what: string): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`${what}: ${fd} is not a file descriptor`);
}

/**
 * Reads one frame (header included) into `buf`; returns its length, or null when none is waiting
 * (EAGAIN). A frame longer than `buf` is cut to `buf.byteLength` without notice (measured: a
 * 102-byte frame read into 30 bytes returns 30), so give a buffer one byte longer than the largest
 * frame you accept — 12 + 65550 + 1 for virtio-net — and treat a full buffer as too long.
 */
export function tapRead(fd: number, buf: Uint8Array): number | null {
  checkFd(fd, "tapRead");
  const l = bind();
  const n = Number(l.read(fd, buf, buf.byteLength) as number | bigint);
  if (n >= 0) return n;
  const errno = l.koffi.errno();
  if (errnoName(errno) === "EAGAIN") return null;
  throw new SysError("read(tap)", errno);
}

/**
 * Writes one frame given as `segments` (header included; views into guest memory need no copy)
 * with one writev(2); returns the bytes written, or null when the TAP cannot take it now (EAGAIN).
 * More than IOV_MAX segments are gathered into one buffer first (writev would refuse them).
 * Other failures (EINVAL for a header the kernel rejects, EIO while the link is down) throw SysError.
 */
export function tapWritev(fd: number, segments: readonly Uint8Array[]): number | null {
  checkFd(fd, "tapWritev");
  const l = bind();
  let iovs: readonly Uint8Array[] = segments;
  if (segments.length > IOV_MAX) {
    const total = segments.reduce((s, b) => s + b.byteLength, 0);
    const one = new Uint8Array(total);
    let o = 0;
    for (const s of segments) {
      one.set(s, o);
      o += s.byteLength;
    }
    iovs = [one];
  }
  const n = Number(l.writev(fd, iovs.map((b) => ({ iov_base: b, iov_len: b.byteLength })), iovs.length) as number | bigint);
  if (n >= 0) return n;
  const errno = l.koffi.errno();
  if (errnoName(errno) === "EAGAIN") return null;
  throw new SysError("writev(tap)", errno);
}
