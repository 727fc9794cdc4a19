// TAP access against the real kernel: a TAP with a unique name, no IP address assigned, on a link
// nothing else is attached to. Frames we write are the interface's rx; what the host sends on it
// (its own IPv6 link-local housekeeping when the link comes up) is its tx, read back here.
// Skipped only where a user must act: no /dev/net/tun, or no CAP_NET_ADMIN.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { SysError } from "./errors.js";
import { close } from "./libc.js";
import {
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  IOV_MAX,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_UFO,
  openTap,
  tapRead,
  tapSetOffload,
  tapVnetHdrSize,
  tapWritev,
  type Tap,
} from "./tun.js";

let serial = 0;
/** A name no other test run uses: "tvt" + pid + a counter, under IFNAMSIZ. */
const uniqueName = (): string => `tvt${process.pid.toString(36)}${(serial++).toString(36)}`;

/** Opens a TAP, or skips the test saying what the user must do. */
function tapOrSkip(t: TestContext, name = uniqueName()): Tap | undefined {
  try {
    return openTap(name, { vnetHdrSize: 12 });
  } catch (e) {
    if (e instanceof SysError && (e.code === "ENOENT" || e.code === "ENODEV")) {
      t.skip(`no TUN/TAP driver here: ${e.message}`);
      return undefined;
    }
    if (e instanceof SysError && (e.code === "EPERM" || e.code === "EACCES")) {
      t.skip(`TAP devices need CAP_NET_ADMIN: ${e.message}`);
      return undefined;
    }
    throw e;
  }
}

const sys = (name: string, file: string): string => readFileSync(`/sys/class/net/${name}/${file}`, "utf8").trim();
const counter = (name: string, stat: string): number => Number(sys(name, `statistics/${stat}`));

function linkUp(name: string): void {
  // IPv6 on for this interface, so the kernel sends its link-local housekeeping (MLD, DAD, RS) on it.
  const v6 = `/proc/sys/net/ipv6/conf/${name}/disable_ipv6`;
  if (existsSync(v6)) writeFileSync(v6, "0");
  execFileSync("ip", ["link", "set", name, "up"]);
}

async function gone(name: string): Promise<boolean> {
  for (let i = 0; i < 100 && existsSync(`/sys/class/net/${name}`); i++) await new Promise((r) => setTimeout(r, 20));
  return !existsSync(`/sys/class/net/${name}`);
}

/** A 12-byte virtio-net header (no offload) and a 60-byte Ethernet frame between two locally
 * administered addresses no host owns, EtherType 0x88B5 (IEEE 802 local experimental). */
function testFrame(): Uint8Array {
  const f = new Uint8Array(12 + 60);
  f.set([0x02, 0x00, 0x5e, 0x00, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x00, 0x00, 0x02, 0x88, 0xb5], 12);
  for (let i = 26; i < f.length; i++) f[i] = i & 0xff;
  return f;
}

test("openTap: a TAP with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte header; closing it removes the interface", async (t) => {
  const name = uniqueName();
  const tap = tapOrSkip(t, name);
  if (tap === undefined) return;
  try {
    assert.equal(tap.name, name);
    assert.ok(existsSync(`/sys/class/net/${name}`), "interface exists");
    assert.equal(Number(sys(name, "tun_flags")) & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    assert.equal(tapVnetHdrSize(tap.fd), 12);
    assert.equal(tapRead(tap.fd, new Uint8Array(2048)), null, "nothing to read on a fresh TAP: null, not an exception");
  } finally {
    close(tap.fd);
  }
  assert.ok(await gone(name), `${name} is still there after close`);
});

test("tapSetOffload: CSUM + TSO4 + TSO6 + UFO accepted; TSO without CSUM is the kernel's EINVAL with a hint; unknown bits refused", (t) => {
  const tap = tapOrSkip(t);
  if (tap === undefined) return;
  try {
    tapSetOffload(tap.fd, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_UFO);
    tapSetOffload(tap.fd, 0);
    assert.throws(() => tapSetOffload(tap.fd, TUN_F_TSO4), (e: unknown) => e instanceof SysError && e.code === "EINVAL" && /TUNSETOFFLOAD\(0x2\) failed: EINVAL \(.*TUN_F_CSUM/.test(e.message));
    assert.throws(() => tapSetOffload(tap.fd, 0x100), RangeError);
  } finally {
    close(tap.fd);
  }
});

test("frames both ways on an up link: a written frame counts as rx (header stripped); host frames are read with their 12-byte header and count as tx", async (t) => {
  const tap = tapOrSkip(t);
  if (tap === undefined) return;
  try {
    const frame = testFrame();
    // Down: the kernel refuses the write (EIO) and the card counts a TX error.
    assert.throws(() => tapWritev(tap.fd, [frame]), (e: unknown) => e instanceof SysError && e.code === "EIO");
    linkUp(tap.name);
    const rx0 = counter(tap.name, "rx_packets");
    const rxBytes0 = counter(tap.name, "rx_bytes");
    // Header and packet as two views into one buffer, the way a TX chain arrives.
    assert.equal(tapWritev(tap.fd, [frame.subarray(0, 5), frame.subarray(5, 12), frame.subarray(12)]), frame.length);
    assert.equal(counter(tap.name, "rx_packets"), rx0 + 1);
    assert.equal(counter(tap.name, "rx_bytes"), rxBytes0 + 60, "the 12-byte header is not part of the packet");

    // More segments than writev takes: gathered into one write, still one frame.
    const many = Array.from({ length: IOV_MAX + 50 }, (_, i) => frame.subarray(i % 2, (i % 2) + 1));
    const head = new Uint8Array(12);
    assert.equal(tapWritev(tap.fd, [head, ...many]), 12 + many.length);
    assert.equal(counter(tap.name, "rx_packets"), rx0 + 2);
    assert.equal(counter(tap.name, "rx_bytes"), rxBytes0 + 60 + many.length);

    if (!existsSync(`/proc/sys/net/ipv6/conf/${tap.name}`)) {
      t.skip("IPv6 is disabled in this kernel (ipv6.disable=1), so the host sends nothing on the link to read back");
      return;
    }
    const buf = new Uint8Array(12 + 65550);
    let n: number | null = null;
    for (let i = 0; i < 250 && n === null; i++) {
      n = tapRead(tap.fd, buf);
      if (n === null) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(n !== null, "the host sent nothing on the link within 5 s of bringing it up");
    assert.ok(n >= 12 + 14, `a frame of ${n} bytes is shorter than header + Ethernet header`);
    assert.equal(buf[12]! & 1, 1, "the host's link-local housekeeping goes to multicast addresses only");
    assert.ok(counter(tap.name, "tx_packets") >= 1);
  } finally {
    close(tap.fd);
  }
});

test("openTap errors say what is wrong: interface in use (EBUSY), a non-TAP interface (EINVAL), names too long or invalid", (t) => {
  const tap = tapOrSkip(t);
  if (tap === undefined) return;
  try {
    assert.throws(() => openTap(tap.name), (e: unknown) => e instanceof SysError && e.code === "EBUSY" && e.message.includes(`the TAP ${tap.name} is in use`));
    assert.throws(() => openTap("lo"), (e: unknown) => e instanceof SysError && e.code === "EINVAL" && e.message.includes("not a TAP"));
    assert.throws(() => openTap("x".repeat(16)), /at most 15/);
    assert.throws(() => openTap("a/b"), /not a valid interface name/);
    assert.throws(() => openTap("ok", { vnetHdrSize: 8 }), RangeError);
  } finally {
    close(tap.fd);
  }
});
