// Proves the ioctl numbers, constants and struct layouts in kvm-abi.ts / libc.ts / errors.ts / tun.ts / unix.ts
// against the system headers (linux/kvm.h, asm/kvm.h, sys/mman.h, linux/if_tun.h, sys/un.h, ...): abi-check.c is compiled with gcc and
// its JSON output is compared with the TypeScript declarations, name by name, in both directions.
// This is how the KVM ABI is verified on hosts without /dev/kvm.
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  KVM_CAPS, KVM_CONSTANTS, KVM_GET_REGS, KVM_IOCTLS, KVM_RUN, STRUCTS, _IO, _IOR, _IOW, _IOWR, capName, ioctlName,
  kvm_regs,
} from "./kvm-abi.js";
import { LIBC_CONSTANTS, MAP_FAILED } from "./libc.js";
import { errnoName, errnoValue } from "./errors.js";
import { TUN_CONSTANTS, TUN_IOCTLS, TUN_STRUCTS, TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ } from "./tun.js";
import { UNIX_CONSTANTS, UNIX_STRUCTS, UNIX_PATH_MAX_BYTES } from "./unix.js";
import { MpState } from "../kvm/types.js";

interface AbiJson {
  ioctls: Record<string, number>;
  caps: Record<string, number>;
  constants: Record<string, number>;
  errno: Record<string, number>;
  MAP_FAILED: string;
  structs: Record<string, { size: number; fields: Record<string, number> }>;
  tun: {
    ioctls: Record<string, number>;
    constants: Record<string, number>;
    structs: Record<string, { size: number; fields: Record<string, number> }>;
  };
  unix: {
    constants: Record<string, number>;
    structs: Record<string, { size: number; fields: Record<string, number> }>;
  };
}

/** abi-check.c beside this file (run from src) or in src/sys (run from dist/sys). */
function findSource(): string {
  const here = fileURLToPath(new URL(".", import.meta.url));
  const candidates = [join(here, "abi-check.c"), join(here, "..", "..", "src", "sys", "abi-check.c")];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) throw new Error(`abi-check.c not found (looked in ${candidates.join(", ")})`);
  return found;
}

let cached: AbiJson | string | undefined;

