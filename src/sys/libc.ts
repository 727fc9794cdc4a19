// The libc calls the VMM needs, through koffi. This is the only file in the project that touches
// FFI: everything above sees numbers (fds), Uint8Arrays, ArrayBuffers and BigInt addresses.
//
// koffi is loaded on first use, once per thread: a worker_thread that imports this module gets
// its own binding. Every failing call throws SysError naming the call; errno is read with
// koffi.errno() straight after the call, before anything else can overwrite it.
// Calls are not retried on EINTR: the caller decides (KVM_RUN relies on EINTR surfacing).
import { createRequire } from "node:module";
import { isMainThread } from "node:worker_threads";
import { readdirSync, readFileSync } from "node:fs";
import type * as KoffiModule from "koffi";
import { SysError, errnoName } from "./errors.js";
import { ioctlName } from "./kvm-abi.js";

// ---------------------------------------------------------------------------------------------
// Constants (Linux x86-64 values; each checked against the headers by src/sys/abi-check.c).
// ---------------------------------------------------------------------------------------------

/** fcntl.h: O_RDONLY */
export const O_RDONLY = 0o0;
/** fcntl.h: O_WRONLY */
export const O_WRONLY = 0o1;
/** fcntl.h: O_RDWR */
export const O_RDWR = 0o2;
/** fcntl.h: O_CREAT */
export const O_CREAT = 0o100;
/** fcntl.h: O_TRUNC */
export const O_TRUNC = 0o1000;
/** fcntl.h: O_NONBLOCK */
export const O_NONBLOCK = 0o4000;
/** fcntl.h: O_CLOEXEC */
export const O_CLOEXEC = 0o2000000;

/** sys/mman.h: PROT_NONE */
export const PROT_NONE = 0x0;
/** sys/mman.h: PROT_READ */
export const PROT_READ = 0x1;
/** sys/mman.h: PROT_WRITE */
export const PROT_WRITE = 0x2;
/** sys/mman.h: PROT_EXEC */
export const PROT_EXEC = 0x4;
/** sys/mman.h: MAP_SHARED */
export const MAP_SHARED = 0x01;
/** sys/mman.h: MAP_PRIVATE */
export const MAP_PRIVATE = 0x02;
/** sys/mman.h: MAP_FIXED */
export const MAP_FIXED = 0x10;
/** sys/mman.h: MAP_ANONYMOUS */
export const MAP_ANONYMOUS = 0x20;
/** sys/mman.h: MAP_NORESERVE */
export const MAP_NORESERVE = 0x4000;
/** sys/mman.h (linux/mman.h): MAP_FIXED_NOREPLACE — at exactly the address given, or EEXIST (Linux 4.17) */
export const MAP_FIXED_NOREPLACE = 0x100000;
/** sys/mman.h: MAP_FAILED ((void *) -1), as the BigInt koffi returns */
export const MAP_FAILED = 0xffffffffffffffffn;

/** sys/mman.h (linux/memfd.h): MFD_CLOEXEC */
export const MFD_CLOEXEC = 0x1;
/** sys/mman.h (linux/memfd.h): MFD_ALLOW_SEALING */
export const MFD_ALLOW_SEALING = 0x2;

/** sys/eventfd.h: EFD_SEMAPHORE */
export const EFD_SEMAPHORE = 0o1;
/** sys/eventfd.h: EFD_CLOEXEC (= O_CLOEXEC) */
export const EFD_CLOEXEC = 0o2000000;
/** sys/eventfd.h: EFD_NONBLOCK (= O_NONBLOCK) */
export const EFD_NONBLOCK = 0o4000;

/** linux/falloc.h: FALLOC_FL_KEEP_SIZE — the file size stays as it is */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** linux/falloc.h: FALLOC_FL_PUNCH_HOLE — deallocate; the range reads as zeros (needs KEEP_SIZE) */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** linux/falloc.h: FALLOC_FL_ZERO_RANGE — the range reads as zeros and stays allocated */
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** poll.h: POLLIN — there is data to read */
export const POLLIN = 0x1;
/** poll.h: POLLOUT — writing will not block */
export const POLLOUT = 0x4;
/** poll.h: POLLERR — an error condition (always reported) */
export const POLLERR = 0x8;
/** poll.h: POLLHUP — hung up (always reported) */
export const POLLHUP = 0x10;
/** poll.h: POLLNVAL — the descriptor is not open (always reported) */
export const POLLNVAL = 0x20;
/** poll.h: sizeof(struct pollfd) { int fd; short events; short revents; } */
export const POLLFD_SIZE = 8;
/** poll.h: offsetof(struct pollfd, events) */
export const POLLFD_EVENTS_OFFSET = 4;
/** poll.h: offsetof(struct pollfd, revents) */
export const POLLFD_REVENTS_OFFSET = 6;

