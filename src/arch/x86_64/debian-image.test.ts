// A real kernel: Debian's linux-image-cloud-amd64 (a bzImage), fetched with apt and cached under
// <repo>/.cache/debian-kernel/. Without network or apt the test is skipped with the reason.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { GuestMemory } from "../../memory/guest-memory.js";
import {
  MiB,
  XLF_KERNEL_64,
  ZERO_PAGE_START,
  bzImagePayload,
  e820Map,
  loadKernel,
  memoryLayout,
  parseBzImage,
  parseElf,
  payloadCompression,
  prepareBoot,
  writeBootParams,
  writeCmdline,
} from "./index.js";

const META_PACKAGE = "linux-image-cloud-amd64";
// dist/arch/x86_64/ (or src/arch/x86_64/) → repository root.
const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const CACHE = join(ROOT, ".cache", "debian-kernel");
const EXTRACT = join(CACHE, "extract");

function run(cmd: string, args: string[], cwd = CACHE): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 240_000 });
}

function findVmlinuz(): string | undefined {
  const boot = join(EXTRACT, "boot");
  if (!existsSync(boot)) return undefined;
  const f = readdirSync(boot).find((n) => n.startsWith("vmlinuz-"));
  return f === undefined ? undefined : join(boot, f);
}

/** apt-cache depends linux-image-cloud-amd64 → the versioned linux-image-*-cloud-amd64 package. */
function realPackage(): string {
  const depends = (): string | undefined => {
    const out = run("apt-cache", ["depends", META_PACKAGE]);
    return /^\s*\|?Depends:\s*(linux-image-[^\s<>]+-cloud-amd64)\s*$/m.exec(out)?.[1];
  };
  let pkg: string | undefined;
  try {
    pkg = depends();
  } catch {
    pkg = undefined;
  }
  if (pkg === undefined) {
    run("apt-get", ["update"]); // empty package lists
    pkg = depends();
  }
  if (pkg === undefined) throw new Error(`apt-cache depends ${META_PACKAGE} names no linux-image-*-cloud-amd64 package`);
  return pkg;
}

/** The cached vmlinuz, downloading and extracting the .deb when needed. */
function fetchKernel(): string {
  const cached = findVmlinuz();
  if (cached !== undefined) return cached;
  mkdirSync(CACHE, { recursive: true });
  let deb = readdirSync(CACHE).find((n) => /^linux-image-.*-cloud-amd64_.*\.deb$/.test(n));
  if (deb === undefined) {
    const pkg = realPackage();
    run("apt-get", ["download", pkg]);
    deb = readdirSync(CACHE).find((n) => n.startsWith(`${pkg}_`) && n.endsWith(".deb"));
    if (deb === undefined) throw new Error(`apt-get download ${pkg} left no .deb in ${CACHE}`);
  }
  run("dpkg-deb", ["-x", join(CACHE, deb), EXTRACT]);
  const v = findVmlinuz();
  if (v === undefined) throw new Error(`${deb} holds no boot/vmlinuz-*`);
  return v;
}

function reason(e: unknown): string {
  const err = e as { stderr?: string; message?: string };
  const detail = (err.stderr ?? "").trim().split("\n").filter(Boolean).pop() ?? err.message ?? String(e);
  return detail.slice(0, 300);
}

