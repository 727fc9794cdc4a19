// The starter image's root disk: an ext4 image made with `mke2fs -t ext4 -d` (e2fsprogs) from a
// staged folder holding a static busybox and its applet links, busybox init with an inittab, and
// the scripts below. At boot (rcS): proc, sys, dev, tmpfs on /tmp and /run, the hostname, `lo`,
// and eth0 from the kernel command line's `ip=` (the cloud kernel has no CONFIG_IP_PNP, and
// virtio_net is a module anyway, so the kernel never applies ip= itself). Then ttyS0 gets a
// shell, or the test that `typervisor.test=` asks for. `reboot` ends the VM through the i8042
// (reboot=k); so does `poweroff` here (see POWEROFF).

import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, delimiter, dirname, join } from "node:path";
import { failureReason } from "./debian.js";

/** A host tool is missing or failed; the message is one line. */
export class ImageToolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ImageToolError";
  }
}

/** Size of rootfs.ext4: busybox takes ~2 MiB; the rest is room for what a user puts there. */
export const ROOTFS_MIB = 64;
/** The file system label (so `root=LABEL=typervisor-root` finds it too). */
export const ROOTFS_LABEL = "typervisor-root";
/** Where `typervisor.test=marker:<token>` writes its token, on the root disk. */
export const TEST_MARKER_PATH = "/typervisor-test-marker";
/** The line the test prints once the marker is written and synced. */
export const TEST_WROTE = "typervisor.test: marker written";

/** Shell functions the rootfs scripts share (/etc/typervisor/lib.sh). `sys` and `cmdline` may be preset (the unit test does). */
export const LIB_SH = `# Shared by rcS, the console and the test: the kernel command line and ip=.
: "\${sys:=/sys}" "\${cmdline:=/proc/cmdline}"

# cmdline_value KEY: the value of the last KEY=VALUE on the kernel command line ("" when none).
cmdline_value() {
  _v=
  set -f
  for _a in $(cat "$cmdline"); do
    case $_a in "$1="*) _v=\${_a#"$1="} ;; esac
  done
  set +f
  echo "$_v"
}

# ip_fields VALUE: the kernel's ip= fields (Documentation/admin-guide/nfs/nfsroot.rst):
# <client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>
ip_fields() {
  _ifs=$IFS; IFS=:; set -f
  set -- $1
  IFS=$_ifs; set +f
  ip_client=$1 ip_gw=$3 ip_mask=$4 ip_host=$5 ip_dev=\${6:-eth0} ip_dns0=$8 ip_dns1=$9
}

# net_up VALUE: configures the device ip= names (static addresses only); $run prefixes each
# command (the unit test sets run=echo).
net_up() {
  ip_fields "$1"
  case $ip_client in
    ""|off|none) return 0 ;;
    on|any|dhcp|bootp|rarp|both)
      echo "typervisor: ip=$ip_client: this image sets static addresses only (ip=<client>::<gw>:<netmask>::eth0:off)"
      return 1 ;;
  esac
  if [ ! -e "$sys/class/net/$ip_dev" ]; then
    echo "typervisor: ip= names $ip_dev, which this VM does not have (no virtio-net device)"
    return 1
  fi
  $run ifconfig "$ip_dev" "$ip_client" \${ip_mask:+netmask "$ip_mask"} up || return 1
  if [ -n "$ip_gw" ]; then $run route add default gw "$ip_gw" dev "$ip_dev" || return 1; fi
  for _d in $ip_dns0 $ip_dns1; do $run sh -c "echo nameserver $_d >> /run/resolv.conf"; done
  return 0
}
`;

/** /etc/init.d/rcS: busybox init's sysinit. */
export const RCS = `#!/bin/sh
# Typervisor starter image: file systems, hostname, network from ip=.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The initrd moves its devtmpfs here; a root booted without it mounts one.
grep -q "^devtmpfs /dev " /proc/mounts || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
. /etc/typervisor/lib.sh
ipconf=$(cmdline_value ip)
ip_fields "$ipconf"
hostname "\${ip_host:-$(cat /etc/hostname)}"
ifconfig lo 127.0.0.1 up
if [ -n "$ipconf" ] && net_up "$ipconf"; then
  case $ip_client in ""|off|none) ;; *) echo "typervisor: $ip_dev up: mac $(cat "/sys/class/net/$ip_dev/address") address $ip_client" ;; esac
fi
echo "typervisor: $(hostname) up ($(uname -r)); root shell on ttyS0; reboot or poweroff ends the VM"
`;

