// Unit tests of module ordering: .modinfo's depends=, dependencies first, the index of a package's .ko files.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { moduleDepends, moduleKey, resolveModules, indexModules } from "./modules.js";

const modinfo = (depends: string) => new TextEncoder().encode(`\x7fELF....\0license=GPL\0depends=${depends}\0retpoline=Y\0name=x\0`);

test("moduleDepends reads .modinfo's depends= (scripts/mod/modpost.c): a list, empty, or a refusal", () => {
  assert.deepEqual(moduleDepends(modinfo("virtio_ring,virtio")), ["virtio_ring", "virtio"]);
  assert.deepEqual(moduleDepends(modinfo("")), []);
  assert.throws(() => moduleDepends(new TextEncoder().encode("not a module")), /no depends= entry/);
});

test("resolveModules: dependencies first, each once; '-' and '_' name the same module; cycles and gaps named", () => {
  const index = new Map([
    ["kvm_amd", "/m/kvm-amd.ko"],
    ["kvm", "/m/kvm.ko"],
    ["irqbypass", "/m/irqbypass.ko"],
    ["virtio_blk", "/m/virtio_blk.ko"],
    ["virtio", "/m/virtio.ko"],
    ["virtio_ring", "/m/virtio_ring.ko"],
  ]);
  const deps: Record<string, string[]> = {
    "/m/kvm-amd.ko": ["kvm"],
    "/m/kvm.ko": ["irqbypass"],
    "/m/irqbypass.ko": [],
    "/m/virtio_blk.ko": ["virtio", "virtio_ring"],
    "/m/virtio.ko": ["virtio_ring"],
    "/m/virtio_ring.ko": [],
  };
  const order = resolveModules(["kvm-amd", "virtio_blk"], index, (p) => deps[p]!);
  assert.deepEqual(order, ["/m/irqbypass.ko", "/m/kvm.ko", "/m/kvm-amd.ko", "/m/virtio_ring.ko", "/m/virtio.ko", "/m/virtio_blk.ko"]);
  assert.equal(moduleKey("kvm-amd"), "kvm_amd");
  assert.throws(() => resolveModules(["kvm_amd"], new Map([["kvm_amd", "/a"]]), () => ["kvm"]), /kernel module kvm \(needed by kvm_amd\) is not in the kernel package/);
  assert.throws(() => resolveModules(["a"], new Map([["a", "/a"], ["b", "/b"]]), (p) => (p === "/a" ? ["b"] : ["a"])), /cycle through a/);
});

test("indexModules finds every .ko below a folder by module key", () => {
  const dir = mkdtempSync(join(tmpdir(), "box-mod-"));
  try {
    mkdirSync(join(dir, "arch/x86/kvm"), { recursive: true });
    writeFileSync(join(dir, "arch/x86/kvm/kvm-amd.ko"), modinfo("kvm"));
    writeFileSync(join(dir, "arch/x86/kvm/README"), "");
    assert.deepEqual([...indexModules(dir)], [["kvm_amd", join(dir, "arch/x86/kvm/kvm-amd.ko")]]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

