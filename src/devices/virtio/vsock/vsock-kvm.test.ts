// Integration test: vsock between a stock Debian guest and host programs, in Firecracker's hybrid
// model. The starter image boots through the API socket (Firecracker's getting-started sequence:
// boot-source, machine-config, the root drive, a network interface, vsock, InstanceStart); its initrd loads vsock and
// vmw_vsock_virtio_transport; `typervisor.test=run:...` runs guest-vsock-test.c (a static program
// `npm run build` makes, written into the root disk here with debugfs), which
//  - connects to the host (CID 2) on HOST_PORT: this test's listener on `${uds}_${HOST_PORT}`
//    answers "pong" to its "ping";
//  - listens on GUEST_PORT, where this test connects through uds (CONNECT/OK, the SDK's
//    connectVsock): one echo, SHORT_CONNECTIONS short echoes, one STREAM_MIB MiB stream whose
//    FNV-1a 64 hash the guest sends back, then a quit.
// The VM then ends with the guest's reboot.
//
// It needs hardware-KVM semantics (a stock kernel); elsewhere it runs in the box. It skips only
// when something a user must install is missing, saying which. Nothing runs at import time.

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { kvmTests } from "../../../testing/kvm.js";
import { IMAGE_CMDLINE } from "../../../image/build.js";
import { findTool } from "../../../image/rootfs.js";
import { runTypervisor, starterImage } from "../../../image/testing.js";
import { connectVsock } from "../../../sdk/vsock.js";
import { apiRequest } from "../../../api/client.js";
import { GUEST_IP, GUEST_MAC, HOST_IP, netNames } from "../net/testing.js";

const kvmTest = kvmTests(import.meta.url);

const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
const GUEST_PROGRAM = join(ROOT, "guest/build/vsock-test");
const GUEST_PORT = 5000;
const HOST_PORT = 6000;
const SHORT_CONNECTIONS = 1000;
const STREAM_MIB = 64;
const TIMEOUT_MS = 540_000;

/** FNV-1a 64 over `chunks` (offset basis 0xcbf29ce484222325, prime 2^40 + 0x1b3), as hi:lo 32-bit halves. */
function fnv1a64(chunks: Iterable<Uint8Array>): bigint {
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (const c of chunks) {
    for (let i = 0; i < c.length; i++) {
      lo = (lo ^ c[i]!) >>> 0;
      // h * (2^40 + 0x1b3) mod 2^64 = h * 0x1b3 + (h << 40).
      const loMul = lo * 0x1b3; // < 2^41: exact
      const carry = Math.floor(loMul / 0x100000000);
      hi = (Math.imul(hi, 0x1b3) + carry + ((lo << 8) >>> 0)) >>> 0;
      lo = loMul >>> 0;
    }
  }
  return (BigInt(hi) << 32n) | BigInt(lo);
}

/** `n` bytes of a seeded xorshift stream, in 1 MiB chunks (the same bytes every run). */
function* stream(n: number): Generator<Uint8Array> {
  let x = 0x2545f491;
  for (let left = n; left > 0; ) {
    const b = new Uint8Array(Math.min(1 << 20, left));
    const v = new DataView(b.buffer);
    for (let i = 0; i < b.length; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      v.setUint32(i, x >>> 0, true);
    }
    left -= b.length;
    yield b;
  }
}

/**
 * Sends `first` then `body` chunks and collects `expect` bytes the guest sends back (or whatever
 * came before the guest closed), then closes. The host never half-closes: like Firecracker's, the
 * card ends a connection whose host side reached end of stream.
 */
async function exchange(uds: string, first: Uint8Array, body: Iterable<Uint8Array>, expect: number): Promise<Buffer> {
  const { socket } = await connectVsock(uds, GUEST_PORT, { timeoutMs: 60_000 });
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((res, rej) => {
    socket.on("data", (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= expect) res();
    });
    socket.on("close", () => res());
    socket.on("error", rej);
  });
  const write = (b: Uint8Array): Promise<void> => new Promise((res) => (socket.write(b) ? res() : socket.once("drain", () => res())));
  await write(first);
  for (const b of body) await write(b);
  await done;
  socket.destroy();
  return Buffer.concat(got);
}