/** time.h: CLOCK_THREAD_CPUTIME_ID — the calling thread's CPU time */
export const CLOCK_THREAD_CPUTIME_ID = 3;
/** time.h: sizeof(struct timespec) { time_t tv_sec; long tv_nsec; } on x86-64 */
export const TIMESPEC_SIZE = 16;

/** time.h: CLOCK_MONOTONIC */
export const CLOCK_MONOTONIC = 1;
/** time.h: sizeof(struct itimerspec) { struct timespec it_interval, it_value; } on x86-64 */
export const ITIMERSPEC_SIZE = 32;
/** signal.h (asm-generic/siginfo.h): SIGEV_THREAD_ID — a timer's signal goes to one thread */
export const SIGEV_THREAD_ID = 4;
/** signal.h: sizeof(struct sigevent) on x86-64 */
export const SIGEVENT_SIZE = 64;
/** signal.h: offsetof(struct sigevent, sigev_signo) */
export const SIGEVENT_SIGNO_OFFSET = 8;
/** signal.h: offsetof(struct sigevent, sigev_notify) */
export const SIGEVENT_NOTIFY_OFFSET = 12;
/** signal.h (bits/types/sigevent_t.h): offsetof(struct sigevent, _sigev_un._tid), the thread a SIGEV_THREAD_ID timer signals */
export const SIGEVENT_TID_OFFSET = 16;

/** signal.h: SIGUSR1 */
export const SIGUSR1 = 10;
/** signal.h: SIGUSR2 — the signal that kicks a vCPU thread out of KVM_RUN */
export const SIGUSR2 = 12;

/** sys/syscall.h (asm/unistd_64.h): SYS_gettid on x86-64 */
export const SYS_gettid = 186;
/** sys/syscall.h (asm/unistd_64.h): SYS_ioctl on x86-64 (the number /proc/<pid>/syscall shows) */
export const SYS_ioctl = 16;

/** Every constant above, by header name (MAP_FAILED excluded: it is a pointer), for the ABI check. */
export const LIBC_CONSTANTS: Readonly<Record<string, number>> = Object.freeze({
  O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_NONBLOCK, O_CLOEXEC,
  PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC, MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE, MAP_FIXED_NOREPLACE,
  MFD_CLOEXEC, MFD_ALLOW_SEALING, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL, POLLFD_SIZE,
  POLLFD_EVENTS_OFFSET, POLLFD_REVENTS_OFFSET, CLOCK_THREAD_CPUTIME_ID, TIMESPEC_SIZE, EFD_SEMAPHORE, EFD_CLOEXEC, EFD_NONBLOCK, SIGUSR1, SIGUSR2, SYS_gettid, SYS_ioctl,
  CLOCK_MONOTONIC, ITIMERSPEC_SIZE, SIGEV_THREAD_ID, SIGEVENT_SIZE, SIGEVENT_SIGNO_OFFSET, SIGEVENT_NOTIFY_OFFSET, SIGEVENT_TID_OFFSET,
});

// ---------------------------------------------------------------------------------------------
// The binding, loaded lazily (per thread: module state is per isolate).
// ---------------------------------------------------------------------------------------------

type Fn = (...args: unknown[]) => unknown;

interface Libc {
  koffi: typeof KoffiModule;
  open: Fn; close: Fn; read: Fn; write: Fn; pread: Fn; pwrite: Fn; preadAt: Fn; pwriteAt: Fn;
  ioctlPtr: Fn; ioctlVal: Fn;
  mmap: Fn; munmap: Fn; memfd_create: Fn; ftruncate: Fn; fallocate: Fn; fsync: Fn; fdatasync: Fn;
  eventfd: Fn; pipe2: Fn; getpid: Fn; syscall: Fn; tgkill: Fn; poll: Fn; clock_gettime: Fn;
  timer_create: Fn; timer_settime: Fn; timer_delete: Fn;
}

