// The virtio-net card end to end without a VM: a real card worker on memfd RAM serves a TAP that
// lives in a network namespace this test makes (192.0.2.0/24, TEST-NET-1, only inside it). The
// host's ARP request reaches the guest's receive queue through the TAP; the guest's ARP reply,
// sent through its transmit queue, teaches the host kernel the guest's MAC.
// Skipped only where a user must act: no /dev/net/tun, or no CAP_NET_ADMIN (not root).

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import * as sys from "../../../sys/index.js";
import { startCard } from "../../../cards/index.js";
import { startWiredCard } from "../../../cards/testing.js";
import { TestDriver, initDevice, layoutAt, w32 } from "../testing.js";
import { MMIO_CONFIG, MMIO_QUEUE_NOTIFY } from "../spec.js";
import { NET_HDR_SIZE, NET_RX_QUEUE, NET_TX_QUEUE } from "./spec.js";
import { formatMac } from "./mac.js";
import type { NetConfig } from "./kind.js";

const MiB = 1024 * 1024;
const HOST_IP = "192.0.2.1";
const GUEST_IP = "192.0.2.2";
const GUEST_MAC = "06:00:c0:00:02:02";

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

function skipReason(): string | undefined {
  if (!existsSync(sys.TUN_DEVICE_PATH)) return `no ${sys.TUN_DEVICE_PATH}: load the tun module (modprobe tun)`;
  if (process.getuid?.() !== 0) return "TAP devices and network namespaces need root (CAP_NET_ADMIN)";
  return undefined;
}

const ip4 = (s: string): number[] => s.split(".").map(Number);

/** A net card on memfd RAM whose TAP lives in a network namespace of its own at HOST_IP, both queues set up. */
async function netRig(t: TestContext, config: Partial<NetConfig> = {}) {
  const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;
  const tapName = `tvn${tag}`;
  const ns = `typervisor-net-${tag}`;
  const inNs = (...args: string[]): string => execFileSync("ip", ["netns", "exec", ns, ...args], { encoding: "utf8" });

  const { card, guest, dev } = await startWiredCard(t, 4 * MiB, (wiring) =>
    startCard({ ...wiring, kind: "net", config: { id: "eth0", tap: tapName, mac: GUEST_MAC, ...config } }),
  );
  execFileSync("ip", ["netns", "add", ns]);
  t.after(() => {
    try {
      execFileSync("ip", ["netns", "del", ns]);
    } catch {
      // already gone
    }
  });
  // The card's descriptor stays attached to the TAP when its interface moves into the namespace.
  execFileSync("ip", ["link", "set", tapName, "netns", ns]);
  inNs("ip", "addr", "add", `${HOST_IP}/24`, "dev", tapName);
  inNs("ip", "link", "set", tapName, "up");

  const rxLayout = layoutAt(0x1000, 16);
  const txLayout = layoutAt(0x4000, 16);
  const layouts = [];
  layouts[NET_RX_QUEUE] = rxLayout;
  layouts[NET_TX_QUEUE] = txLayout;
  assert.equal(initDevice(dev, layouts) & 0xff, 0xf, "the driver accepted every offered feature and both queues");
  const rx = new TestDriver(guest.memory, rxLayout);
  const tx = new TestDriver(guest.memory, txLayout);
  return { card, dev, rx, tx, guest, inNs, tapName };
}