kvmTest(
  `vsock, through the API (getting-started with a network interface and vsock added): the Debian guest reaches a host listener, and host programs reach the guest's: an echo, ${SHORT_CONNECTIONS} short connections, a ${STREAM_MIB} MiB stream with its bytes checked`,
  { need: "hardware", timeout: TIMEOUT_MS + 120_000 },
  async (t: TestContext) => {
    if (!existsSync(GUEST_PROGRAM)) return t.skip(`${GUEST_PROGRAM} is missing: npm run build makes it (gcc and Debian's libc6-dev for a static link)`);
    if (!existsSync("/dev/net/tun")) return t.skip("no /dev/net/tun: load the tun module (modprobe tun)");
    const image = starterImage(t, "tv-vsock-");
    if (image === undefined) return;
    const { dir, out } = image;
    const rootfs = join(out, "rootfs.ext4");
    const tool: string = findTool("debugfs")!;
    const debug = (req: string): string => {
      const r = spawnSync(tool, ["-w", "-R", req, rootfs], { encoding: "utf8" });
      assert.equal(r.status, 0, `debugfs ${req}: ${r.stderr}`);
      return r.stdout;
    };
    debug(`write ${GUEST_PROGRAM} /vsock-test`);
    debug("sif /vsock-test mode 0100755");
    assert.match(debug("stat /vsock-test"), /Mode:\s+0755/, "the guest program is on the root disk, executable");

    const uds = join(dir, "v.sock");
    let guestCalled = 0;
    const hostListener = createServer((s: Socket) => {
      guestCalled++;
      s.once("data", (d: Buffer) => s.end(d.toString() === "ping\n" ? "pong\n" : "what?\n"));
    });
    await new Promise<void>((r) => hostListener.listen(`${uds}_${HOST_PORT}`, r));
    t.after(() => hostListener.close());

    // Firecracker's getting-started sequence over the API socket, with the network interface (a TAP
    // the card creates; eth0 comes up from ip=) and a vsock device added.
    const { tap } = netNames();
    const cmdline = `${IMAGE_CMDLINE} ip=${GUEST_IP}::${HOST_IP}:255.255.255.0::eth0:off typervisor.test=run:/vsock-test:${GUEST_PORT}:${HOST_PORT}`;
    const api = join(dir, "api.sock");
    const vm = runTypervisor(t, ["--api-sock", api], TIMEOUT_MS);
    const tail = vm.tail;
    for (let i = 0; i < 300 && !existsSync(api) && vm.running(); i++) await new Promise((r) => setTimeout(r, 100));
    for (const [method, path, body] of [
      ["PUT", "/boot-source", { kernel_image_path: join(out, "vmlinuz"), initrd_path: join(out, "initrd.img"), boot_args: cmdline }],
      ["PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 256 }],
      ["PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: rootfs, is_root_device: true, is_read_only: false }],
      ["PUT", "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: tap, guest_mac: GUEST_MAC }],
      ["PUT", "/vsock", { guest_cid: 3, uds_path: uds }],
      ["PUT", "/actions", { action_type: "InstanceStart" }],
    ] as const) {
      // InstanceStart reads and measures the kernel and starts every card: minutes under nested TCG.
      const r = await apiRequest(api, method, path, body, { timeoutMs: 240_000 });
      assert.equal(r.status, 204, `${method} ${path}: ${r.text}${tail()}`);
    }

    // The guest listens before it calls the host: once it has called, its listener is up.
    const end = Date.now() + TIMEOUT_MS;
    while (guestCalled === 0 && vm.running() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    assert.equal(guestCalled, 1, `the guest connected to the host's listener on ${uds}_${HOST_PORT}${tail()}`);

    const hello = Buffer.from("hello vsock, from the host\n");
    assert.deepEqual(await exchange(uds, Buffer.from("E"), [hello], hello.length), hello, `echo through the guest${tail()}`);
    for (let i = 0; i < SHORT_CONNECTIONS; i++) {
      const bytes = randomBytes(8);
      const back = await exchange(uds, Buffer.from("E"), [bytes], bytes.length);
      assert.deepEqual(back, bytes, `short connection ${i}${tail()}`);
    }
    const total = STREAM_MIB * 1048576;
    const header = Buffer.alloc(9);
    header.write("H", 0);
    header.writeBigUInt64LE(BigInt(total), 1);
    const answer = await exchange(uds, header, stream(total), 16);
    assert.equal(answer.length, 16, `the guest answered with a count and a hash${tail()}`);
    assert.equal(answer.readBigUInt64LE(0), BigInt(total), `the guest received every byte${tail()}`);
    assert.equal(answer.readBigUInt64LE(8), fnv1a64(stream(total)), `the bytes the guest received are the bytes the host sent${tail()}`);
    assert.deepEqual(await exchange(uds, Buffer.from("Q"), [], 1), Buffer.alloc(0), "the guest closes a quit connection without an answer");

    const code = await vm.status;
    const console = vm.console();
    assert.ok(console.includes(`typervisor: eth0 up: mac ${GUEST_MAC} address ${GUEST_IP}`), `the guest's eth0, from PUT /network-interfaces, came up with its MAC and ip= address${tail()}`);
    assert.match(console, /vsock-test: guest->host ok/, `guest → host${tail()}`);
    assert.match(console, new RegExp(`vsock-test: served ${SHORT_CONNECTIONS + 3} connections`), `every connection reached the guest${tail()}`);
    assert.match(console, /typervisor\.test: run status=0/, `the guest program succeeded${tail()}`);
    assert.equal(code, 0, `the VM ended with the guest's reboot${tail()}`);
    assert.ok(!existsSync(uds), `the card removed its socket at exit${tail()}`);
  },
);
