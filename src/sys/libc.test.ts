// The libc wrappers, exercised on what any Linux host has (no KVM needed): memfd + mmap + view
// aliasing, eventfd, errno mapping, signals to a thread, and koffi inside worker threads.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import * as sys from "./index.js";
import { SysError, errnoName } from "./errors.js";

const PAGE = 4096;

test("SysError message is `${call} failed: ${code}`", () => {
  const e = new SysError("KVM_CREATE_VCPU", 17);
  assert.equal(e.message, "KVM_CREATE_VCPU failed: EEXIST");
  assert.equal(e.call, "KVM_CREATE_VCPU");
  assert.equal(e.errno, 17);
  assert.equal(e.code, "EEXIST");
  assert.equal(e.name, "SysError");
  assert.ok(e instanceof Error);
});

test("errno names come from os.constants.errno, preferring the canonical alias", () => {
  assert.equal(errnoName(2), "ENOENT");
  assert.equal(errnoName(4), "EINTR");
  assert.equal(errnoName(7), "E2BIG");
  assert.equal(errnoName(11), "EAGAIN"); // not EWOULDBLOCK
  assert.equal(errnoName(25), "ENOTTY");
  assert.equal(errnoName(95), "EOPNOTSUPP"); // not ENOTSUP
  assert.equal(errnoName(9999), "E9999");
});

test("memfd + ftruncate + mmap + view alias the same pages as the fd", () => {
  const fd = sys.memfdCreate("typervisor-test", sys.MFD_CLOEXEC);
  try {
    sys.ftruncate(fd, 2 * PAGE);
    const addr = sys.mmap(2 * PAGE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED | sys.MAP_NORESERVE, fd, 0);
    assert.equal(typeof addr, "bigint");
    assert.notEqual(addr, sys.MAP_FAILED);
    assert.equal(addr % BigInt(PAGE), 0n);
    try {
      // Safe: the mapping lives until the munmap below, and the view is dropped with this scope.
      const mem = new Uint8Array(sys.view(addr, 2 * PAGE));
      assert.equal(mem.byteLength, 2 * PAGE);
      assert.ok(mem.every((b) => b === 0), "a fresh memfd reads as zeros");

      // Write through the JS view, read back through the fd.
      mem.set([0xde, 0xad, 0xbe, 0xef], PAGE + 100);
      const back = new Uint8Array(4);
      assert.equal(sys.pread(fd, back, PAGE + 100), 4);
      assert.deepEqual([...back], [0xde, 0xad, 0xbe, 0xef]);

      // And the other way: pwrite to the fd shows up in the view.
      assert.equal(sys.pwrite(fd, Uint8Array.of(1, 2, 3), 7), 3);
      assert.deepEqual([...mem.subarray(7, 10)], [1, 2, 3]);

      // read() advances the file offset from 0 and honours a subarray's byteOffset.
      const whole = new Uint8Array(16);
      assert.equal(sys.read(fd, whole.subarray(4, 12)), 8);
      assert.deepEqual([...whole.subarray(4, 12)], [0, 0, 0, 0, 0, 0, 0, 1]);
      assert.deepEqual([...whole.subarray(0, 4)], [0, 0, 0, 0]);

      // A second mapping of the same fd (what a card process does) sees the same bytes.
      const addr2 = sys.mmap(PAGE, sys.PROT_READ, sys.MAP_SHARED, fd, PAGE);
      try {
        const mem2 = new Uint8Array(sys.view(addr2, PAGE));
        assert.deepEqual([...mem2.subarray(100, 104)], [0xde, 0xad, 0xbe, 0xef]);
      } finally {
        sys.munmap(addr2, PAGE);
      }
    } finally {
      sys.munmap(addr, 2 * PAGE);
    }
  } finally {
    sys.close(fd);
  }
});

test("anonymous private mapping, and mmap failure throws SysError on MAP_FAILED", () => {
  const addr = sys.mmap(PAGE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, -1, 0);
  const mem = new Uint8Array(sys.view(addr, PAGE));
  mem[PAGE - 1] = 7;
  assert.equal(mem[PAGE - 1], 7);
  sys.munmap(addr, PAGE);
  assert.throws(
    () => sys.mmap(PAGE, sys.PROT_READ, sys.MAP_SHARED, 987654, 0),
    (e: unknown) => e instanceof SysError && e.call === "mmap" && e.code === "EBADF" && e.message === "mmap failed: EBADF",
  );
  assert.throws(() => sys.munmap(0x1001n, PAGE), (e: unknown) => e instanceof SysError && e.code === "EINVAL");
  assert.throws(() => sys.view(0n, PAGE), RangeError);
  assert.throws(() => sys.mmap(0, sys.PROT_READ, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, -1, 0), RangeError);
});

