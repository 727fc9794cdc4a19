// The box's two images, built fresh for every run from what this host has:
// - an initramfs (newc cpio, our own writer) holding a static busybox, the kernel modules the
//   box needs in insmod order, and /init, which loads them, mounts the root disk and switches to it;
// - a root disk (ext4, `mke2fs -d` over a staging folder of hard links) holding /usr/bin/node and
//   the shared libraries `ldd` names, busybox, the built project at its host path (so paths in a
//   command mean the same inside), the package caches the tests use, any host file a command
//   names, and /box/init, which runs the command and reports its exit status on the result port.

import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { S_IFDIR, S_IFREG, writeCpio, type CpioEntry } from "../initramfs/cpio.js";
import { indexModules, resolveModules } from "../image/modules.js";
import { findTool } from "../image/rootfs.js";
import { BOX_ENV } from "../bench/guard.js";

/** Where the box finds its pieces on the host. */
export interface BoxAssets {
  /** Debian's cloud kernel (bzImage). */
  kernel: string;
  /** The lib/modules/<release>/kernel folder of the same package. */
  modulesDir: string;
  /** A statically linked busybox. */
  busybox: string;
  /** The node binary to run inside (default: this one). */
  node?: string;
}

/** What the box runs: a shell command line in a folder, with extra environment. */
export interface BoxCommand {
  /** Given to /bin/sh -c inside the box. */
  shell: string;
  /** Absolute folder to run it in (it exists inside: the project, or a folder a file was taken from). */
  cwd: string;
  env?: Record<string, string>;
}

/** The project folders and files the box carries (relative to the project root). */
export const PROJECT_ENTRIES = [
  "package.json", "bin", "dist", "guest/build", "node_modules", "examples", ".cache/debian-kernel/extract", ".cache/debian-packages",
  // A user's project with the packed package installed by npm (src/sdk/package.test.ts).
  ".cache/sdk-package/project",
];
/** node_modules entries no KVM test or command needs inside the box: the compiler, the browser driver, types. */
const SKIPPED_MODULES = new Set(["typescript", "playwright-core", "@types", ".cache", ".bin"]);

/**
 * The modules the box needs, by name: KVM for AMD-V (kvm_amd, which needs kvm, which needs
 * irqbypass) and the virtio-pci block driver for its root disk. Everything they depend on is
 * added by `resolveModules`.
 */
export const BOX_MODULES = ["kvm-amd", "virtio_blk", "virtio_pci", "tun"] as const;

/** The result port: the second 8250 (ttyS1); the box prints `BOX-EXIT <status>` there last. */
export const RESULT_TTY = "/dev/ttyS1";
export const EXIT_MARK = "BOX-EXIT";

/**
 * kvm-amd without virtual VMLOAD/VMSAVE and virtual GIF (arch/x86/kvm/svm/svm.c module parameters
 * vls and vgif): both are optional accelerations that QEMU TCG's SVM model offers with -cpu max,
 * and with them on, the box's own kernel once died of recursive page faults on a bad GS base
 * (exc_page_fault, "stack guard page was hit") while a nested SMP guest booted. Without them KVM
 * intercepts VMLOAD/VMSAVE and STGI/CLGI and emulates them itself.
 */
export function moduleParams(file: string): string {
  return file === "kvm-amd.ko" ? " vls=0 vgif=0" : "";
}

/** The initramfs's /init (busybox sh). Module paths are as stored in the archive. */
export function initramfsInit(modules: string[]): string {
  return [
    "#!/bin/busybox sh",
    "/bin/busybox mkdir -p /proc /sys /dev /newroot",
    "/bin/busybox mount -t proc proc /proc",
    "/bin/busybox mount -t sysfs sysfs /sys",
    "/bin/busybox mount -t devtmpfs devtmpfs /dev",
    ...modules.map((m) => `/bin/busybox insmod /${m}${moduleParams(basename(m))} || { echo "box: insmod ${basename(m)} failed"; /bin/busybox poweroff -f; }`),
    // virtio-blk probes asynchronously: wait for the disk (up to 10 s) before mounting it.
    "i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done",
    '/bin/busybox mount -t ext4 /dev/vda /newroot || { echo "box: cannot mount the root disk"; /bin/busybox poweroff -f; }',
    "/bin/busybox mount --move /dev /newroot/dev",
    "/bin/busybox umount /proc /sys",
    "exec /bin/busybox switch_root /newroot /box/init",
    "",
  ].join("\n");
}

