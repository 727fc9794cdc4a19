// Kernel modules of Debian's cloud kernel package (for the starter image's initrd and the box's),
// in an order insmod accepts. The package ships no modules.dep (depmod writes it at install
// time), so each module's dependencies are read from its own .modinfo section: the NUL-separated
// "key=value" strings that modpost writes (scripts/mod/modpost.c, "depends=" lists the modules
// whose symbols it uses).

import { readFileSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";

/** The `depends=` entry of a module's .modinfo: module names, comma-separated ("" for none). */
export function moduleDepends(ko: Uint8Array): string[] {
  // scripts/mod/modpost.c add_depends(): buf_printf(b, "MODULE_INFO(depends, \"...\");") — the
  // string lands in .modinfo as "depends=a,b\0". A byte search is enough: the key is unique there.
  const key = Buffer.from("\0depends=");
  const buf = Buffer.from(ko.buffer, ko.byteOffset, ko.byteLength);
  const at = buf.indexOf(key);
  if (at < 0) throw new Error("no depends= entry in the module's .modinfo (not a kernel module?)");
  const start = at + key.length;
  const end = buf.indexOf(0, start);
  const value = buf.subarray(start, end < 0 ? buf.length : end).toString("latin1");
  return value === "" ? [] : value.split(",");
}

/** Module file names use '-' and '_' interchangeably (kernel/module: both name the same module). */
export const moduleKey = (name: string): string => name.replace(/-/g, "_");

/** Every *.ko under `dir`, by module key. */
export function indexModules(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (n.endsWith(".ko")) out.set(moduleKey(basename(n, ".ko")), p);
    }
  };
  walk(dir);
  return out;
}

/**
 * `wanted` and everything they depend on, dependencies first (a depth-first post-order), as
 * paths from `index`. `readDepends` is injectable for tests. Throws naming a module that is
 * missing or a dependency cycle.
 */
export function resolveModules(
  wanted: readonly string[],
  index: Map<string, string>,
  readDepends: (path: string) => string[] = (p) => moduleDepends(readFileSync(p)),
): string[] {
  const order: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string, from: string | undefined): void => {
    const key = moduleKey(name);
    const s = state.get(key);
    if (s === "done") return;
    if (s === "visiting") throw new Error(`kernel modules depend on each other in a cycle through ${key}`);
    const path = index.get(key);
    if (path === undefined) throw new Error(`kernel module ${key}${from ? ` (needed by ${from})` : ""} is not in the kernel package`);
    state.set(key, "visiting");
    for (const dep of readDepends(path)) visit(dep, key);
    state.set(key, "done");
    order.push(path);
  };
  for (const w of wanted) visit(w, undefined);
  return order;
}
