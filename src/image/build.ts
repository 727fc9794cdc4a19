// `typervisor image build`: a starter guest made only from Debian packages — Debian's cloud kernel
// (vmlinuz), an initrd that loads the virtio modules and mounts the root disk (initrd.img), and a
// busybox root disk (rootfs.ext4) — plus the `typervisor run` command that boots it.

import { DEFAULT_LINUX_CMDLINE } from "../sdk/defaults.js";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, renameSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, isAbsolute, join, relative, resolve } from "node:path";
import { debianKernelRelease, fetchDebianKernel, fetchDebianPackageFile, kernelModulesDir, type DebianCache } from "./debian.js";
import { indexModules, resolveModules } from "./modules.js";
import { IMAGE_MODULES, buildInitrd } from "./initramfs.js";
import { busyboxApplets, stageRootfs, writeExt4, ROOTFS_MIB } from "./rootfs.js";

/** File names inside the output folder. */
export const IMAGE_FILES = { kernel: "vmlinuz", initrd: "initrd.img", rootfs: "rootfs.ext4" } as const;
export const DEFAULT_IMAGE_DIR = "typervisor-image";
/** Guest memory the printed command gives: the cloud kernel, the initrd and busybox fit in far less. */
export const IMAGE_MEM_MIB = 256;
/**
 * The command line the printed command gives: the Linux default of `typervisor run` (console on
 * ttyS0, reboot through the i8042, reboot a second after a panic, no PCI bus) — the drive's
 * `root` flag adds `root=/dev/vda rw`.
 */
export const IMAGE_CMDLINE = DEFAULT_LINUX_CMDLINE;

/** $XDG_CACHE_HOME/typervisor, else ~/.cache/typervisor. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env["XDG_CACHE_HOME"];
  return join(xdg !== undefined && isAbsolute(xdg) ? xdg : join(homedir(), ".cache"), "typervisor");
}

export interface ImageBuildOptions {
  outDir: string;
  /** Where downloads are cached (debian-kernel/, debian-packages/). */
  cacheDir: string;
  onProgress?: (line: string) => void;
}

export interface BuiltImage {
  kernel: string;
  initrd: string;
  rootfs: string;
  /** The kernel release (uname -r). */
  release: string;
  /** The initrd's modules, in insmod order (file names). */
  modules: string[];
}

/** `s` as one sh word. */
export const shWord = (s: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** The exact `typervisor run` command that boots the image in `dir` (paths as given, or relative to `cwd`). */
export function runCommand(dir: string, cwd = process.cwd()): string {
  const rel = relative(cwd, resolve(cwd, dir));
  const base = rel === "" ? "." : rel.startsWith("..") ? resolve(cwd, dir) : rel;
  const at = (f: string) => shWord(join(base, f));
  return `typervisor run --kernel ${at(IMAGE_FILES.kernel)} --initrd ${at(IMAGE_FILES.initrd)} --drive path=${at(IMAGE_FILES.rootfs)},root --mem ${IMAGE_MEM_MIB}`;
}

/** Fetches what it needs (cached) and writes vmlinuz, initrd.img and rootfs.ext4 into `outDir`. */
export function buildImage(o: ImageBuildOptions): BuiltImage {
  const progress = o.onProgress ?? (() => {});
  const cache: DebianCache = { cacheDir: o.cacheDir, onProgress: progress };
  mkdirSync(o.cacheDir, { recursive: true });
  progress(`Debian's cloud kernel (cache ${o.cacheDir})`);
  const vmlinuz = fetchDebianKernel(cache);
  const release = debianKernelRelease(vmlinuz);
  const modules = resolveModules(IMAGE_MODULES, indexModules(kernelModulesDir(vmlinuz)));
  progress(`busybox (busybox-static)`);
  const busybox = fetchDebianPackageFile(cache, "busybox-static", /^bin\/busybox$/);

  mkdirSync(o.outDir, { recursive: true });
  const out = {
    kernel: join(o.outDir, IMAGE_FILES.kernel),
    initrd: join(o.outDir, IMAGE_FILES.initrd),
    rootfs: join(o.outDir, IMAGE_FILES.rootfs),
  };
  progress(`writing ${out.kernel} (${release})`);
  copyFileSync(vmlinuz, `${out.kernel}.tmp`);
  renameSync(`${out.kernel}.tmp`, out.kernel);

  progress(`writing ${out.initrd}: busybox and ${modules.length} modules (${modules.map((m) => basename(m, ".ko")).join(", ")})`);
  const initrd = buildInitrd(
    new Uint8Array(readFileSync(busybox)),
    modules.map((m) => ({ file: basename(m), data: new Uint8Array(readFileSync(m)) })),
  );
  writeFileSync(`${out.initrd}.tmp`, initrd);
  renameSync(`${out.initrd}.tmp`, out.initrd);

  progress(`writing ${out.rootfs}: ext4, ${ROOTFS_MIB} MiB, busybox init (mke2fs -d)`);
  const stage = mkdtempSync(join(tmpdir(), "typervisor-rootfs-"));
  try {
    stageRootfs(stage, busybox, busyboxApplets(busybox));
    writeExt4(stage, out.rootfs);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return { ...out, release, modules: modules.map((m) => basename(m)) };
}