test("open of a missing path: SysError ENOENT naming the path", () => {
  assert.throws(
    () => sys.open("/nope", sys.O_RDONLY),
    (e: unknown) =>
      e instanceof SysError && e.code === "ENOENT" && e.errno === 2 && e.call === "open(/nope)" &&
      e.message === "open(/nope) failed: ENOENT",
  );
});

test("open/write/fsync/fdatasync/pread/close on a real file; close of a closed fd is EBADF", () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-sys-"));
  try {
    const path = join(dir, "f");
    const fd = sys.open(path, sys.O_RDWR | sys.O_CREAT | sys.O_TRUNC | sys.O_CLOEXEC, 0o600);
    assert.equal(sys.write(fd, new TextEncoder().encode("hello, guest")), 12);
    sys.fsync(fd);
    sys.fdatasync(fd);
    const buf = new Uint8Array(5);
    assert.equal(sys.pread(fd, buf, 7n), 5);
    assert.equal(new TextDecoder().decode(buf), "guest");
    sys.close(fd);
    assert.throws(() => sys.close(fd), (e: unknown) => e instanceof SysError && e.message === "close failed: EBADF");
    assert.throws(() => sys.read(-1, buf), RangeError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("ioctl on a non-KVM fd is ENOTTY, and the error names the KVM request", () => {
  const fd = sys.memfdCreate("not-kvm", sys.MFD_CLOEXEC);
  try {
    assert.throws(
      () => sys.ioctlValue(fd, sys.KVM_GET_API_VERSION, 0),
      (e: unknown) => e instanceof SysError && e.code === "ENOTTY" && e.message === "KVM_GET_API_VERSION failed: ENOTTY",
    );
    // A request with the read bit set (> 2^31) goes through unsigned and is named too.
    assert.throws(
      () => sys.ioctl(fd, sys.KVM_GET_REGS, new Uint8Array(sys.kvm_regs.size)),
      (e: unknown) => e instanceof SysError && e.message === "KVM_GET_REGS failed: ENOTTY",
    );
    assert.throws(
      () => sys.ioctl(fd, sys.KVM_SET_USER_MEMORY_REGION, new Uint8Array(32)),
      (e: unknown) => e instanceof SysError && e.call === "KVM_SET_USER_MEMORY_REGION",
    );
    // An ioctl we have no name for reads as its number.
    assert.throws(() => sys.ioctl(fd, 0x5401, null), (e: unknown) => e instanceof SysError && e.call === "ioctl(0x5401)");
  } finally {
    sys.close(fd);
  }
});

test("ioctlAsync runs on libuv's pool while this thread goes on; its errno comes back with it", async () => {
  const fd = sys.memfdCreate("not-kvm", sys.MFD_CLOEXEC);
  try {
    // Another call on this thread meanwhile (errno EBADF here) must not be what the async call reports.
    const pending = sys.ioctlAsync(fd, sys.KVM_RUN, null);
    assert.throws(() => sys.close(-1), RangeError);
    assert.throws(() => sys.ioctl(1 << 20, 0x5401, null), (e: unknown) => e instanceof SysError && e.code === "EBADF");
    await assert.rejects(pending, (e: unknown) => e instanceof SysError && e.message === "KVM_RUN failed: ENOTTY");
  } finally {
    sys.close(fd);
  }
  // A call that succeeds resolves with its return value and fills its argument: FIONREAD
  // (asm-generic/ioctls.h 0x541b) on a regular file is the bytes left to read from its offset.
  const mfd = sys.memfdCreate("fionread", sys.MFD_CLOEXEC);
  try {
    sys.ftruncate(mfd, 4096);
    const left = new Uint8Array(4);
    assert.equal(await sys.ioctlAsync(mfd, 0x541b, left), 0);
    assert.equal(new DataView(left.buffer).getInt32(0, true), 4096);
  } finally {
    sys.close(mfd);
  }
});

test("signalThreadsIn refuses what is not a descriptor", () => {
  // What it signals is checked by booting pooled vCPUs (vmm/vm.test.ts: pause and stop of guests
  // spinning on pool threads); no other call blocks a thread in ioctl here.
  assert.throws(() => sys.signalThreadsIn(-1, sys.KVM_RUN, sys.SIGUSR2), RangeError);
});

test("eventfd: write adds to the counter, read returns and clears it; empty nonblocking read is EAGAIN", () => {
  const fd = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  try {
    const one = new Uint8Array(8);
    new DataView(one.buffer).setBigUint64(0, 1n, true);
    assert.equal(sys.write(fd, one), 8);
    assert.equal(sys.write(fd, one), 8);
    const out = new Uint8Array(8);
    assert.equal(sys.read(fd, out), 8);
    assert.equal(new DataView(out.buffer).getBigUint64(0, true), 2n);
    assert.throws(() => sys.read(fd, out), (e: unknown) => e instanceof SysError && e.code === "EAGAIN" && e.call === "read");
    // A short buffer is EINVAL for an eventfd.
    assert.throws(() => sys.read(fd, new Uint8Array(4)), (e: unknown) => e instanceof SysError && e.code === "EINVAL");
  } finally {
    sys.close(fd);
  }
});

test("pipe2: bytes written at one end are read at the other; O_CLOEXEC is on both ends, O_NONBLOCK on neither unless asked", () => {
  const [r, w] = sys.pipe2(sys.O_CLOEXEC);
  try {
    assert.ok(r >= 0 && w >= 0 && r !== w);
    assert.equal(sys.write(w, new Uint8Array([1, 2, 3])), 3);
    const buf = new Uint8Array(8);
    assert.equal(sys.read(r, buf), 3);
    assert.deepEqual([...buf.subarray(0, 3)], [1, 2, 3]);
    for (const fd of [r, w]) {
      const flags = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").match(/^flags:\s+([0-7]+)$/m)![1]!;
      assert.ok((Number.parseInt(flags, 8) & sys.O_CLOEXEC) !== 0, `fd ${fd} close-on-exec`);
      assert.equal(Number.parseInt(flags, 8) & sys.O_NONBLOCK, 0, `fd ${fd} blocking`);
    }
  } finally {
    sys.close(r);
    sys.close(w);
  }
  const [r2, w2] = sys.pipe2(sys.O_CLOEXEC | sys.O_NONBLOCK);
  try {
    assert.throws(() => sys.read(r2, new Uint8Array(1)), (e: unknown) => e instanceof SysError && e.code === "EAGAIN");
  } finally {
    sys.close(r2);
    sys.close(w2);
  }
  assert.throws(() => sys.pipe2(-1), (e: unknown) => e instanceof SysError && e.code === "EINVAL");
});

test("getpid/gettid on the main thread: the main thread's tid is the pid", () => {
  assert.equal(sys.getpid(), process.pid);
  assert.equal(sys.gettid(), process.pid);
});

test("tgkill to this thread with a SIGUSR2 handler installed delivers the signal (and does not kill us)", async () => {
  let resolve!: () => void;
  const delivered = new Promise<void>((r) => (resolve = r));
  const handler = (): void => resolve();
  sys.installSignalHandler("SIGUSR2", handler);
  try {
    sys.tgkill(sys.getpid(), sys.gettid(), sys.SIGUSR2);
    await withTimeout(delivered, 5000, "SIGUSR2 was not delivered");
  } finally {
    process.off("SIGUSR2", handler);
  }
  assert.throws(() => sys.tgkill(sys.getpid(), 0x3fffffff, sys.SIGUSR2), (e: unknown) => e instanceof SysError && e.code === "ESRCH");
});

test("threadTimer: a periodic signal to this thread ends a blocking wait here each period, until stopped", async () => {
  let signals = 0;
  const handler = (): void => {
    signals++;
  };
  sys.installSignalHandler("SIGUSR2", handler);
  const timer = sys.threadTimer(sys.SIGUSR2, 5);
  try {
    // A 10 s sleep in poll(2) on this thread: the 5 ms timer ends it (EINTR), again and again.
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      assert.throws(() => sys.sleepInterruptible(10_000), (e: unknown) => e instanceof SysError && e.code === "EINTR");
      assert.ok(performance.now() - t0 < 1000, `woken after ${(performance.now() - t0).toFixed(1)} ms`);
    }
    await new Promise((r) => setTimeout(r, 30));
    assert.ok(signals >= 3, `${signals} signals handled`);
  } finally {
    timer.stop();
    timer.stop(); // idempotent
  }
  // Stopped: a wait now runs its course.
  await new Promise((r) => setTimeout(r, 20));
  const t0 = performance.now();
  sys.sleepInterruptible(50);
  assert.ok(performance.now() - t0 >= 45, "no signal after stop()");
  process.off("SIGUSR2", handler);
  assert.throws(() => sys.threadTimer(sys.SIGUSR2, 0), RangeError);
});

test("worker threads load their own binding: getpid/gettid inside a Worker, and a kick back to the main thread", async () => {
  const libcUrl = new URL("./index.js", import.meta.url).href;
  let resolve!: () => void;
  const kicked = new Promise<void>((r) => (resolve = r));
  const handler = (): void => resolve();
  sys.installSignalHandler("SIGUSR2", handler);
  try {
    const code = `
      const { parentPort, workerData } = require("node:worker_threads");
      import(workerData.libcUrl).then((sys) => {
        const pid = sys.getpid(), tid = sys.gettid();
        sys.tgkill(pid, workerData.mainTid, sys.SIGUSR2);
        parentPort.postMessage({ pid, tid });
      }, (e) => parentPort.postMessage({ error: String(e && e.stack || e) }));
    `;
    const worker = new Worker(code, { eval: true, workerData: { libcUrl, mainTid: sys.gettid() } });
    const msg = await withTimeout(
      new Promise<{ pid?: number; tid?: number; error?: string }>((res, rej) => {
        worker.once("message", res);
        worker.once("error", rej);
      }),
      10000,
      "worker did not answer",
    );
    await worker.terminate();
    assert.equal(msg.error, undefined, msg.error);
    assert.equal(msg.pid, process.pid);
    assert.ok(typeof msg.tid === "number" && msg.tid > 0);
    assert.notEqual(msg.tid, process.pid, "a worker runs on its own kernel thread");
    await withTimeout(kicked, 5000, "the worker's tgkill did not reach the main thread");
  } finally {
    process.off("SIGUSR2", handler);
  }
});

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

test("threadCpuMicros: this thread's CPU time grows with work done here, not with time asleep", () => {
  // Work until this thread has 30 ms of CPU (a loaded host may take longer in wall time, never
  // less), within 10 s: the counter must move with work and never outrun the wall clock.
  const a = sys.threadCpuMicros();
  const t0 = process.hrtime.bigint();
  let x = 0;
  let b = a;
  while (b - a < 30_000 && process.hrtime.bigint() - t0 < 10_000_000_000n) {
    for (let i = 0; i < 10_000; i++) x += Math.sqrt(x + 1);
    b = sys.threadCpuMicros();
  }
  const wallMicros = Number((process.hrtime.bigint() - t0) / 1000n);
  assert.ok(x > 0);
  assert.ok(b - a >= 30_000, `10 s of busy work cost only ${b - a} µs of this thread's CPU`);
  assert.ok(b - a <= wallMicros + 5_000, `${b - a} µs of CPU in ${wallMicros} µs of wall time: not this thread's alone`);
  sys.sleepInterruptible(100); // 100 ms asleep
  const c = sys.threadCpuMicros();
  assert.ok(c - b < 20_000, `sleeping 100 ms cost ${c - b} µs of CPU`);
});

test("pollReady for reading: only the descriptors with something to read, none on timeout; a bad fd is refused", () => {
  const readable = (fds: number[], ms: number): number[] => sys.pollReady(fds.map((fd) => ({ fd, read: true })), ms).map((r) => r.fd);
  const a = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  const b = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  const c = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  try {
    const t0 = performance.now();
    assert.deepEqual(readable([a, b, c], 30), []);
    assert.ok(performance.now() - t0 >= 25, "waited for the timeout");
    sys.write(b, new Uint8Array(new BigUint64Array([1n]).buffer));
    sys.write(c, new Uint8Array(new BigUint64Array([5n]).buffer));
    assert.deepEqual(readable([a, b, c], -1), [b, c]);
    sys.read(b, new Uint8Array(8));
    assert.deepEqual(readable([a, b, c], 0), [c]);
    assert.throws(() => readable([a, -1], 0), /not a file descriptor/);
  } finally {
    for (const fd of [a, b, c]) sys.close(fd);
  }
});

test("pollReady: write interest reports a writable descriptor; a closed peer shows as a hang-up", () => {
  const a = sys.eventfd(0, sys.EFD_CLOEXEC | sys.EFD_NONBLOCK);
  try {
    assert.deepEqual(sys.pollReady([{ fd: a, read: true, write: true }], 0), [{ fd: a, readable: false, writable: true, hangup: false }]);
    assert.deepEqual(sys.pollReady([{ fd: a, read: true }], 0), []);
  } finally {
    sys.close(a);
  }
});
