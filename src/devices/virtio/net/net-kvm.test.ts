// Integration test: a stock Debian guest on the network. The starter image (`typervisor image
// build`) boots from a Firecracker config file (boot-source, a root drive, network-interfaces and
// vsock); its initrd loads virtio_net, its init brings eth0 up from
// `ip=`, and `typervisor.test=net:...` pings the host, reads NET_MIB MiB from a host TCP server and
// sends NET_MIB MiB of random bytes back, printing the SHA-256 of each. The host end is a network
// namespace this test makes (192.0.2.0/24, TEST-NET-1, only inside it): the TAP the card opened
// moves into it, and a Node.js server there sends seeded bytes and hashes what it receives. Both
// hashes must match, and the VM ends with the guest's reboot.
//
// It needs hardware-KVM semantics (a stock kernel); elsewhere it runs in the box, which carries
// iproute2's ip, mke2fs and debugfs for it. It skips only when something a user must install is
// missing, saying which. Nothing runs at import time.

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { kvmTests } from "../../../testing/kvm.js";
import { IMAGE_CMDLINE } from "../../../image/build.js";
import { findTool } from "../../../image/rootfs.js";
import { runTypervisor, starterImage } from "../../../image/testing.js";

const kvmTest = kvmTests(import.meta.url);
const HOST_IP = "192.0.2.1";
const GUEST_IP = "192.0.2.2";
const GUEST_MAC = "06:00:c0:00:02:02";
const PORT = 5000;
/** MiB each way (the figure). */
const NET_MIB = 64;
/** Boot plus 128 MiB through nested TCG in the box; seconds on hardware KVM. */
const TIMEOUT_MS = 480_000;

/** The host end: sends NET_MIB MiB of seeded bytes on PORT, receives NET_MIB MiB on PORT + 1; prints both SHA-256 as JSON lines. */
const SERVER = `
const net = require("net"), crypto = require("crypto");
const total = ${NET_MIB} * 1048576;
const send = net.createServer((s) => {
  const h = crypto.createHash("sha256");
  let left = total, x = 0x9e3779b9;
  const chunk = () => {
    while (left > 0) {
      const b = Buffer.alloc(Math.min(65536, left));
      for (let i = 0; i < b.length; i += 4) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; b.writeUInt32LE(x >>> 0, i); }
      h.update(b); left -= b.length;
      if (!s.write(b)) return s.once("drain", chunk);
    }
    s.end(); console.log(JSON.stringify({ sent: total, sha256: h.digest("hex") }));
  };
  chunk();
});
const recv = net.createServer((s) => {
  const h = crypto.createHash("sha256"); let n = 0;
  s.on("data", (d) => { h.update(d); n += d.length; if (n >= total) s.end(); });
  s.on("end", () => console.log(JSON.stringify({ received: n, sha256: h.digest("hex") })));
  s.on("close", () => process.exit(0));
});
send.listen(${PORT}, "${HOST_IP}", () => recv.listen(${PORT + 1}, "${HOST_IP}", () => console.log(JSON.stringify({ listening: true }))));
`;

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