/** /etc/typervisor/console: what busybox init runs (and respawns) on ttyS0. */
export const CONSOLE = `#!/bin/sh
# The shell on ttyS0, or the test the kernel command line asks for (typervisor.test=...).
. /etc/typervisor/lib.sh
t=$(cmdline_value typervisor.test)
[ -n "$t" ] && exec /etc/typervisor/test "$t"
cd /root
# A serial line carries no window size: ask the terminal for it (resize) before the shell starts.
[ -t 0 ] && resize >/dev/null
exec sh -l
`;

/**
 * /usr/bin/resize (busybox has none): a serial console carries no window size, so ask the terminal
 * at the other end, as xterm's resize does — save the cursor, move it to the far corner, ask where
 * it is (ECMA-48 §8.3.35 DSR, CSI 6 n; the answer is CPR, CSI <row> ; <col> R, §8.3.14), restore
 * the cursor, and give the size to the tty (stty rows/cols). The question goes to the terminal
 * itself (fd 0, open read-write), whatever stdout is; answers to earlier questions still waiting
 * (busybox's line editor asks for the cursor too) are dropped first. Prints the shell
 * assignments, as xterm's does; run it again after resizing the window.
 */
export const RESIZE = `#!/bin/sh
[ -t 0 ] || { echo "resize: standard input is not a terminal" >&2; exit 1; }
old=$(stty -g)
stty raw -echo
while IFS= read -r -t 0.2 -n 1 _; do :; done
printf '\\0337\\033[999;999H\\033[6n\\0338' >&0
answer=
while IFS= read -r -t 3 -n 1 c; do
  answer="$answer$c"
  [ "$c" = R ] && break
done
stty "$old"
answer=\${answer##*[}
rows=\${answer%;*} cols=\${answer%R}
cols=\${cols#*;}
case "$rows:$cols" in
  :*|*:|*[!0-9:]*) echo "resize: the terminal did not say its size" >&2; exit 1 ;;
esac
stty rows "$rows" cols "$cols"
echo "COLUMNS=$cols; LINES=$rows; export COLUMNS LINES;"
`;

/**
 * /etc/typervisor/test: `marker:<token>` writes the token to TEST_MARKER_PATH, syncs and reboots
 * through init (which unmounts, leaving a clean file system a host can read), so a host that
 * finds the token in the image knows that the root disk was mounted read-write and that writes,
 * sync and the reboot path work.
 */