let libc: Libc | undefined;

function bind(): Libc {
  if (libc !== undefined) return libc;
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new Error(`src/sys supports Linux on x86-64 only (this is ${process.platform}/${process.arch})`);
  }
  const require = createRequire(import.meta.url);
  const koffi = require("koffi") as typeof KoffiModule;
  const lib = koffi.load("libc.so.6");
  libc = {
    koffi,
    // open(2) is variadic (mode only with O_CREAT/O_TMPFILE): declared so, mode passed as "int".
    open: lib.func("int open(const char *path, int flags, ...)"),
    close: lib.func("int close(int fd)"),
    read: lib.func("intptr_t read(int fd, void *buf, size_t count)"),
    write: lib.func("intptr_t write(int fd, const void *buf, size_t count)"),
    pread: lib.func("intptr_t pread(int fd, void *buf, size_t count, int64_t offset)"),
    pwrite: lib.func("intptr_t pwrite(int fd, const void *buf, size_t count, int64_t offset)"),
    // The same calls with the buffer as a plain address: no typed array to unwrap per call.
    preadAt: lib.func("intptr_t pread(int fd, uintptr_t buf, size_t count, int64_t offset)"),
    pwriteAt: lib.func("intptr_t pwrite(int fd, uintptr_t buf, size_t count, int64_t offset)"),
    // ioctl(2) is variadic; two fixed prototypes are ABI-safe on x86-64 (DESIGN.md §6): the
    // third argument travels in rdx either way.
    ioctlPtr: lib.func("int ioctl(int fd, unsigned long request, void *arg)"),
    ioctlVal: lib.func("int ioctl(int fd, unsigned long request, unsigned long arg)"),
    mmap: lib.func("uint64_t mmap(uint64_t addr, size_t length, int prot, int flags, int fd, int64_t offset)"),
    munmap: lib.func("int munmap(uint64_t addr, size_t length)"),
    memfd_create: lib.func("int memfd_create(const char *name, unsigned int flags)"),
    ftruncate: lib.func("int ftruncate(int fd, int64_t length)"),
    fallocate: lib.func("int fallocate(int fd, int mode, int64_t offset, int64_t len)"),
    fsync: lib.func("int fsync(int fd)"),
    fdatasync: lib.func("int fdatasync(int fd)"),
    eventfd: lib.func("int eventfd(unsigned int initval, int flags)"),
    pipe2: lib.func("int pipe2(void *pipefd, int flags)"),
    getpid: lib.func("int getpid()"),
    syscall: lib.func("long syscall(long number, ...)"),
    tgkill: lib.func("int tgkill(int tgid, int tid, int sig)"),
    poll: lib.func("int poll(void *fds, unsigned long nfds, int timeout)"),
    clock_gettime: lib.func("int clock_gettime(int clockid, void *tp)"),
    // POSIX timers (in libc.so.6 since glibc 2.34). timer_t is a pointer-sized handle: it travels
    // as an integer of that size.
    timer_create: lib.func("int timer_create(int clockid, void *sevp, void *timerid)"),
    timer_settime: lib.func("int timer_settime(intptr_t timerid, int flags, void *new_value, void *old_value)"),
    timer_delete: lib.func("int timer_delete(intptr_t timerid)"),
  };
  return libc;
}

/** Throws SysError(call, errno) when a call returned -1. Must run straight after the call. */
function check(result: number, call: string | (() => string)): number {
  if (result < 0) {
    const errno = bind().koffi.errno();
    throw new SysError(typeof call === "string" ? call : call(), errno);
  }
  return result;
}

function checkFd(fd: number, what: string): void {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`${what}: ${fd} is not a file descriptor`);
}

// ---------------------------------------------------------------------------------------------
// Files and descriptors.
// ---------------------------------------------------------------------------------------------

/** open(2). Errors read `open(<path>) failed: ENOENT`. */
export function open(path: string, flags: number, mode = 0): number {
  const l = bind();
  return check(l.open(path, flags, "int", mode) as number, () => `open(${path})`);
}

