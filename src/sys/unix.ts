// Unix-domain stream sockets for the vsock card (Firecracker's hybrid vsock: guest AF_VSOCK
// flows end at host AF_UNIX sockets). Every socket is non-blocking and close-on-exec; the calls
// that would block answer null (EAGAIN) instead, so a card polls them beside its kicks.
// The constants and struct sockaddr_un are transcribed from <sys/socket.h> and <sys/un.h> and
// checked against those headers by src/sys/abi-check.c (src/sys/kvm-abi.test.ts, "Unix socket ABI").
//
// Like tun.ts, this file binds libc through koffi itself (an empty read or a full socket must not
// cost an exception on every poll), loaded on first use, per thread.
import { createRequire } from "node:module";
import type * as KoffiModule from "koffi";
import { SysError, errnoName } from "./errors.js";
import type { StructLayout } from "./kvm-abi.js";
import { close } from "./libc.js";

// ---------------------------------------------------------------------------------------------
// ABI: <sys/socket.h> (bits/socket.h, bits/socket_type.h), <sys/un.h>.
// ---------------------------------------------------------------------------------------------

/** sys/socket.h: AF_UNIX — local (Unix-domain) sockets */
export const AF_UNIX = 1;
/** sys/socket.h (bits/socket_type.h): SOCK_STREAM — a connected byte stream */
export const SOCK_STREAM = 1;
/** sys/socket.h (bits/socket_type.h): SOCK_NONBLOCK (= O_NONBLOCK), or'ed into socket(2)'s and accept4(2)'s type/flags */
export const SOCK_NONBLOCK = 0o4000;
/** sys/socket.h (bits/socket_type.h): SOCK_CLOEXEC (= O_CLOEXEC) */
export const SOCK_CLOEXEC = 0o2000000;
/** sys/socket.h: MSG_NOSIGNAL — a write to a closed peer fails with EPIPE instead of raising SIGPIPE */
export const MSG_NOSIGNAL = 0x4000;
/** sys/un.h: the bytes of sockaddr_un.sun_path (Linux's UNIX_PATH_MAX, linux/un.h), a path and its NUL */
export const SUN_PATH_LEN = 108;
/** The longest path bind(2)/connect(2) take here: sun_path less the terminating NUL. */
export const UNIX_PATH_MAX_BYTES = SUN_PATH_LEN - 1;

/** sys/un.h: struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; } */
export const sockaddr_un: StructLayout = Object.freeze({ size: 110, fields: Object.freeze({ sun_family: 0, sun_path: 2 }) });

/** Every constant and struct above, by header name, for the ABI check. */
export const UNIX_CONSTANTS: Readonly<Record<string, number>> = Object.freeze({
  AF_UNIX, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL, SUN_PATH_LEN,
});
export const UNIX_STRUCTS: Readonly<Record<string, StructLayout>> = Object.freeze({ sockaddr_un });

// ---------------------------------------------------------------------------------------------
// The binding, loaded lazily, per thread.
// ---------------------------------------------------------------------------------------------

type Fn = (...args: unknown[]) => unknown;
interface UnixLibc {
  koffi: typeof KoffiModule;
  socket: Fn;
  bind: Fn;
  listen: Fn;
  accept4: Fn;
  connect: Fn;
  read: Fn;
  send: Fn;
}
let bound: UnixLibc | undefined;

function lib(): UnixLibc {
  if (bound !== undefined) return bound;
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new Error(`src/sys supports Linux on x86-64 only (this is ${process.platform}/${process.arch})`);
  }
  const require = createRequire(import.meta.url);
  const koffi = require("koffi") as typeof KoffiModule;
  const libc = koffi.load("libc.so.6");
  // socklen_t is an unsigned 32-bit int (sys/socket.h); the addresses are byte arrays laid out as sockaddr_un.
  bound = {
    koffi,
    socket: libc.func("int socket(int domain, int type, int protocol)"),
    bind: libc.func("int bind(int fd, const void *addr, uint32_t addrlen)"),
    listen: libc.func("int listen(int fd, int backlog)"),
    accept4: libc.func("int accept4(int fd, void *addr, void *addrlen, int flags)"),
    connect: libc.func("int connect(int fd, const void *addr, uint32_t addrlen)"),
    read: libc.func("intptr_t read(int fd, void *buf, size_t count)"),
    send: libc.func("intptr_t send(int fd, const void *buf, size_t len, int flags)"),
  };
  return bound;
}

function checkFd(fd: number, what: string): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`${what}: ${fd} is not a file descriptor`);
}

/**
 * A sockaddr_un for `path` and its length (the family, the path and its NUL). Paths are file
 * system paths: not empty, no NUL (Linux's abstract names are not supported), at most 107 bytes.
 */