/** The root disk's /box/init: mounts, environment, the command, its status on the result port, power off. */
export function rootInit(): string {
  return [
    "#!/bin/sh",
    "/bin/busybox --install -s /bin",
    "mount -t proc proc /proc; mount -t sysfs sysfs /sys",
    "mount -t tmpfs -o mode=1777 tmpfs /tmp; mkdir -p /dev/shm /dev/pts; mount -t tmpfs tmpfs /dev/shm; mount -t devpts devpts /dev/pts",
    "[ -d /box/tmp ] && cp -a /box/tmp/. /tmp/",
    "[ -f /box/mounts ] && . /box/mounts",
    "ip link set lo up 2>/dev/null",
    `stty -F ${RESULT_TTY} raw -echo`,
    `export HOME=/root PATH=/usr/local/bin:/usr/bin:/bin TERM=dumb ${BOX_ENV}=1`,
    ". /box/env",
    'cd "$BOX_CWD"',
    // stdin is /dev/null: nothing types into the box; stdout and stderr are the console (ttyS0).
    "/bin/sh /box/command </dev/null",
    "rc=$?",
    `echo "${EXIT_MARK} $rc" > ${RESULT_TTY}`,
    "sync",
    "poweroff -f",
    "",
  ].join("\n");
}

/** `s` as one sh word: as it is when it holds only safe characters, else in single quotes. */
export const shQuote = (s: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** /box/env: `export K='v'` lines, the working folder last. */
export function envFile(cmd: BoxCommand): string {
  const lines = Object.entries(cmd.env ?? {}).map(([k, v]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`"${k}" is not an environment variable name`);
    return `export ${k}=${shQuote(v)}`;
  });
  lines.push(`BOX_CWD=${shQuote(cmd.cwd)}`, "");
  return lines.join("\n");
}

/** The initramfs: busybox, the modules in insmod order, /init. */
export function buildInitramfs(assets: BoxAssets): Uint8Array {
  const modules = resolveModules(BOX_MODULES, indexModules(assets.modulesDir));
  const entries: CpioEntry[] = [
    { name: "bin", mode: S_IFDIR | 0o755 },
    { name: "bin/busybox", mode: S_IFREG | 0o755, data: readFileSync(assets.busybox) },
    { name: "lib", mode: S_IFDIR | 0o755 },
  ];
  const names: string[] = [];
  for (const m of modules) {
    const name = `lib/${basename(m)}`;
    names.push(name);
    entries.push({ name, mode: S_IFREG | 0o644, data: readFileSync(m) });
  }
  entries.push({ name: "init", mode: S_IFREG | 0o755, data: new TextEncoder().encode(initramfsInit(names)) });
  return writeCpio(entries);
}

/** The shared objects `ldd` lists for `binary` (absolute paths), the dynamic loader included. */
export function sharedLibraries(binary: string): string[] {
  let out: string;
  try {
    out = execFileSync("ldd", [binary], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new Error(`ldd ${binary} failed: ${(e as Error).message.split("\n")[0]}`);
  }
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m !== null) libs.push(m[1]!);
  }
  return libs;
}

/** Where a project that lives under /tmp on the host is staged on the root disk (see buildRootDisk). */
const BOX_PROJECT = "box/project";
const BOX_PROJECT_PATH = `/${BOX_PROJECT}`;

/** Host tools the box carries for tests (see buildRootDisk). */
const HOST_TOOLS = ["mke2fs", "debugfs", "ip", "tmux", "time"];

/** Mirrors `src` (a file, symlink or folder) at `dst`, hard-linking files where it can. */
function mirror(src: string, dst: string, skip?: (rel: string) => boolean, rel = ""): void {
  const st = lstatSync(src, { throwIfNoEntry: false });
  if (st === undefined) return;
  if (st.isSymbolicLink()) {
    mkdirSync(dirname(dst), { recursive: true });
    if (!existsSync(dst)) symlinkSync(readlinkSync(src), dst);
  } else if (st.isDirectory()) {
    mkdirSync(dst, { recursive: true });
    for (const n of readdirSync(src)) {
      const r = rel === "" ? n : `${rel}/${n}`;
      if (skip?.(r)) continue;
      mirror(join(src, n), join(dst, n), skip, r);
    }
  } else if (st.isFile()) {
    mkdirSync(dirname(dst), { recursive: true });
    if (existsSync(dst)) return;
    try {
      linkSync(src, dst);
    } catch {
      copyFileSync(src, dst); // another file system
    }
  }
}

/** Copies a file that a library path names, resolving the symlink chain so the target exists too. */
function mirrorResolved(path: string, stage: string): void {
  let p = path;
  for (let i = 0; i < 8; i++) {
    mirror(p, join(stage, p));
    const st = lstatSync(p);
    if (!st.isSymbolicLink()) return;
    p = resolve(dirname(p), readlinkSync(p));
  }
}

/** Total bytes of regular files under `dir` (hard links counted once per name: an upper bound). */
function treeBytes(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) n += treeBytes(p) + 4096;
    else n += st.size + 4096;
  }
  return n;
}

export interface RootDiskOptions {
  assets: BoxAssets;
  /** The project root on the host; it appears at the same path inside. */
  projectRoot: string;
  command: BoxCommand;
  /** Host files or folders a command names; each appears at its absolute path inside. */
  extraPaths?: string[];
  /** A fresh, empty folder to build in. */
  workDir: string;
}