/** close(2). */
export function close(fd: number): void {
  checkFd(fd, "close");
  check(bind().close(fd) as number, "close");
}

/** read(2) into `buf` (all of it, from its byteOffset); returns the byte count (0 at end of file). */
export function read(fd: number, buf: Uint8Array): number {
  checkFd(fd, "read");
  return check(bind().read(fd, buf, buf.byteLength) as number, "read");
}

/** write(2) of all of `buf`; returns the byte count written (may be short). */
export function write(fd: number, buf: Uint8Array): number {
  checkFd(fd, "write");
  return check(bind().write(fd, buf, buf.byteLength) as number, "write");
}

/** pread(2) at `offset`. */
export function pread(fd: number, buf: Uint8Array, offset: number | bigint): number {
  checkFd(fd, "pread");
  return check(bind().pread(fd, buf, buf.byteLength, offset) as number, "pread");
}

/** pwrite(2) at `offset`. */
export function pwrite(fd: number, buf: Uint8Array, offset: number | bigint): number {
  checkFd(fd, "pwrite");
  return check(bind().pwrite(fd, buf, buf.byteLength, offset) as number, "pwrite");
}

/**
 * pread(2) of `len` bytes into host memory at `addr`. The caller vouches for the range: it must
 * lie inside a live mapping the caller owns — guest RAM as GuestMemory.hostAddress checked it.
 */
export function preadAt(fd: number, addr: number, len: number, offset: number): number {
  checkFd(fd, "pread");
  return check(bind().preadAt(fd, addr, len, offset) as number, "pread");
}

/** pwrite(2) of `len` bytes from host memory at `addr` (the range as preadAt's). */
export function pwriteAt(fd: number, addr: number, len: number, offset: number): number {
  checkFd(fd, "pwrite");
  return check(bind().pwriteAt(fd, addr, len, offset) as number, "pwrite");
}

/** ftruncate(2). */
export function ftruncate(fd: number, length: number | bigint): void {
  checkFd(fd, "ftruncate");
  check(bind().ftruncate(fd, length) as number, "ftruncate");
}

/**
 * fallocate(2) with a FALLOC_FL_* mode. A file system or device that cannot do the mode fails
 * with EOPNOTSUPP (SysError.code), which callers may answer with a slower equivalent.
 */
export function fallocate(fd: number, mode: number, offset: number | bigint, len: number | bigint): void {
  checkFd(fd, "fallocate");
  check(bind().fallocate(fd, mode, offset, len) as number, "fallocate");
}

/** fsync(2). */
export function fsync(fd: number): void {
  checkFd(fd, "fsync");
  check(bind().fsync(fd) as number, "fsync");
}

/** fdatasync(2). */
export function fdatasync(fd: number): void {
  checkFd(fd, "fdatasync");
  check(bind().fdatasync(fd) as number, "fdatasync");
}

/** memfd_create(2): anonymous memory with an fd, so another process can map the same pages. */
export function memfdCreate(name: string, flags: number): number {
  return check(bind().memfd_create(name, flags) as number, "memfd_create");
}

/** eventfd(2). */
export function eventfd(initval: number, flags: number): number {
  return check(bind().eventfd(initval, flags) as number, "eventfd");
}

/** pipe2(2): a kernel pipe (flags: O_CLOEXEC, O_NONBLOCK for both ends); returns [read end, write end]. */
export function pipe2(flags: number): [readFd: number, writeFd: number] {
  const fds = new Int32Array(2);
  check(bind().pipe2(fds, flags) as number, "pipe2");
  return [fds[0]!, fds[1]!];
}

// ---------------------------------------------------------------------------------------------
// ioctl.
// ---------------------------------------------------------------------------------------------

/**
 * ioctl(2) with a pointer argument: the kernel reads and/or writes `arg` in place (koffi passes a
 * typed array's memory by reference, honouring its byteOffset). `arg` must be at least as large as
 * the struct the request names. Errors name the request: `KVM_SET_USER_MEMORY_REGION failed: EINVAL`.
 */
export function ioctl(fd: number, request: number, arg: Uint8Array | null): number {
  checkFd(fd, "ioctl");
  return check(bind().ioctlPtr(fd, request >>> 0, arg) as number, () => ioctlName(request));
}