kvmTest(
  `virtio-net, from a Firecracker config file with a root drive, a network interface and vsock: the Debian guest configures eth0 on a TAP, pings the host and moves ${NET_MIB} MiB over TCP each way with the bytes checked`,
  { need: "hardware", timeout: TIMEOUT_MS + 120_000 },
  async (t: TestContext) => {
    const ip = findTool("ip");
    if (ip === undefined) return t.skip("iproute2's ip is missing: install Debian's iproute2");
    if (!existsSync("/dev/net/tun")) return t.skip("no /dev/net/tun: load the tun module (modprobe tun)");
    const image = starterImage(t, "tv-net-kvm-");
    if (image === undefined) return;
    const { dir, out } = image;
    const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;
    const tap = `tvk${tag}`;
    const ns = `typervisor-net-${tag}`;
    execFileSync(ip, ["netns", "add", ns]);
    const children: ChildProcess[] = [];
    t.after(() => {
      for (const c of children) c.kill("SIGKILL");
      try {
        execFileSync(ip, ["netns", "del", ns], { stdio: "ignore" });
      } catch {
        // gone already
      }
    });
    const serverJs = join(dir, "server.cjs");
    writeFileSync(serverJs, SERVER);

    // The VM, as a Firecracker user configures one: a config file with the boot source, the root
    // drive, the network interface and a vsock device (which this test does not use beyond its boot).
    const cmdline = `${IMAGE_CMDLINE} ip=${GUEST_IP}::${HOST_IP}:255.255.255.0::eth0:off typervisor.test=net:${HOST_IP}:${PORT}:${NET_MIB}`;
    const config = join(dir, "vm.json");
    writeFileSync(config, JSON.stringify({
      "boot-source": { kernel_image_path: join(out, "vmlinuz"), initrd_path: join(out, "initrd.img"), boot_args: cmdline },
      "machine-config": { vcpu_count: 1, mem_size_mib: 512 },
      drives: [{ drive_id: "rootfs", path_on_host: join(out, "rootfs.ext4"), is_root_device: true, is_read_only: false }],
      "network-interfaces": [{ iface_id: "eth0", host_dev_name: tap, guest_mac: GUEST_MAC }],
      vsock: { guest_cid: 3, uds_path: join(dir, "v.sock") },
    }));
    const vm = runTypervisor(t, ["--config-file", config, "--no-api"], TIMEOUT_MS);
    const tail = vm.tail;

    // The card creates the TAP when the VM starts; then it moves into the namespace (the card's
    // descriptor stays attached) and the host end comes up there.
    await until(() => existsSync(`/sys/class/net/${tap}`) || !vm.running(), 60_000, `the TAP ${tap}`).catch((e) => assert.fail(`${(e as Error).message}${tail()}`));
    assert.ok(vm.running(), `the VM is running${tail()}`);
    execFileSync(ip, ["link", "set", tap, "netns", ns]);
    execFileSync(ip, ["-n", ns, "addr", "add", `${HOST_IP}/24`, "dev", tap]);
    execFileSync(ip, ["-n", ns, "link", "set", tap, "up"]);
    const server = spawn(ip, ["netns", "exec", ns, process.execPath, serverJs], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(server);
    let serverOut = "";
    server.stdout!.setEncoding("utf8").on("data", (c: string) => (serverOut += c));
    server.stderr!.setEncoding("utf8").on("data", (c: string) => (serverOut += c));

    const code = await vm.status;
    const console = vm.console();
    const report = serverOut
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { sent?: number; received?: number; sha256?: string });
    const sent = report.find((r) => r.sent !== undefined);
    const received = report.find((r) => r.received !== undefined);
    const more = `${tail()}\n--- host end ---\n${serverOut}`;
    assert.ok(console.includes(`typervisor.test: eth0 mac=${GUEST_MAC} inet addr:${GUEST_IP}`), `the guest's eth0 has the configured MAC and ip= address${more}`);
    assert.match(console, /typervisor\.test: ping ok [1-3]\/3/, `the guest pinged the host${more}`);
    const rx = /typervisor\.test: rx bytes=(\d+) sha256=([0-9a-f]{64})/.exec(console);
    assert.ok(rx !== null && sent !== undefined, `host → guest ran${more}`);
    assert.equal(Number(rx[1]), NET_MIB * 1048576, `the guest received every byte${more}`);
    assert.equal(rx[2], sent.sha256, `the bytes the guest received are the bytes the host sent${more}`);
    const tx = /typervisor\.test: tx bytes=(\d+) sha256=([0-9a-f]{64})/.exec(console);
    assert.ok(tx !== null && received !== undefined, `guest → host ran${more}`);
    assert.equal(received.received, NET_MIB * 1048576, `the host received every byte${more}`);
    assert.equal(received.sha256, tx[2], `the bytes the host received are the bytes the guest sent${more}`);
    assert.equal(code, 0, `the VM ended with the guest's reboot${more}`);
  },
);