/** Stages and writes the root disk; returns the image's path. */
export function buildRootDisk(o: RootDiskOptions): string {
  const stage = join(o.workDir, "root");
  for (const d of ["proc", "sys", "dev", "tmp", "root", "run", "box", "bin", "usr/local/bin", "etc"]) mkdirSync(join(stage, d), { recursive: true });
  const node = o.assets.node ?? process.execPath;
  mirror(node, join(stage, "usr/bin/node"));
  for (const lib of sharedLibraries(node)) mirrorResolved(lib, stage);
  mirror(o.assets.busybox, join(stage, "bin/busybox"));
  // e2fsprogs and iproute2's ip at their host paths, for KVM tests that build and read ext4 images
  // inside (the starter image's test runs `typervisor image build`, which uses mke2fs -d, and reads
  // the root disk back with debugfs) and that put a TAP in a network namespace (ip netns). The box
  // runs only where mke2fs exists (boxUnavailable). tmux (and the terminal descriptions it reads)
  // is the terminal a person would use, for the console test (src/image/console-kvm.test.ts). GNU
  // time reads a process's max RSS for `bench:start --memory-only` (busybox's applet prints ru_maxrss
  // times 4).
  for (const name of HOST_TOOLS) {
    const tool = findTool(name);
    if (tool === undefined) continue;
    mirrorResolved(tool, stage);
    for (const lib of sharedLibraries(tool)) mirrorResolved(lib, stage);
  }
  mirror("/etc/mke2fs.conf", join(stage, "etc/mke2fs.conf"));
  mirror("/lib/terminfo", join(stage, "lib/terminfo"));
  // tmux refuses to start without a UTF-8 locale; glibc's C.UTF-8 (Debian's libc-bin) is enough.
  mirror("/usr/lib/locale/C.utf8", join(stage, "usr/lib/locale/C.utf8"));
  // busybox's applets are installed by /box/init; /bin/sh must exist before that.
  symlinkSync("busybox", join(stage, "bin/sh"));
  // The project appears at its host path. Under /tmp (a tmpfs inside) it is staged at /box/project
  // and bind-mounted there by /box/init (/box/mounts), so a checkout in /tmp runs in the box too.
  const projectUnderTmp = o.projectRoot === "/tmp" || o.projectRoot.startsWith("/tmp/");
  const projectStage = projectUnderTmp ? join(stage, BOX_PROJECT) : join(stage, o.projectRoot);
  for (const e of PROJECT_ENTRIES) {
    const skip = e === "node_modules" ? (r: string) => SKIPPED_MODULES.has(r) : undefined;
    mirror(join(o.projectRoot, e), join(projectStage, e), skip);
  }
  if (projectUnderTmp) {
    mkdirSync(join(stage, "box"), { recursive: true });
    writeFileSync(join(stage, "box/mounts"), `mkdir -p ${shQuote(o.projectRoot)} && mount -o bind ${BOX_PROJECT_PATH} ${shQuote(o.projectRoot)}\n`);
  }
  writeFileSync(join(stage, "usr/local/bin/typervisor"), `#!/bin/sh\nexec /usr/bin/node ${shQuote(join(o.projectRoot, "bin/typervisor.js"))} "$@"\n`, { mode: 0o755 });
  for (const p of o.extraPaths ?? []) {
    const abs = resolve(p);
    if (abs === "/" || relative(o.projectRoot, abs).startsWith("..") === false) continue; // inside the project already
    // /tmp is a tmpfs inside: what is carried there is staged apart and copied in by /box/init.
    mirror(abs, abs === "/tmp" || abs.startsWith("/tmp/") ? join(stage, "box", abs) : join(stage, abs));
  }
  writeFileSync(join(stage, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  writeFileSync(join(stage, "etc/group"), "root:x:0:\n");
  writeFileSync(join(stage, "etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n");
  writeFileSync(join(stage, "box/init"), rootInit(), { mode: 0o755 });
  writeFileSync(join(stage, "box/env"), envFile(o.command));
  writeFileSync(join(stage, "box/command"), `${o.command.shell}\n`);
  // Room for what the guest writes outside /tmp (tmpfs): a quarter more than the files, plus 256 MiB.
  const mib = Math.ceil((treeBytes(stage) * 1.25) / 2 ** 20) + 256;
  const image = join(o.workDir, "root.ext4");
  try {
    execFileSync("mke2fs", ["-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", "-d", stage, image, `${mib}M`], { stdio: ["ignore", "ignore", "pipe"] });
  } catch (e) {
    const err = e as { code?: string; stderr?: Buffer };
    if (err.code === "ENOENT") throw new Error("mke2fs is missing: install e2fsprogs");
    throw new Error(`mke2fs -d failed: ${String(err.stderr ?? e).trim().split("\n").pop()}`);
  }
  return image;
}

/** Size of a file, for progress lines. */
export const fileMiB = (p: string): string => `${(statSync(p).size / 2 ** 20).toFixed(0)} MiB`;