/**
 * ioctl(2) with a pointer argument, run on a thread of libuv's pool (koffi's async call) so the
 * caller's event loop goes on while the call blocks; errno travels back with the result. The
 * call holds that pool thread until it returns: KVM_RUN of a pooled vCPU (vmm/vcpu-pooled.ts).
 */
export function ioctlAsync(fd: number, request: number, arg: Uint8Array | null): Promise<number> {
  checkFd(fd, "ioctl");
  return callAsync(bind().ioctlPtr, [fd, request >>> 0, arg], () => ioctlName(request));
}

/**
 * A call through koffi's async member (a thread of libuv's pool): resolves with its result, or
 * rejects with SysError(call, errno) when it returned -1 (koffi carries errno back with it).
 */
function callAsync(fn: Fn, args: unknown[], call: string | (() => string)): Promise<number> {
  const l = bind();
  return new Promise((resolve, reject) => {
    (fn as Fn & { async: Fn }).async(...args, (err: unknown, res: number) => {
      if (err !== null && err !== undefined) reject(err instanceof Error ? err : new Error(String(err)));
      else if (res < 0) reject(new SysError(typeof call === "string" ? call : call(), l.koffi.errno()));
      else resolve(res);
    });
  });
}

/** ioctl(2) with an integer argument (KVM_CREATE_VCPU's id, KVM_CHECK_EXTENSION's cap, ...). */
export function ioctlValue(fd: number, request: number, arg: number | bigint): number {
  checkFd(fd, "ioctl");
  return check(bind().ioctlVal(fd, request >>> 0, arg) as number, () => ioctlName(request));
}

// ---------------------------------------------------------------------------------------------
// Memory mappings.
// ---------------------------------------------------------------------------------------------

/**
 * mmap(2); returns the address. At an address of the kernel's choosing unless `at` is given (then
 * pass MAP_FIXED_NOREPLACE in `flags` to get exactly that address or EEXIST). Throws on MAP_FAILED.
 */
export function mmap(length: number, prot: number, flags: number, fd: number, offset: number | bigint, at: bigint = 0n): bigint {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`mmap: length ${length} is not a positive size`);
  const l = bind();
  const addr = BigInt(l.mmap(at, length, prot, flags, fd, offset) as number | bigint);
  if (addr === MAP_FAILED) throw new SysError("mmap", l.koffi.errno());
  return addr;
}

/** munmap(2). Every view made over [addr, addr + length) must be dropped first: touching one faults. */
export function munmap(addr: bigint, length: number): void {
  check(bind().munmap(addr, length) as number, "munmap");
}

/**
 * A zero-copy ArrayBuffer over native memory (koffi.view). Safe only while the mapping lives:
 * the caller owns the mapping and must not use the buffer after munmap.
 */
export function view(addr: bigint, length: number): ArrayBuffer {
  if (addr === 0n || addr === MAP_FAILED) throw new RangeError(`view: 0x${addr.toString(16)} is not a mapping`);
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`view: length ${length} is not a positive size`);
  return bind().koffi.view(addr, length);
}

// ---------------------------------------------------------------------------------------------
// Processes, threads and signals.
// ---------------------------------------------------------------------------------------------

/** getpid(2). */
export function getpid(): number {
  return bind().getpid() as number;
}

/** gettid(2) via syscall(SYS_gettid): the kernel id of the calling thread (main or worker). */
export function gettid(): number {
  return check(Number(bind().syscall(SYS_gettid) as number | bigint), "gettid");
}

/**
 * CPU time the calling thread has used, in microseconds (clock_gettime(CLOCK_THREAD_CPUTIME_ID)):
 * what one card worker or vCPU thread cost, apart from the rest of the process.
 */
export function threadCpuMicros(): number {
  const ts = new BigInt64Array(TIMESPEC_SIZE / 8);
  check(bind().clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts) as number, "clock_gettime");
  return Number(ts[0]!) * 1e6 + Math.floor(Number(ts[1]!) / 1e3);
}

/** A periodic signal to one thread (threadTimer). */
export interface ThreadTimer {
  /** Disarms and deletes the timer. Idempotent. */
  stop(): void;
}

