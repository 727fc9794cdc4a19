// Test helpers: real Debian packages (the cloud kernel, busybox-static, ...) fetched with apt and
// cached under <repo>/.cache/. Each function returns a path or throws an Error whose message is a
// short reason (no network, no apt, no package lists), which callers turn into `t.skip(reason)`.
// Nothing runs at import time.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { basename, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/** The meta package that always depends on the current cloud kernel (Debian's linux-signed-amd64 source). */
export const DEBIAN_KERNEL_META_PACKAGE = "linux-image-cloud-amd64";

// dist/testing/ (or src/testing/) → repository root.
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Where fetched packages live; .gitignore lists .cache/. */
export const DEBIAN_CACHE = join(ROOT, ".cache");
const KERNEL_CACHE = join(DEBIAN_CACHE, "debian-kernel");
const PACKAGE_CACHE = join(DEBIAN_CACHE, "debian-packages");
/** apt-get download of a ~50 MB kernel package on a slow mirror; apt-get update of bookworm lists. */
const COMMAND_TIMEOUT_MS = 240_000;

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: COMMAND_TIMEOUT_MS });
}

/** The last line of a failed command's stderr (or the error message), short enough for a skip reason. */
export function failureReason(e: unknown): string {
  const err = e as { stderr?: string | Buffer; message?: string; code?: string };
  if (err.code === "ENOENT") return err.message ?? String(e); // the command itself is missing
  const stderr = String(err.stderr ?? "").trim();
  const detail = stderr.split("\n").filter(Boolean).pop() ?? err.message ?? String(e);
  return detail.slice(0, 300);
}

/** Runs `f`, and once more after `apt-get update` when it failed (empty or stale package lists). */
function withPackageLists<T>(what: string, f: () => T | undefined): T {
  let first: unknown;
  try {
    const v = f();
    if (v !== undefined) return v;
  } catch (e) {
    first = e;
  }
  try {
    run("apt-get", ["update"], ROOT);
  } catch (e) {
    throw new Error(`${what} failed${first === undefined ? "" : ` (${failureReason(first)})`}, and apt-get update failed: ${failureReason(e)}`);
  }
  try {
    const v = f();
    if (v !== undefined) return v;
    throw new Error(`${what} found nothing, even after apt-get update`);
  } catch (e) {
    throw new Error(`${what} failed after apt-get update: ${failureReason(e)}`);
  }
}

/** Every regular file under `dir`, as paths relative to it. */
function walk(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = statSync(p, { throwIfNoEntry: false });
    if (st === undefined) continue; // a dangling symlink
    if (st.isDirectory()) out.push(...walk(p, base));
    else if (st.isFile()) out.push(relative(base, p));
  }
  return out;
}

/** Downloads `pkg` into `dir` (unless a .deb of it is there) and returns the .deb's path. */
function downloadDeb(pkg: string, dir: string): string {
  mkdirSync(dir, { recursive: true });
  // apt-get download names the file <name>_<version>_<arch>.deb (the version with ':' escaped).
  const find = (): string | undefined => readdirSync(dir).find((n) => n.startsWith(`${pkg}_`) && n.endsWith(".deb"));
  const cached = find();
  if (cached !== undefined) return join(dir, cached);
  withPackageLists(`apt-get download ${pkg}`, () => run("apt-get", ["download", pkg], dir));
  const deb = find();
  if (deb === undefined) throw new Error(`apt-get download ${pkg} left no ${pkg}_*.deb in ${dir}`);
  return join(dir, deb);
}

function extract(deb: string, into: string): void {
  try {
    run("dpkg-deb", ["-x", deb, into], ROOT);
  } catch (e) {
    throw new Error(`dpkg-deb -x ${basename(deb)} failed: ${failureReason(e)}`);
  }
}

/**
 * A file from a Debian package, e.g. `fetchDebianPackageFile("busybox-static", /^bin\/busybox$/)`:
 * downloads the package with apt-get, extracts it under <repo>/.cache/debian-packages/<pkg>/ and
 * returns the path of the first file whose path inside the package (no leading slash) matches.
 */
export function fetchDebianPackageFile(pkg: string, pathInPackage: RegExp): string {
  // Debian Policy §5.6.7: package names are lower-case alphanumerics, +, - and ., starting alphanumeric.
  if (!/^[a-z0-9][a-z0-9+.-]+$/.test(pkg)) throw new Error(`"${pkg}" is not a Debian package name`);
  const dir = join(PACKAGE_CACHE, pkg);
  const into = join(dir, "extract");
  const lookup = (): string | undefined => {
    if (!existsSync(into)) return undefined;
    const hit = walk(into).find((p) => pathInPackage.test(p));
    return hit === undefined ? undefined : join(into, hit);
  };
  const cached = lookup();
  if (cached !== undefined) return cached;
  extract(downloadDeb(pkg, dir), into);
  const found = lookup();
  if (found === undefined) throw new Error(`package ${pkg} holds no file matching ${pathInPackage}`);
  return found;
}

function findVmlinuz(): string | undefined {
  const boot = join(KERNEL_CACHE, "extract", "boot");
  if (!existsSync(boot)) return undefined;
  const f = readdirSync(boot).find((n) => n.startsWith("vmlinuz-"));
  return f === undefined ? undefined : join(boot, f);
}

/** apt-cache depends linux-image-cloud-amd64 → the versioned linux-image-*-cloud-amd64 package. */
function realKernelPackage(): string {
  return withPackageLists(`apt-cache depends ${DEBIAN_KERNEL_META_PACKAGE}`, () => {
    const out = run("apt-cache", ["depends", DEBIAN_KERNEL_META_PACKAGE], ROOT);
    return /^\s*\|?Depends:\s*(linux-image-[^\s<>]+-cloud-amd64)\s*$/m.exec(out)?.[1];
  });
}

/**
 * The vmlinuz (a bzImage) of Debian's current cloud kernel, cached under
 * <repo>/.cache/debian-kernel/: the meta package names the versioned linux-image-*-cloud-amd64
 * package, which is downloaded and extracted once.
 */
export function fetchDebianKernel(): string {
  const cached = findVmlinuz();
  if (cached !== undefined) return cached;
  mkdirSync(KERNEL_CACHE, { recursive: true });
  const have = readdirSync(KERNEL_CACHE).find((n) => /^linux-image-.*-cloud-amd64_.*\.deb$/.test(n));
  const deb = have !== undefined ? join(KERNEL_CACHE, have) : downloadDeb(realKernelPackage(), KERNEL_CACHE);
  extract(deb, join(KERNEL_CACHE, "extract"));
  const v = findVmlinuz();
  if (v === undefined) throw new Error(`${basename(deb)} holds no boot/vmlinuz-*`);
  return v;
}

/** The kernel release (`uname -r`) of a Debian vmlinuz path: boot/vmlinuz-<release>. */
export function debianKernelRelease(vmlinuzPath: string): string {
  const m = /^vmlinuz-(.+)$/.exec(basename(vmlinuzPath));
  if (m === null) throw new Error(`${vmlinuzPath} is not named vmlinuz-<release>`);
  return m[1]!;
}