export const TEST = `#!/bin/sh
case $1 in
  marker:*)
    m=\${1#marker:}
    case $m in
      ""|*[!A-Za-z0-9_-]*) echo "typervisor.test: the marker must be letters, digits, _ or -: $m" ;;
      *) if echo "$m" > ${TEST_MARKER_PATH} && sync; then echo "${TEST_WROTE}"; else echo "typervisor.test: could not write ${TEST_MARKER_PATH}"; fi ;;
    esac ;;
  net:*)
    # net:<host>:<port>:<MiB>: ping the host; read <MiB> MiB from <host>:<port> and send <MiB> MiB
    # of random bytes to <host>:<port+1>, printing the SHA-256 of both for the host to compare.
    a=\${1#net:}; host=\${a%%:*}; a=\${a#*:}; port=\${a%%:*}; mib=\${a#*:}
    echo "typervisor.test: eth0 mac=$(cat /sys/class/net/eth0/address 2>/dev/null) $(ifconfig eth0 2>/dev/null | grep -o 'inet addr:[0-9.]*')"
    n=0
    until ping -c 1 -W 2 "$host" >/dev/null 2>&1; do
      n=$((n + 1)); [ $n -ge 60 ] && break
      echo "typervisor.test: waiting for $host ($n)"; sleep 1
    done
    if [ $n -ge 60 ]; then echo "typervisor.test: no answer from $host"; else
      echo "typervisor.test: ping ok $(ping -c 3 -W 2 "$host" | grep -c 'bytes from')/3"
      nc "$host" "$port" > /tmp/net-rx
      echo "typervisor.test: rx bytes=$(wc -c < /tmp/net-rx) sha256=$(sha256sum < /tmp/net-rx | cut -d' ' -f1)"
      head -c $((mib * 1048576)) /dev/urandom > /tmp/net-tx
      echo "typervisor.test: tx bytes=$(wc -c < /tmp/net-tx) sha256=$(sha256sum < /tmp/net-tx | cut -d' ' -f1)"
      nc "$host" $((port + 1)) < /tmp/net-tx
      echo "typervisor.test: tx sent"
    fi ;;
  run:*)
    # run:<program>[:<arg>...]: a program on the root disk (a test puts it there), its status printed.
    a=\${1#run:}
    set -- $(echo "$a" | tr ':' ' ')
    "$@"
    echo "typervisor.test: run status=$?" ;;
  *) echo "typervisor.test: unknown test $1 (this image knows marker:<token>, net:<host>:<port>:<MiB> and run:<program>[:<arg>...])" ;;
esac
reboot
sleep 60
echo "typervisor.test: reboot did not end the VM within 60 s; forcing it"
reboot -f
`;

/**
 * /sbin/poweroff and /sbin/halt. This machine offers no ACPI power-off yet (its FADT declares no
 * sleep control register and the DSDT no \_S5), so the kernel's power-off would only halt the
 * vCPU and leave the VM running; a reboot ends it (reboot=k), with the same clean shutdown.
 */
export const POWEROFF = `#!/bin/sh
# No ACPI power-off on this machine yet: a reboot ends the VM (reboot=k) with the same clean shutdown.
exec /bin/busybox reboot "$@"
`;

/** busybox init's table: sysinit, the console, Ctrl-Alt-Del, and a read-only root at shutdown. */
export const INITTAB = `::sysinit:/etc/init.d/rcS
ttyS0::respawn:/etc/typervisor/console
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
`;

/** Text files of the root disk, by path (no leading slash), with their modes. */
export function rootfsFiles(hostname = "typervisor"): Array<{ path: string; mode: number; text: string }> {
  return [
    { path: "etc/inittab", mode: 0o644, text: INITTAB },
    { path: "etc/init.d/rcS", mode: 0o755, text: RCS },
    { path: "etc/typervisor/lib.sh", mode: 0o644, text: LIB_SH },
    { path: "etc/typervisor/console", mode: 0o755, text: CONSOLE },
    { path: "etc/typervisor/test", mode: 0o755, text: TEST },
    { path: "usr/bin/resize", mode: 0o755, text: RESIZE },
    { path: "sbin/poweroff", mode: 0o755, text: POWEROFF },
    { path: "sbin/halt", mode: 0o755, text: POWEROFF },
    { path: "etc/hostname", mode: 0o644, text: `${hostname}\n` },
    { path: "etc/hosts", mode: 0o644, text: `127.0.0.1 localhost\n127.0.1.1 ${hostname}\n::1 localhost\n` },
    { path: "etc/passwd", mode: 0o644, text: "root:x:0:0:root:/root:/bin/sh\n" },
    { path: "etc/group", mode: 0o644, text: "root:x:0:\n" },
    { path: "etc/profile", mode: 0o644, text: 'export PATH=/sbin:/usr/sbin:/bin:/usr/bin HOME=/root\nPS1="$(hostname):\\w# "\n' },
  ];
}