/**
 * A POSIX timer that sends `signal` to the calling thread every `periodMs` (timer_create(2) with
 * SIGEV_THREAD_ID on CLOCK_MONOTONIC): what interrupts a KVM_RUN this thread blocks in, so that
 * it comes back to its event loop at least that often. The signal needs a handler
 * (installSignalHandler), else its default action ends the process.
 */
export function threadTimer(signal: number, periodMs: number): ThreadTimer {
  if (!(periodMs > 0)) throw new RangeError(`threadTimer: period ${periodMs} ms is not positive`);
  const l = bind();
  const sev = new Uint8Array(SIGEVENT_SIZE);
  const v = new DataView(sev.buffer);
  v.setInt32(SIGEVENT_SIGNO_OFFSET, signal, true);
  v.setInt32(SIGEVENT_NOTIFY_OFFSET, SIGEV_THREAD_ID, true);
  v.setInt32(SIGEVENT_TID_OFFSET, gettid(), true);
  const id = new BigInt64Array(1);
  check(l.timer_create(CLOCK_MONOTONIC, sev, id) as number, "timer_create");
  const handle = id[0]!;
  const spec = new BigInt64Array(ITIMERSPEC_SIZE / 8);
  const sec = BigInt(Math.floor(periodMs / 1000));
  const nsec = BigInt(Math.round((periodMs % 1000) * 1e6));
  spec[0] = sec; // it_interval
  spec[1] = nsec;
  spec[2] = sec; // it_value: the first signal one period from now
  spec[3] = nsec;
  try {
    check(l.timer_settime(handle, 0, spec, null) as number, "timer_settime");
  } catch (e) {
    l.timer_delete(handle);
    throw e;
  }
  let live = true;
  return {
    stop() {
      if (!live) return;
      live = false;
      check(l.timer_delete(handle) as number, "timer_delete");
    },
  };
}

/** tgkill(2): send `sig` to one thread of process `pid`. */
export function tgkill(pid: number, tid: number, sig: number): void {
  check(bind().tgkill(pid, tid, sig) as number, "tgkill");
}

/**
 * Interrupts, with `sig`, whichever threads of this process may be inside ioctl(`fd`, `request`)
 * right now, when the caller cannot know which thread that is (a call on libuv's pool: ioctlAsync):
 * each thread other than the main one that /proc/self/task/<tid>/syscall shows blocked in exactly
 * that call (syscall 16, ioctl, with those first two arguments: proc(5)), or running — a thread
 * running a guest shows "running", never its syscall. A running thread that is not the one meant
 * gets a signal its handler ignores (SA_RESTART; every blocking wait of ours takes EINTR as a
 * shorter wait). Returns how many threads were signalled. Needs installSignalHandler(sig) first.
 */
export function signalThreadsIn(fd: number, request: number, sig: number): number {
  checkFd(fd, "signalThreadsIn");
  const pid = process.pid;
  const blocked = `${SYS_ioctl} 0x${fd.toString(16)} 0x${(request >>> 0).toString(16)} `;
  let tids: string[];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return 0;
  }
  let signalled = 0;
  for (const t of tids) {
    const tid = Number(t);
    if (tid === pid) continue;
    let line: string;
    try {
      line = readFileSync(`/proc/self/task/${t}/syscall`, "latin1");
    } catch {
      continue; // gone meanwhile
    }
    if (!line.startsWith("running") && !line.startsWith(blocked)) continue;
    try {
      tgkill(pid, tid, sig);
      signalled++;
    } catch {
      // ESRCH: it left meanwhile.
    }
  }
  return signalled;
}

/**
 * Sleeps up to `ms` in poll(2) with no descriptors. A handled signal ends it with EINTR (poll is
 * never restarted, whatever SA_RESTART says: signal(7)). Test doubles of a vCPU block here the
 * way KVM_RUN blocks.
 */
export function sleepInterruptible(ms: number): void {
  check(bind().poll(null, 0, ms) as number, "poll");
}

/**
 * Waits up to `ms` for `fd` to take a write without blocking (poll(2), POLLOUT). True when it
 * will (or the descriptor is in error, so the write reports it); false on timeout or when a
 * handled signal ended the wait (EINTR) — the caller looks at its stop flags and decides.
 */