function sockaddrOf(path: string): { addr: Uint8Array; len: number } {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0) throw new RangeError("a Unix socket path must not be empty");
  if (bytes.includes(0)) throw new RangeError(`Unix socket path ${JSON.stringify(path)} contains a NUL byte`);
  if (bytes.length > UNIX_PATH_MAX_BYTES) {
    throw new RangeError(
      `Unix socket path ${path} is ${bytes.length} bytes; sockaddr_un.sun_path holds at most ${UNIX_PATH_MAX_BYTES} and a NUL (use a shorter path)`,
    );
  }
  const addr = new Uint8Array(sockaddr_un.size);
  new DataView(addr.buffer).setUint16(sockaddr_un.fields.sun_family!, AF_UNIX, true);
  addr.set(bytes, sockaddr_un.fields.sun_path!);
  return { addr, len: sockaddr_un.fields.sun_path! + bytes.length + 1 };
}

function newSocket(): number {
  const l = lib();
  const fd = l.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new SysError("socket(AF_UNIX)", l.koffi.errno());
  return fd;
}

/** A SysError whose message ends with what a user can do about it. */
function withHint(call: string, errno: number, hints: Readonly<Record<string, string>>): SysError {
  const e = new SysError(call, errno);
  const hint = hints[e.code];
  if (hint !== undefined) e.message = `${e.message} (${hint})`;
  return e;
}

// ---------------------------------------------------------------------------------------------
// Sockets.
// ---------------------------------------------------------------------------------------------

/**
 * A listening socket bound at `path` (socket, bind, listen): non-blocking, close-on-exec.
 * Something already at `path` (a stale socket file too) is an EADDRINUSE SysError naming it:
 * the caller decides whether to unlink it. Close the fd to stop listening; the file stays.
 */
export function unixListen(path: string, backlog: number): number {
  if (!Number.isInteger(backlog) || backlog < 0) throw new RangeError(`listen backlog ${backlog} is not a non-negative integer`);
  const { addr, len } = sockaddrOf(path);
  const fd = newSocket();
  try {
    const l = lib();
    if ((l.bind(fd, addr, len) as number) < 0) {
      throw withHint(`bind(${path})`, l.koffi.errno(), {
        EADDRINUSE: `a file already exists at ${path}: remove it if it is a stale socket, or choose another path`,
        ENOENT: `the directory of ${path} does not exist`,
        EACCES: `no permission to create ${path}`,
      });
    }
    if ((l.listen(fd, backlog) as number) < 0) throw new SysError(`listen(${path})`, l.koffi.errno());
    return fd;
  } catch (e) {
    close(fd);
    throw e;
  }
}

/** A connection waiting on listening socket `fd` (accept4, non-blocking and close-on-exec), or null when none waits (EAGAIN). */
export function unixAccept(fd: number): number | null {
  checkFd(fd, "unixAccept");
  const l = lib();
  const c = l.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (c >= 0) return c;
  const errno = l.koffi.errno();
  if (errnoName(errno) === "EAGAIN") return null;
  throw new SysError("accept4", errno);
}

/** What a connect that finds nobody listening fails with: no file, a file nobody listens on, a full backlog. */
const NOBODY_LISTENS: ReadonlySet<string> = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);

/**
 * Connects a new non-blocking, close-on-exec stream socket to `path`; returns it, or null when
 * nothing listens there (ENOENT, ECONNREFUSED; EAGAIN: the listener's backlog is full). A
 * Unix-socket connect completes or fails at once. Other failures (EACCES, ENOTDIR) throw SysError.
 */
export function unixConnect(path: string): number | null {
  const { addr, len } = sockaddrOf(path);
  const fd = newSocket();
  const l = lib();
  if ((l.connect(fd, addr, len) as number) === 0) return fd;
  const errno = l.koffi.errno();
  close(fd);
  if (NOBODY_LISTENS.has(errnoName(errno))) return null;
  throw new SysError(`connect(${path})`, errno);
}

/** Reads what is there into `buf`: the byte count, 0 at end of stream, null when nothing is there yet (EAGAIN). Errors (ECONNRESET) throw SysError. */
export function sockRead(fd: number, buf: Uint8Array): number | null {
  checkFd(fd, "sockRead");
  // 0 means the end of the stream: an empty buffer could not tell it from "nothing read".
  if (buf.byteLength === 0) throw new RangeError("sockRead: the buffer must hold at least one byte");
  const l = lib();
  const n = Number(l.read(fd, buf, buf.byteLength) as number | bigint);
  if (n >= 0) return n;
  const errno = l.koffi.errno();
  if (errnoName(errno) === "EAGAIN") return null;
  throw new SysError("read(socket)", errno);
}

/**
 * Writes what the socket takes now (send(2) with MSG_NOSIGNAL): the byte count, or null when it
 * takes nothing (EAGAIN). A closed peer is a SysError EPIPE (or ECONNRESET), never a SIGPIPE.
 */
export function sockWrite(fd: number, bytes: Uint8Array): number | null {
  checkFd(fd, "sockWrite");
  if (bytes.byteLength === 0) return 0;
  const l = lib();
  const n = Number(l.send(fd, bytes, bytes.byteLength, MSG_NOSIGNAL) as number | bigint);
  if (n >= 0) return n;
  const errno = l.koffi.errno();
  if (errnoName(errno) === "EAGAIN") return null;
  throw new SysError("send(socket)", errno);
}