/** Empty folders of the root disk. */
export const ROOTFS_DIRS = ["bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "etc/typervisor", "proc", "sys", "dev", "tmp", "run", "root", "var", "mnt"];

/**
 * A host tool by name: on PATH, or in /usr/sbin or /sbin (which a user's PATH often lacks on
 * Debian). A busybox applet of the same name is passed over: busybox's mke2fs makes ext2 only
 * and has no -d (the box installs busybox's applets in /bin).
 */
export function findTool(name: string, path = process.env["PATH"] ?? ""): string | undefined {
  for (const dir of [...path.split(delimiter).filter(Boolean), "/usr/sbin", "/sbin"]) {
    const p = join(dir, name);
    if (existsSync(p) && basename(realpathSync(p)) !== "busybox") return p;
  }
  return undefined;
}

function tool(name: string, pkg: string): string {
  const p = findTool(name);
  if (p === undefined) throw new ImageToolError(`${name} is missing: install Debian's ${pkg}`);
  return p;
}

/** busybox's applets as paths (bin/ls, sbin/ifconfig, ...), from the binary itself. */
export function busyboxApplets(busybox: string): string[] {
  let out: string;
  try {
    out = execFileSync(busybox, ["--list-full"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new ImageToolError(`${busybox} --list-full failed: ${failureReason(e)}`);
  }
  return out.split("\n").map((l) => l.trim().replace(/^\/+/, "")).filter((l) => /^[a-z0-9_./[-]+$/i.test(l) && !l.includes(".."));
}

/** Lays out the root disk's tree under `stage` (an empty folder). */
export function stageRootfs(stage: string, busybox: string, applets: readonly string[]): void {
  for (const d of ROOTFS_DIRS) mkdirSync(join(stage, d), { recursive: true });
  writeFileSync(join(stage, "bin/busybox"), readFileSync(busybox), { mode: 0o755 });
  for (const a of applets) {
    if (a === "bin/busybox") continue;
    mkdirSync(join(stage, dirname(a)), { recursive: true });
    if (lstatSync(join(stage, a), { throwIfNoEntry: false }) === undefined) symlinkSync("/bin/busybox", join(stage, a));
  }
  for (const f of rootfsFiles()) {
    rmSync(join(stage, f.path), { force: true }); // an applet link of the same name (poweroff, halt)
    mkdirSync(join(stage, dirname(f.path)), { recursive: true });
    writeFileSync(join(stage, f.path), f.text, { mode: f.mode });
  }
  // /run is a tmpfs at boot; the resolver's file lives there so a read-only root still gets DNS.
  symlinkSync("/run/resolv.conf", join(stage, "etc/resolv.conf"));
}

/** Every path under `stage` (relative, no leading slash), folders before what they hold. */
function treePaths(stage: string, rel = ""): string[] {
  const out: string[] = [];
  for (const n of readdirSync(join(stage, rel)).sort()) {
    const r = rel === "" ? n : `${rel}/${n}`;
    out.push(r);
    if (lstatSync(join(stage, r)).isDirectory()) out.push(...treePaths(stage, r));
  }
  return out;
}

/**
 * Writes `image` (ext4, ROOTFS_MIB) from `stage` with `mke2fs -d`. mke2fs copies each file's
 * owner; when a user other than root builds, debugfs then gives every inode to root (uid/gid 0),
 * as a root file system expects.
 */
export function writeExt4(stage: string, image: string, mib = ROOTFS_MIB): void {
  const mke2fs = tool("mke2fs", "e2fsprogs");
  const tmp = `${image}.tmp`;
  rmSync(tmp, { force: true });
  try {
    execFileSync(mke2fs, ["-q", "-F", "-t", "ext4", "-L", ROOTFS_LABEL, "-E", "root_owner=0:0", "-d", stage, tmp, `${mib}M`], { stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new ImageToolError(`mke2fs -t ext4 -d failed: ${failureReason(e)}`);
  }
  if (process.getuid?.() !== 0) {
    const debugfs = tool("debugfs", "e2fsprogs");
    const cmds = treePaths(stage).flatMap((p) => [`sif "/${p}" uid 0`, `sif "/${p}" gid 0`]);
    const cmdFile = `${image}.debugfs`;
    writeFileSync(cmdFile, `${cmds.join("\n")}\n`);
    try {
      execFileSync(debugfs, ["-w", "-f", cmdFile, tmp], { stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      rmSync(tmp, { force: true });
      throw new ImageToolError(`debugfs (setting owners to root) failed: ${failureReason(e)}`);
    } finally {
      rmSync(cmdFile, { force: true });
    }
  }
  renameSync(tmp, image);
}
