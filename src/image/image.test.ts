// Unit tests of `typervisor image build`'s pieces that need no VM: the initrd's file list, module
// order and /init, the root disk's scripts (run here with the host's sh against fake /proc and
// /sys files), the cpio (unpacked with GNU cpio), the root disk itself (read back with debugfs),
// the printed command, and the CLI's exit statuses. What needs Debian's packages uses the
// repository's cache (<repo>/.cache) and skips, saying why, when they cannot be fetched.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { IMAGE_MODULES, INITRD_TAG, PARTUUID_FN, initrdEntries, initrdInit } from "./initramfs.js";
import { INITTAB, LIB_SH, RESIZE, ROOTFS_LABEL, TEST, TEST_MARKER_PATH, busyboxApplets, findTool, rootfsFiles, stageRootfs, writeExt4 } from "./rootfs.js";
import { buildImage, defaultCacheDir, runCommand, IMAGE_FILES } from "./build.js";
import { moduleDepends, indexModules, resolveModules } from "./modules.js";
import { S_IFDIR, S_IFREG } from "../initramfs/cpio.js";
import { failureReason, fetchDebianKernel, fetchDebianPackageFile, kernelModulesDir, DEBIAN_CACHE } from "../testing/debian.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));

function tmp(t: TestContext, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `script` with the host's sh; returns stdout (asserting exit status 0 unless told). */
function sh(script: string, opts: { cwd?: string; status?: number } = {}): string {
  const r = spawnSync("sh", ["-c", script], { encoding: "utf8", cwd: opts.cwd });
  assert.equal(r.status, opts.status ?? 0, `sh exited ${r.status}: ${r.stderr}\n--- script ---\n${script}`);
  return r.stdout;
}

test("the initrd's entries: folders, busybox, the modules under lib/modules in the order given, /init last", () => {
  const bb = Uint8Array.of(1, 2, 3);
  const e = initrdEntries(bb, [
    { file: "virtio_ring.ko", data: Uint8Array.of(4) },
    { file: "virtio.ko", data: Uint8Array.of(5) },
  ]);
  assert.deepEqual(
    e.map((x) => x.name),
    ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules", "bin/busybox", "lib/modules/virtio_ring.ko", "lib/modules/virtio.ko", "init"],
  );
  for (const x of e.slice(0, 7)) assert.equal(x.mode, S_IFDIR | 0o755, x.name);
  assert.equal(e[7]!.mode, S_IFREG | 0o755);
  assert.equal(e.at(-1)!.mode, S_IFREG | 0o755);
  const init = new TextDecoder().decode(e.at(-1)!.data);
  assert.ok(init.indexOf("insmod /lib/modules/virtio_ring.ko") < init.indexOf("insmod /lib/modules/virtio.ko"), "insmod order is the list's");
});

test("initrd /init: modules before the root wait; root=, ro/rw, rootfstype=, init= parsed; every failure is one tagged line and a shell", () => {
  const s = initrdInit(["lib/modules/a.ko", "lib/modules/b.ko"]);
  assert.ok(s.startsWith("#!/bin/busybox sh\n"));
  const insA = s.indexOf("insmod /lib/modules/a.ko"), insB = s.indexOf("insmod /lib/modules/b.ko");
  assert.ok(insA > 0 && insA < insB && insB < s.indexOf("until find_root"), "insmod in order, before waiting for root");
  assert.match(s, /root=\/dev\/vda mode=ro fstype=ext4/, "defaults: /dev/vda, read-only (the kernel's default), ext4");
  assert.match(s, /insmod \/lib\/modules\/a\.ko \|\| rescue "insmod a failed"/);
  assert.match(s, new RegExp(`rescue\\(\\) \\{ echo "${INITRD_TAG}: \\$\\*; here is a shell`));
  assert.match(s, /mount -t "\$fstype" -o "\$mode\$\{flags:\+,\$flags\}" "\$dev_root" \/newroot \|\| rescue/);
  assert.match(s, /exec switch_root \/newroot "\$init"\n$/);
});

test("initrd /init parses the kernel command line as the kernel does (sh on the host)", (t) => {
  const dir = tmp(t, "image-init-");
  const init = initrdInit([]);
  // Just the parsing part: from the defaults line to `set +f` and the rootdelay check.
  const parse = init.slice(init.indexOf("root=/dev/vda mode=ro"), init.indexOf("find_root() {"));
  const run = (cmdline: string): string => {
    writeFileSync(join(dir, "cmdline"), `${cmdline}\n`);
    return sh(`${parse.replace("/proc/cmdline", join(dir, "cmdline"))}\necho "$root $mode $fstype $flags $init $wait"`).trim();
  };
  assert.equal(run("console=ttyS0 reboot=k"), "/dev/vda ro ext4  /sbin/init 30");
  assert.equal(run("root=/dev/vdb rw rootfstype=ext2 rootflags=noatime init=/bin/sh rootdelay=5"), "/dev/vdb rw ext2 noatime /bin/sh 5");
  assert.equal(run("rw root=PARTUUID=1a2b3c4d-01 ro rootdelay=x*"), "PARTUUID=1a2b3c4d-01 ro ext4  /sbin/init 30", "last ro/rw wins; a bad rootdelay is ignored; no glob expansion");
});

test("initrd partuuid_dev finds a partition by MBR and GPT PARTUUID (sh on the host, a fake /sys and /dev)", (t) => {
  const dir = tmp(t, "image-partuuid-");
  const sys = join(dir, "sys"), dev = join(dir, "dev");
  mkdirSync(join(sys, "devices/vda/vda1"), { recursive: true });
  mkdirSync(join(sys, "devices/vdb/vdb2"), { recursive: true });
  mkdirSync(join(sys, "block/vdb/queue"), { recursive: true });
  mkdirSync(join(sys, "class/block"), { recursive: true });
  mkdirSync(dev);
  writeFileSync(join(sys, "devices/vda/vda1/partition"), "1\n");
  writeFileSync(join(sys, "devices/vdb/vdb2/partition"), "2\n");
  writeFileSync(join(sys, "block/vdb/queue/logical_block_size"), "512\n");
  symlinkSync("../../devices/vda/vda1", join(sys, "class/block/vda1"));
  symlinkSync("../../devices/vdb/vdb2", join(sys, "class/block/vdb2"));
  // vda: an MBR with disk signature 0x1a2b3c4d (little-endian at byte 440).
  const mbr = Buffer.alloc(4096);
  mbr.writeUInt32LE(0x1a2b3c4d, 440);
  writeFileSync(join(dev, "vda"), mbr);
  // vdb: a GPT whose entries start at LBA 2, 128 bytes each; entry 2's unique GUID at +16.
  const gpt = Buffer.alloc(8192);
  gpt.write("EFI PART", 512, "latin1");
  gpt.writeBigUInt64LE(2n, 512 + 72);
  gpt.writeUInt32LE(128, 512 + 84);
  const guid = Buffer.from([0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
  guid.copy(gpt, 2 * 512 + 128 + 16);
  writeFileSync(join(dev, "vdb"), gpt);
  const find = (id: string, status = 0): string => sh(`sys=${sys} dev=${dev}\n${PARTUUID_FN}\npartuuid_dev ${id}`, { status }).trim();
  assert.equal(find("1A2B3C4D-01"), `${dev}/vda1`);
  assert.equal(find("12345678-9abc-def0-0123-456789abcdef"), `${dev}/vdb2`);
  assert.equal(find("1a2b3c4d-02", 1), "");
});

test("rootfs lib.sh: cmdline_value, ip= fields, and the network commands net_up runs (sh on the host)", (t) => {
  const dir = tmp(t, "image-lib-");
  mkdirSync(join(dir, "sys/class/net/eth0"), { recursive: true });
  const run = (cmdline: string, body: string, status = 0): string => {
    writeFileSync(join(dir, "cmdline"), `${cmdline}\n`);
    return sh(`sys=${dir}/sys cmdline=${dir}/cmdline run=echo\n${LIB_SH}\n${body}`, { status });
  };
  assert.equal(run("a=1 typervisor.test=marker:x b a=2", 'echo "$(cmdline_value a) $(cmdline_value typervisor.test) [$(cmdline_value c)]"'), "2 marker:x []\n");
  assert.equal(
    run("ip=10.0.0.2::10.0.0.1:255.255.255.0:vm1:eth0:off:10.0.0.53", 'ip_fields "$(cmdline_value ip)"; echo "$ip_client|$ip_gw|$ip_mask|$ip_host|$ip_dev|$ip_dns0"'),
    "10.0.0.2|10.0.0.1|255.255.255.0|vm1|eth0|10.0.0.53\n",
  );
  assert.equal(
    run("ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off:10.0.0.53:10.0.0.54", 'net_up "$(cmdline_value ip)"'),
    "ifconfig eth0 10.0.0.2 netmask 255.255.255.0 up\nroute add default gw 10.0.0.1 dev eth0\nsh -c echo nameserver 10.0.0.53 >> /run/resolv.conf\nsh -c echo nameserver 10.0.0.54 >> /run/resolv.conf\n",
  );
  assert.equal(run("ip=192.168.1.5", 'net_up "$(cmdline_value ip)"'), "ifconfig eth0 192.168.1.5 up\n", "no mask, no gateway; the device defaults to eth0");
  assert.equal(run("ip=off", 'net_up "$(cmdline_value ip)"'), "");
  assert.match(run("ip=dhcp", 'net_up "$(cmdline_value ip)" || echo failed'), /static addresses only.*\nfailed\n$/);
  assert.match(run("ip=10.0.0.2::::vm:eth1:off", 'net_up "$(cmdline_value ip)" || echo failed'), /names eth1, which this VM does not have.*\nfailed\n$/);
});

test("rootfs: busybox init's table, the test hook, and poweroff as a reboot", () => {
  assert.match(INITTAB, /^::sysinit:\/etc\/init\.d\/rcS$/m);
  assert.match(INITTAB, /^ttyS0::respawn:\/etc\/typervisor\/console$/m);
  assert.match(INITTAB, /^::shutdown:\/bin\/umount -a -r$/m, "root goes read-only at shutdown (ext4 checkpoints its journal)");
  const files = new Map(rootfsFiles().map((f) => [f.path, f]));
  assert.match(files.get("etc/typervisor/console")!.text, /t=\$\(cmdline_value typervisor\.test\)\n\[ -n "\$t" \] && exec \/etc\/typervisor\/test "\$t"/);
  assert.match(TEST, new RegExp(`echo "\\$m" > ${TEST_MARKER_PATH} && sync`));
  assert.match(TEST, /\nreboot\n/, "the test reboots through init (a clean unmount), not with -f");
  assert.match(files.get("sbin/poweroff")!.text, /exec \/bin\/busybox reboot "\$@"/);
  for (const f of rootfsFiles()) assert.ok(f.text.endsWith("\n"), f.path);
});

test("findTool looks on PATH, then in /usr/sbin and /sbin, and passes over busybox applets of the same name", (t) => {
  const dir = tmp(t, "image-tool-");
  mkdirSync(join(dir, "a"));
  mkdirSync(join(dir, "b"));
  writeFileSync(join(dir, "a/busybox"), "");
  symlinkSync("busybox", join(dir, "a/mytool"));
  writeFileSync(join(dir, "b/mytool"), "");
  assert.equal(findTool("mytool", `${dir}/a:${dir}/b`), join(dir, "b/mytool"));
  assert.equal(findTool("mytool", `${dir}/a`), undefined);
  assert.equal(findTool("no-such-tool-here", ""), undefined);
});

test("runCommand prints the typervisor run command for the folder, relative to the working folder when inside it", () => {
  assert.equal(runCommand("typervisor-image", "/home/u"), "typervisor run --kernel typervisor-image/vmlinuz --initrd typervisor-image/initrd.img --drive path=typervisor-image/rootfs.ext4,root --mem 256");
  assert.equal(runCommand("/srv/my image", "/home/u"), "typervisor run --kernel '/srv/my image/vmlinuz' --initrd '/srv/my image/initrd.img' --drive path='/srv/my image/rootfs.ext4',root --mem 256");
  assert.equal(defaultCacheDir({ XDG_CACHE_HOME: "/c" }), "/c/typervisor");
  assert.match(defaultCacheDir({}), /\/\.cache\/typervisor$/);
});

/** Debian's kernel and busybox from the repository's cache, or a skip saying why. */
function packages(t: TestContext): { vmlinuz: string; busybox: string } | undefined {
  try {
    return { vmlinuz: fetchDebianKernel(), busybox: fetchDebianPackageFile("busybox-static", /^bin\/busybox$/) };
  } catch (e) {
    t.skip(`Debian's packages could not be fetched: ${failureReason(e)}`);
    return undefined;
  }
}

test("the cloud kernel's modules for the initrd: every one named, each after what it depends on", (t) => {
  const p = packages(t);
  if (p === undefined) return;
  const order = resolveModules(IMAGE_MODULES, indexModules(kernelModulesDir(p.vmlinuz)));
  const names = order.map((m) => m.replace(/^.*\//, "").replace(/\.ko$/, ""));
  for (const m of IMAGE_MODULES) assert.ok(names.includes(m), `${m} is in the initrd`);
  order.forEach((path, i) => {
    for (const dep of moduleDepends(readFileSync(path))) assert.ok(names.indexOf(dep) >= 0 && names.indexOf(dep) < i, `${names[i]} after ${dep}`);
  });
});

test("image build: the initrd unpacks with GNU cpio; the root disk is ext4, owned by root, with busybox init (debugfs)", (t) => {
  const p = packages(t);
  if (p === undefined) return;
  for (const tool of ["cpio", "mke2fs", "debugfs"]) {
    const has = tool === "cpio" ? spawnSync("cpio", ["--version"]).error === undefined : findTool(tool) !== undefined;
    if (!has) return t.skip(`${tool} is not installed (apt-get install ${tool === "cpio" ? "cpio" : "e2fsprogs"})`);
  }
  const dir = tmp(t, "image-build-");
  const out = join(dir, "out");
  const lines: string[] = [];
  const image = buildImage({ outDir: out, cacheDir: DEBIAN_CACHE, onProgress: (l) => lines.push(l) });
  assert.ok(lines.some((l) => l.includes("initrd.img")) && lines.some((l) => l.includes("rootfs.ext4")), lines.join("\n"));
  assert.deepEqual(readFileSync(image.kernel), readFileSync(p.vmlinuz), "vmlinuz is the package's");
  assert.equal(image.kernel, join(out, IMAGE_FILES.kernel));

  const unpacked = join(dir, "initrd");
  mkdirSync(unpacked);
  const list = sh(`cpio -t --quiet < ${join(out, "initrd.img")}`).trim().split("\n");
  assert.deepEqual(list.slice(0, 8), ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules", "bin/busybox"]);
  assert.deepEqual(list.slice(8, -1), image.modules.map((m) => `lib/modules/${m}`));
  assert.equal(list.at(-1), "init");
  sh(`cpio -idm --quiet < ${join(out, "initrd.img")}`, { cwd: unpacked });
  assert.deepEqual(readFileSync(join(unpacked, "bin/busybox")), readFileSync(p.busybox));
  assert.equal(readFileSync(join(unpacked, "init"), "utf8"), initrdInit(image.modules.map((m) => `lib/modules/${m}`)));
  assert.equal(statSync(join(unpacked, "init")).mode & 0o777, 0o755);

  const debugfs = (req: string): string => {
    const r = spawnSync(findTool("debugfs")!, ["-R", req, image.rootfs], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const sb = spawnSync(findTool("debugfs")!, ["-R", "stats", image.rootfs], { encoding: "utf8" }).stdout;
  assert.match(sb, new RegExp(`Filesystem volume name:\\s+${ROOTFS_LABEL}`));
  assert.match(sb, /Filesystem features:.*\bextent\b/, "ext4 (extents)");
  assert.equal(debugfs("cat /etc/inittab"), INITTAB);
  assert.equal(debugfs("cat /etc/typervisor/test"), TEST);
  assert.match(debugfs("stat /sbin/init"), /Type: symlink[\s\S]*Fast link dest: "\/bin\/busybox"/);
  assert.match(debugfs("stat /sbin/poweroff"), /Type: regular/, "poweroff is our script, not the applet");
  assert.match(debugfs("stat /etc/passwd"), /User:\s+0\s+Group:\s+0/);
  assert.match(debugfs("stat /bin/busybox"), /Mode:\s+0755[\s\S]*User:\s+0\s+Group:\s+0/);
});

test("rootfs staging: every applet links to /bin/busybox; our scripts replace poweroff and halt", (t) => {
  const p = packages(t);
  if (p === undefined) return;
  const applets = busyboxApplets(p.busybox);
  assert.ok(applets.includes("bin/sh") && applets.includes("sbin/init") && applets.includes("sbin/ifconfig"), "busybox --list-full names sh, init, ifconfig");
  const dir = tmp(t, "image-stage-");
  stageRootfs(dir, p.busybox, applets);
  assert.equal(spawnSync("readlink", [join(dir, "bin/sh")], { encoding: "utf8" }).stdout.trim(), "/bin/busybox");
  assert.ok(statSync(join(dir, "sbin/poweroff")).isFile());
  assert.throws(() => writeExt4(join(dir, "missing"), join(dir, "x.ext4")), /mke2fs -t ext4 -d failed/);
});

test("a root disk built by a user other than root is still owned by root inside (debugfs sets uid and gid 0)", (t) => {
  const p = packages(t);
  if (p === undefined) return;
  if (findTool("mke2fs") === undefined || findTool("debugfs") === undefined) return t.skip("mke2fs and debugfs are missing: install Debian's e2fsprogs");
  const dir = tmp(t, "image-user-");
  const image = join(dir, "rootfs.ext4");
  const build = `import { busyboxApplets, stageRootfs, writeExt4 } from ${JSON.stringify(join(ROOT, "dist/image/rootfs.js"))};
    const [bb, stage, image] = process.argv.slice(1);
    stageRootfs(stage, bb, busyboxApplets(bb));
    writeExt4(stage, image);`;
  const args = ["--input-type=module", "-e", build, p.busybox, join(dir, "stage"), image];
  if (process.getuid?.() === 0) {
    // As root, the build runs as nobody: its staged files are nobody's, which mke2fs -d copies.
    spawnSync("chmod", ["0777", dir]);
    const r = spawnSync(process.execPath, args, { uid: 65534, gid: 65534, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
  } else {
    const r = spawnSync(process.execPath, args, { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
  }
  const stat = (path: string) => spawnSync(findTool("debugfs")!, ["-R", `stat ${path}`, image], { encoding: "utf8" }).stdout;
  for (const path of ["/", "/etc/passwd", "/bin/busybox", "/bin/sh", "/etc/init.d", "/etc/typervisor/test"]) assert.match(stat(path), /User:\s+0\s+Group:\s+0\s/, path);
});

test("typervisor image: bad arguments exit 2; a package that cannot be fetched exits 4 with one line", (t) => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = process.env) => spawnSync(process.execPath, [join(ROOT, "bin/typervisor.js"), "image", ...args], { encoding: "utf8", env, timeout: 60_000 });
  let r = cli(["build", "--bogus"]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^typervisor: image: Unknown option '--bogus'\n$/);
  r = cli([]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /image build/);
  r = cli(["--help"]);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^Usage: typervisor image build/);
  // An empty cache and no apt on PATH: the kernel cannot be fetched.
  const dir = tmp(t, "image-cli-");
  r = cli(["build", "--out", join(dir, "out"), "--cache-dir", join(dir, "cache")], { ...process.env, PATH: join(dir, "nothing") });
  assert.equal(r.status, 4, r.stderr);
  assert.equal(r.stderr.trim().split("\n").filter((l) => l.startsWith("typervisor:")).length, 1, r.stderr);
  assert.match(r.stderr, /typervisor: image: apt-cache depends linux-image-cloud-amd64 failed .*ENOENT.*apt-get update failed/);
  assert.equal(r.stdout, "", "no run command when nothing was built");
});

test("resize: asks the terminal for its size (CSI 6n on the terminal itself, not stdout) and gives it to the tty; a stale answer is dropped; under a pseudo-terminal with the image's busybox", (t) => {
  const p = packages(t);
  if (p === undefined) return;
  // util-linux's script(1) runs the command on a new pseudo-terminal and forwards its own stdin to
  // it: what a terminal would answer is written there. First a stale answer to an earlier question
  // (a line editor's, CSI 3;15 R), already waiting when resize starts; then the answer to
  // resize's own question (CSI 41;133 R).
  if (spawnSync("script", ["--version"]).error !== undefined) return t.skip("script(1) is not installed (apt-get install bsdutils)");
  const dir = tmp(t, "tv-resize-");
  for (const a of ["sh", "stty", "printf"]) symlinkSync(p.busybox, join(dir, a));
  writeFileSync(join(dir, "resize"), RESIZE, { mode: 0o755 });
  const inner = (after: string) => `PATH=${dir} ${dir}/sh ${dir}/resize >/dev/null${after}; echo "size=$(PATH=${dir} ${dir}/stty size)"`;
  const answers = `printf '\\033[3;15R'; sleep 1; printf '\\033[41;133R'`;
  const r = spawnSync("sh", ["-c", `(${answers}) | script -qfec '${inner("")}' /dev/null`], { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.includes("\x1b7\x1b[999;999H\x1b[6n\x1b8"), `the question reached the terminal with stdout elsewhere: ${JSON.stringify(r.stdout)}`);
  assert.match(r.stdout, /size=41 133/, `the tty took the size of the answer to resize's own question: ${JSON.stringify(r.stdout)}`);

  // No answer: a clear line and status 1, the tty's size left alone.
  const silent = spawnSync("sh", ["-c", `sleep 6 | script -qfec '${inner(" || echo status=$?")}' /dev/null`], { encoding: "utf8", timeout: 20_000 });
  assert.match(silent.stdout, /resize: the terminal did not say its size/);
  assert.match(silent.stdout, /status=1/);
});
