// Test helpers for the KVM tests that put a stock Debian guest on a TAP (net-kvm, and the SDK's
// package test): the host end of the starter image's `typervisor.test=net:...` — a network
// namespace this test makes (192.0.2.0/24, TEST-NET-1, only inside it), the TAP the card opened
// moved into it, and a Node.js server there that sends seeded bytes and hashes what it receives —
// and the checks of what both ends printed. Not shipped (package.json leaves testing modules out).

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { IMAGE_CMDLINE } from "../../../image/build.js";

export const HOST_IP = "192.0.2.1";
export const GUEST_IP = "192.0.2.2";
export const GUEST_MAC = "06:00:c0:00:02:02";
const PORT = 5000;

/** The starter image's command line for the net test: eth0 from ip=, then ping and `mib` MiB each way. */
export function netTestCmdline(mib: number): string {
  return `${IMAGE_CMDLINE} ip=${GUEST_IP}::${HOST_IP}:255.255.255.0::eth0:off typervisor.test=net:${HOST_IP}:${PORT}:${mib}`;
}

/** A TAP name and a namespace name no other run uses. */
export function netNames(): { tap: string; ns: string } {
  const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;
  return { tap: `tvk${tag}`, ns: `typervisor-net-${tag}` };
}

/** The host end: sends `mib` MiB of seeded bytes on PORT, receives `mib` MiB on PORT + 1; prints both SHA-256 as JSON lines. */
function serverSource(mib: number): string {
  return `
const net = require("net"), crypto = require("crypto");
const total = ${mib} * 1048576;
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
}

export interface TapPeer {
  /** What the host end printed so far. */
  output(): string;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Makes the namespace `ns` (removed when the test ends), waits for the card to create `tap` (the VM
 * has started), moves it there with HOST_IP, and starts the server for `mib` MiB each way.
 * `running` says whether the VM still runs; `tail` adds the VM's output to a failure.
 */
export async function tapPeer(
  t: TestContext,
  o: { ip: string; dir: string; tap: string; ns: string; mib: number; running: () => boolean; tail: () => string },
): Promise<TapPeer> {
  const { ip, tap, ns } = o;
  execFileSync(ip, ["netns", "add", ns]);
  let server: ReturnType<typeof spawn> | undefined;
  t.after(() => {
    server?.kill("SIGKILL");
    try {
      execFileSync(ip, ["netns", "del", ns], { stdio: "ignore" });
    } catch {
      // gone already
    }
  });
  const serverJs = join(o.dir, "net-server.cjs");
  writeFileSync(serverJs, serverSource(o.mib));
  // The card creates the TAP when the VM starts; then it moves into the namespace (the card's
  // descriptor stays attached) and the host end comes up there.
  await until(() => existsSync(`/sys/class/net/${tap}`) || !o.running(), 60_000, `the TAP ${tap}`).catch((e) => assert.fail(`${(e as Error).message}${o.tail()}`));
  assert.ok(o.running(), `the VM is running${o.tail()}`);
  execFileSync(ip, ["link", "set", tap, "netns", ns]);
  execFileSync(ip, ["-n", ns, "addr", "add", `${HOST_IP}/24`, "dev", tap]);
  execFileSync(ip, ["-n", ns, "link", "set", tap, "up"]);
  server = spawn(ip, ["netns", "exec", ns, process.execPath, serverJs], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  server.stdout!.setEncoding("utf8").on("data", (c: string) => (out += c));
  server.stderr!.setEncoding("utf8").on("data", (c: string) => (out += c));
  return { output: () => out };
}

/** The net test's checks: eth0 as configured, the ping, and `mib` MiB each way with equal hashes. */
export function assertNetTest(console: string, peer: TapPeer, mib: number, tail: string): void {
  const report = peer
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { sent?: number; received?: number; sha256?: string });
  const sent = report.find((r) => r.sent !== undefined);
  const received = report.find((r) => r.received !== undefined);
  const more = `${tail}\n--- host end ---\n${peer.output()}`;
  assert.ok(console.includes(`typervisor.test: eth0 mac=${GUEST_MAC} inet addr:${GUEST_IP}`), `the guest's eth0 has the configured MAC and ip= address${more}`);
  assert.match(console, /typervisor\.test: ping ok [1-3]\/3/, `the guest pinged the host${more}`);
  const rx = /typervisor\.test: rx bytes=(\d+) sha256=([0-9a-f]{64})/.exec(console);
  assert.ok(rx !== null && sent !== undefined, `host → guest ran${more}`);
  assert.equal(Number(rx[1]), mib * 1048576, `the guest received every byte${more}`);
  assert.equal(rx[2], sent.sha256, `the bytes the guest received are the bytes the host sent${more}`);
  const tx = /typervisor\.test: tx bytes=(\d+) sha256=([0-9a-f]{64})/.exec(console);
  assert.ok(tx !== null && received !== undefined, `guest → host ran${more}`);
  assert.equal(received.received, mib * 1048576, `the host received every byte${more}`);
  assert.equal(received.sha256, tx[2], `the bytes the host received are the bytes the guest sent${more}`);
}