export function waitWritable(fd: number, ms: number): boolean {
  checkFd(fd, "waitWritable");
  const pfd = new Uint8Array(POLLFD_SIZE);
  const v = new DataView(pfd.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(POLLFD_EVENTS_OFFSET, POLLOUT, true);
  const l = bind();
  const n = l.poll(pfd, 1, ms) as number;
  if (n < 0) {
    const errno = l.koffi.errno();
    if (errnoName(errno) === "EINTR") return false;
    throw new SysError("poll", errno);
  }
  return n > 0;
}

/** One descriptor to wait on, and for what. */
export interface PollInterest {
  fd: number;
  /** Wait for data to read (POLLIN). */
  read?: boolean;
  /** Wait until a write will not block (POLLOUT). */
  write?: boolean;
}

/** What poll(2) reported for one descriptor: the requested events that hold, or a hang-up or an error (always reported). */
export interface PollReady {
  fd: number;
  readable: boolean;
  writable: boolean;
  /** POLLHUP, POLLERR or POLLNVAL: the next read or write reports what happened. */
  hangup: boolean;
}

/**
 * Waits up to `ms` (-1: no limit) until one of `interests` is ready and returns those that are
 * (poll(2)). Empty on timeout. A handled signal ends the wait with SysError EINTR (poll is never
 * restarted: signal(7)).
 */
export function pollReady(interests: readonly PollInterest[], ms: number): PollReady[] {
  const pfd = encodePollFds(interests);
  const n = check(bind().poll(pfd, interests.length, ms) as number, "poll");
  return n === 0 ? [] : decodePollFds(interests, pfd);
}

/**
 * pollReady on a thread of libuv's pool (koffi's async call): this thread's event loop runs while
 * it waits, and that pool thread is held until a descriptor is ready or `ms` passes. Rejects as
 * pollReady throws (EINTR included).
 */
export async function pollReadyAsync(interests: readonly PollInterest[], ms: number): Promise<PollReady[]> {
  const pfd = encodePollFds(interests);
  const n = await callAsync(bind().poll, [pfd, interests.length, ms], "poll");
  return n === 0 ? [] : decodePollFds(interests, pfd);
}

function encodePollFds(interests: readonly PollInterest[]): Uint8Array {
  const pfd = new Uint8Array(POLLFD_SIZE * interests.length);
  const v = new DataView(pfd.buffer);
  interests.forEach((x, i) => {
    checkFd(x.fd, "pollReady");
    v.setInt32(i * POLLFD_SIZE, x.fd, true);
    v.setInt16(i * POLLFD_SIZE + POLLFD_EVENTS_OFFSET, (x.read ? POLLIN : 0) | (x.write ? POLLOUT : 0), true);
  });
  return pfd;
}

function decodePollFds(interests: readonly PollInterest[], pfd: Uint8Array): PollReady[] {
  const v = new DataView(pfd.buffer, pfd.byteOffset, pfd.byteLength);
  const out: PollReady[] = [];
  interests.forEach((x, i) => {
    const r = v.getInt16(i * POLLFD_SIZE + POLLFD_REVENTS_OFFSET, true);
    if (r !== 0) out.push({ fd: x.fd, readable: (r & POLLIN) !== 0, writable: (r & POLLOUT) !== 0, hangup: (r & (POLLHUP | POLLERR | POLLNVAL)) !== 0 });
  });
  return out;
}

const installedHandlers = new Set<NodeJS.Signals>();

/**
 * Installs a process-wide handler for `signal` (through libuv, from the main thread) so that a
 * tgkill to a vCPU thread interrupts its KVM_RUN with EINTR instead of killing the process.
 * Idempotent. Workers cannot install signal handlers in Node; call this on the main thread first.
 */
export function installSignalHandler(signal: NodeJS.Signals = "SIGUSR2", onSignal?: () => void): void {
  if (!isMainThread) throw new Error(`installSignalHandler(${signal}) must run on the main thread`);
  if (onSignal !== undefined) {
    process.on(signal, onSignal);
  } else if (!installedHandlers.has(signal)) {
    process.on(signal, () => {});
  }
  installedHandlers.add(signal);
}