/** Compiles and runs abi-check.c once; returns its JSON, or the reason to skip (no gcc). */
function headerAbi(): AbiJson | string {
  if (cached !== undefined) return cached;
  const probe = spawnSync("gcc", ["--version"], { encoding: "utf8" });
  if (probe.error !== undefined) {
    cached = `gcc is not available (${probe.error.message}); cannot compile abi-check.c against the kernel headers`;
    return cached;
  }
  const dir = mkdtempSync(join(tmpdir(), "typervisor-abi-"));
  try {
    const exe = join(dir, "abi-check");
    const cc = spawnSync("gcc", ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", exe, findSource()], { encoding: "utf8" });
    assert.equal(cc.status, 0, `gcc failed to compile abi-check.c:\n${cc.stderr}`);
    const run = spawnSync(exe, [], { encoding: "utf8" });
    assert.equal(run.status, 0, `abi-check failed:\n${run.stderr}`);
    cached = JSON.parse(run.stdout) as AbiJson;
    return cached;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function abiOrSkip(t: TestContext): AbiJson | undefined {
  const abi = headerAbi();
  if (typeof abi === "string") {
    t.skip(abi);
    return undefined;
  }
  return abi;
}

/** Same names on both sides, and every value equal. */
function assertSameTable(what: string, ts: Readonly<Record<string, number>>, c: Record<string, number>): void {
  assert.deepEqual(Object.keys(ts).sort(), Object.keys(c).sort(), `${what}: names differ between TypeScript and abi-check.c`);
  for (const [name, value] of Object.entries(ts)) {
    assert.equal(value, c[name], `${what}: ${name} is ${value} (0x${value.toString(16)}) in TypeScript, ${c[name]} in the headers`);
  }
}

test("ioctl numbers match linux/kvm.h", (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assertSameTable("ioctl", KVM_IOCTLS, abi.ioctls);
});

test("KVM_CAP_* match linux/kvm.h", (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assertSameTable("capability", KVM_CAPS, abi.caps);
});

test("constants match linux/kvm.h, asm/kvm.h, fcntl.h, sys/mman.h, sys/eventfd.h, signal.h", (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assertSameTable("constant", { ...KVM_CONSTANTS, ...LIBC_CONSTANTS }, abi.constants);
  assert.equal(MAP_FAILED, BigInt(abi.MAP_FAILED), "MAP_FAILED");
});

test("types.ts MpState matches linux/kvm.h KVM_MP_STATE_*", (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  for (const [name, value] of Object.entries(MpState)) {
    assert.equal(value, abi.constants[`KVM_MP_STATE_${name}`], `MpState.${name}`);
  }
});

test("errno names and values match errno.h", (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assert.ok(Object.keys(abi.errno).length >= 40);
  for (const [name, value] of Object.entries(abi.errno)) {
    assert.equal(errnoValue(name), value, `errno ${name}`);
    assert.equal(errnoName(value), name, `errno ${value} should be named ${name}`);
  }
});

test("struct sizes and field offsets match the headers", async (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assert.deepEqual(Object.keys(STRUCTS).sort(), Object.keys(abi.structs).sort(), "struct names differ");
  for (const [name, ts] of Object.entries(STRUCTS)) {
    await t.test(`struct ${name}`, () => {
      const c = abi.structs[name]!;
      assert.equal(ts.size, c.size, `sizeof(struct ${name})`);
      assertSameTable(`struct ${name} field offset`, ts.fields, c.fields);
    });
  }
});

test("TUN/TAP ABI: tun.ts matches linux/if_tun.h, net/if.h (struct ifreq), sys/uio.h, limits.h, linux/virtio_net.h", async (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assertSameTable("tun ioctl", TUN_IOCTLS, abi.tun.ioctls);
  assertSameTable("tun constant", TUN_CONSTANTS, abi.tun.constants);
  assert.deepEqual(Object.keys(TUN_STRUCTS).sort(), Object.keys(abi.tun.structs).sort(), "tun struct names differ");
  for (const [name, ts] of Object.entries(TUN_STRUCTS)) {
    await t.test(`struct ${name}`, () => {
      const c = abi.tun.structs[name]!;
      assert.equal(ts.size, c.size, `sizeof(struct ${name})`);
      assertSameTable(`struct ${name} field offset`, ts.fields, c.fields);
    });
  }
});

test("Unix socket ABI: unix.ts matches sys/socket.h and sys/un.h (struct sockaddr_un)", async (t) => {
  const abi = abiOrSkip(t);
  if (abi === undefined) return;
  assertSameTable("unix constant", UNIX_CONSTANTS, abi.unix.constants);
  assert.deepEqual(Object.keys(UNIX_STRUCTS).sort(), Object.keys(abi.unix.structs).sort(), "unix struct names differ");
  for (const [name, ts] of Object.entries(UNIX_STRUCTS)) {
    await t.test(`struct ${name}`, () => {
      const c = abi.unix.structs[name]!;
      assert.equal(ts.size, c.size, `sizeof(struct ${name})`);
      assertSameTable(`struct ${name} field offset`, ts.fields, c.fields);
    });
  }
  // sun_path runs to the end of the struct, and a path is what it holds less the NUL.
  assert.equal(UNIX_STRUCTS.sockaddr_un!.fields.sun_path! + abi.unix.constants.SUN_PATH_LEN!, abi.unix.structs.sockaddr_un!.size);
  assert.equal(UNIX_PATH_MAX_BYTES, abi.unix.constants.SUN_PATH_LEN! - 1);
});

// Pure checks that need no compiler.

test("tun ioctls by the _IOW arithmetic: TUNSETIFF = 0x400454CA, TUNSETOFFLOAD = 0x400454D0, TUNSETVNETHDRSZ = 0x400454D8", () => {
  assert.equal(TUNSETIFF, 0x400454ca);
  assert.equal(TUNSETOFFLOAD, 0x400454d0);
  assert.equal(TUNSETVNETHDRSZ, 0x400454d8);
});

test("ioctl encoding is unsigned: KVM_GET_REGS = 0x8090AE81, KVM_RUN = 0xAE80", () => {
  assert.equal(KVM_GET_REGS, 0x8090ae81);
  assert.equal(KVM_RUN, 0xae80);
  assert.equal(_IO(0xae, 0x80), 0xae80);
  assert.equal(_IOR(0xae, 0x81, kvm_regs.size), 0x8090ae81);
  assert.equal(_IOW(0xae, 0x82, kvm_regs.size), 0x4090ae82);
  assert.equal(_IOWR(0xae, 0x05, 8), 0xc008ae05);
  for (const [name, nr] of Object.entries(KVM_IOCTLS)) {
    assert.ok(Number.isInteger(nr) && nr >= 0 && nr <= 0xffffffff, `${name} = ${nr} is not an unsigned 32-bit number`);
  }
  assert.throws(() => _IOW(0xae, 0x01, 1 << 14), /does not fit in 14 bits/);
});

test("ioctl and capability numbers are unique, so error names are unambiguous", () => {
  assert.equal(new Set(Object.values(KVM_IOCTLS)).size, Object.keys(KVM_IOCTLS).length);
  assert.equal(new Set(Object.values(KVM_CAPS)).size, Object.keys(KVM_CAPS).length);
  assert.equal(ioctlName(KVM_GET_REGS), "KVM_GET_REGS");
  assert.equal(ioctlName(0x5401), "ioctl(0x5401)");
  assert.equal(capName(32), "KVM_CAP_IRQFD");
  assert.equal(capName(9999), "KVM_CAP(9999)");
});