test("net card: an ARP request from the host reaches the guest's receive queue; the guest's ARP reply teaches the host its MAC", { timeout: 60_000 }, async (t: TestContext) => {
  const why = skipReason();
  if (why !== undefined) {
    t.skip(why);
    return;
  }
  const { card, dev, rx, tx, guest, inNs, tapName } = await netRig(t);
  // The MAC in config space is the one configured (virtio 1.2 §5.1.4).
  const cfg = new Uint8Array(6);
  for (let i = 0; i < 6; i++) {
    const b = new Uint8Array(1);
    dev.read(MMIO_CONFIG + i, b);
    cfg[i] = b[0]!;
  }
  assert.equal(formatMac(cfg), GUEST_MAC);

  // Receive buffers, then the host speaks: a UDP datagram to GUEST_IP makes the namespace's kernel
  // ask who has GUEST_IP (ARP, RFC 826), broadcast out of the TAP.
  for (let i = 0; i < 8; i++) rx.publish(rx.addChain([{ addr: 0x100000 + i * 0x1000, len: 2048, write: true }]));
  w32(dev, MMIO_QUEUE_NOTIFY, NET_RX_QUEUE);
  inNs(process.execPath, "-e", `require("dgram").createSocket("udp4").send("x", 9, "${GUEST_IP}", (e, n) => process.exit(e ? 1 : 0))`);
  let arp: { request: Uint8Array; hostMac: Uint8Array } | undefined;
  await until(() => {
    for (const u of rx.takeUsed()) {
      const frame = guest.memory.slice(0x100000 + u.id * 0x1000, u.len).slice(NET_HDR_SIZE);
      const ethertype = (frame[12]! << 8) | frame[13]!;
      // ARP request (op 1) for GUEST_IP: RFC 826 layout after the 14-byte Ethernet header.
      if (ethertype === 0x0806 && frame[21] === 1 && frame.subarray(38, 42).join(".") === GUEST_IP) {
        arp = { request: frame, hostMac: frame.slice(6, 12) };
      }
    }
    return arp !== undefined;
  });
  assert.deepEqual([...arp!.request.subarray(0, 6)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "broadcast");
  assert.deepEqual([...arp!.request.subarray(28, 32)], ip4(HOST_IP), "sender is the host");

  // The guest answers through its transmit queue: virtio_net_hdr (no offload) + an ARP reply.
  const reply = new Uint8Array(NET_HDR_SIZE + 42);
  const f = reply.subarray(NET_HDR_SIZE);
  const guestMac = [...cfg];
  f.set(arp!.hostMac, 0);
  f.set(guestMac, 6);
  f.set([0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02], 12); // Ethernet ARP, IPv4, op 2 (reply)
  f.set(guestMac, 22);
  f.set(ip4(GUEST_IP), 28);
  f.set(arp!.hostMac, 32);
  f.set(ip4(HOST_IP), 38);
  guest.memory.write(0x200000, reply);
  tx.publish(tx.addChain([{ addr: 0x200000, len: NET_HDR_SIZE }, { addr: 0x200000 + NET_HDR_SIZE, len: 42 }]));
  w32(dev, MMIO_QUEUE_NOTIFY, NET_TX_QUEUE);
  await until(() => tx.usedIdx() === 1);
  assert.deepEqual(tx.takeUsed(), [{ id: 0, len: 0 }]);
  await until(() => inNs("ip", "neigh", "show", GUEST_IP, "dev", tapName).includes(GUEST_MAC));
  const m = card.metrics();
  assert.equal(m.errors, 0);
  assert.ok(m.requests >= 2, `frames both ways counted (${m.requests})`);
  assert.equal(card.failure, undefined);
});

test("net card: the receive rate limiter holds frames back (counted as throttled) until the limit is lifted", { timeout: 60_000 }, async (t: TestContext) => {
  const why = skipReason();
  if (why !== undefined) {
    t.skip(why);
    return;
  }
  // One frame a minute: the first ARP request gets through, the others wait.
  const { card, dev, rx, inNs } = await netRig(t, { rxRateLimiter: { ops: { size: 1, refillTime: 60_000 } } });
  for (let i = 0; i < 8; i++) rx.publish(rx.addChain([{ addr: 0x100000 + i * 0x1000, len: 2048, write: true }]));
  w32(dev, MMIO_QUEUE_NOTIFY, NET_RX_QUEUE);
  // Three addresses: three ARP requests, each broadcast out of the TAP.
  inNs(process.execPath, "-e", `const s = require("dgram").createSocket("udp4"); let n = 0; for (const a of ["192.0.2.5", "192.0.2.6", "192.0.2.7"]) s.send("x", 9, a, () => ++n === 3 && process.exit(0));`);
  await until(() => rx.usedIdx() >= 1);
  await until(() => card.metrics().throttled >= 1);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(rx.usedIdx(), 1, "one frame within the limit, the others held back");
  await card.update("rxRateLimiter", { bandwidth: null, ops: null });
  await until(() => rx.usedIdx() >= 3);
  assert.equal(card.failure, undefined);
});