test("Debian linux-image-cloud-amd64: a real bzImage through the loader", { timeout: 600_000 }, async (t: TestContext) => {
  let path: string;
  try {
    path = fetchKernel();
  } catch (e) {
    t.skip(`could not fetch ${META_PACKAGE}: ${reason(e)}`);
    return;
  }
  const image = new Uint8Array(readFileSync(path));
  const hdr = parseBzImage(image);

  await t.test("setup header (boot.rst): HdrS, protocol ≥ 2.15, 64-bit, relocatable, sane sizes", () => {
    assert.equal(String.fromCharCode(...image.subarray(0x202, 0x206)), "HdrS");
    assert.ok(hdr.protocolVersion >= 0x20f, `protocol ${hdr.protocolVersion.toString(16)}`);
    assert.ok((hdr.xloadflags & XLF_KERNEL_64) !== 0, "XLF_KERNEL_64");
    assert.equal(hdr.relocatable, true);
    assert.ok(hdr.setupSects >= 4 && hdr.setupSects <= 64, `setup_sects ${hdr.setupSects}`);
    assert.ok(hdr.kernelAlignment >= 2 * MiB && (hdr.kernelAlignment & (hdr.kernelAlignment - 1)) === 0);
    assert.ok(hdr.prefAddress >= MiB && hdr.prefAddress % hdr.kernelAlignment === 0, `pref_address ${hdr.prefAddress.toString(16)}`);
    assert.ok(hdr.initSize > hdr.pmSize && hdr.initSize < 256 * MiB, `init_size ${hdr.initSize.toString(16)}`);
    assert.ok(hdr.cmdlineSize >= 255);
    assert.ok(hdr.initrdAddrMax >= 0x37ffffff);
  });

  await t.test("loadKernel into 512 MiB: at pref_address, entry64 = load + 0x200", () => {
    const mem = GuestMemory.anonymous(memoryLayout(512 * MiB));
    const k = loadKernel(image, mem);
    assert.equal(k.format, "bzimage");
    assert.equal(k.loadAddr, hdr.prefAddress);
    assert.equal(k.entry64, k.loadAddr + 0x200);
    assert.equal(k.loadEnd, k.loadAddr + hdr.initSize);
    assert.deepEqual(mem.read(k.loadAddr, 4096), image.subarray(hdr.pmOffset, hdr.pmOffset + 4096));
    const cmd = writeCmdline(mem, "console=ttyS0 reboot=k panic=1", k.cmdlineMax);
    const zp = writeBootParams(mem, { kernel: k, cmdlineAddr: cmd.addr, cmdlineSize: cmd.size, e820: e820Map(memoryLayout(512 * MiB)) });
    assert.equal(mem.readU32(zp + 0x202), 0x53726448);
    assert.equal(mem.readU16(zp + 0x206), hdr.protocolVersion);
    assert.equal(mem.readU32(zp + 0x260), hdr.initSize);
    assert.equal(mem.readU8(zp + 0x210), 0xff);
    assert.equal(mem.readU32(zp + 0x228), cmd.addr);
  });

  await t.test("prepareBoot with an initrd and 2 vCPUs", () => {
    const mem = GuestMemory.anonymous(memoryLayout(512 * MiB));
    const plan = prepareBoot(mem, { kernel: image, initrd: new Uint8Array(3 * MiB).fill(0x5a), cmdline: "console=ttyS0", vcpus: 2 });
    assert.equal(plan.protocol, "linux64");
    assert.equal(plan.apStartup, "sipi");
    assert.equal(plan.vcpus[0]!.regs.rip, BigInt(plan.kernel.entry64));
    assert.ok(plan.initrd!.addr >= plan.kernel.loadEnd);
    assert.equal(plan.initrd!.addr + plan.initrd!.size <= 512 * MiB, true);
    assert.equal(mem.readU32(ZERO_PAGE_START + 0x218), plan.initrd!.addr);
    assert.equal(mem.readU32(ZERO_PAGE_START + 0x21c), 3 * MiB);
  });

  await t.test("compressed payload: inner vmlinux ELF when gzip", (st) => {
    const payload = bzImagePayload(image, hdr);
    const kind = payloadCompression(payload);
    if (kind !== "gzip") {
      st.skip(`payload is ${kind}-compressed; Node's zlib only does gzip/deflate/brotli, so the inner vmlinux is not checked (no dependency added)`);
      return;
    }
    const elf = parseElf(gunzipSync(payload));
    assert.ok(elf.segments.length > 0);
    for (const s of elf.segments) assert.ok(s.paddr >= hdr.prefAddress, `PT_LOAD at ${s.paddr.toString(16)}`);
  });
});
