// The starter image's initrd: a newc cpio (src/initramfs/cpio.ts) holding a static busybox, the
// cloud kernel's virtio and vsock modules (which Debian builds as modules: CONFIG_VIRTIO=m,
// CONFIG_VIRTIO_MMIO=m, CONFIG_VSOCKETS=m) in insmod order, and /init. /init loads them, waits
// for the device that `root=` names (default /dev/vda), mounts it (`ro`/`rw`, `rootfstype=`,
// `rootflags=` as the kernel reads them; ext4 is built into the cloud kernel) and switch_roots to
// `init=` (default /sbin/init). Any failure prints one line starting "typervisor-initrd:" and
// drops to a shell on the console.

import { basename } from "node:path";
import { S_IFDIR, S_IFREG, writeCpio, type CpioEntry } from "../initramfs/cpio.js";

/**
 * What the guest needs from the machine, by module name; `resolveModules` adds what they depend
 * on (virtio, virtio_ring, net_failover, failover, vmw_vsock_virtio_transport_common). virtio_mmio
 * binds the LNRO0005 devices of the DSDT; virtio_blk, virtio_net and the vsock transport drive them.
 */
export const IMAGE_MODULES = ["virtio_mmio", "virtio_blk", "virtio_net", "vsock", "vmw_vsock_virtio_transport"] as const;

/** Seconds /init waits for the root device when the command line gives no `rootdelay=`. */
export const DEFAULT_ROOT_WAIT_S = 30;

/** The prefix of every line /init prints, so a console log is searchable. */
export const INITRD_TAG = "typervisor-initrd";

/**
 * `partuuid_dev ID` (POSIX sh, busybox applets): the /dev node of the partition whose PARTUUID is
 * ID, read from the partition tables themselves since nothing here runs udev. `sys`/`dev` name
 * sysfs and devtmpfs (the unit test points them at a fake disk).
 * - MBR, "SSSSSSSS-PP": the disk signature (little-endian u32 at byte 440) and the partition
 *   number in hex (block/partitions/msdos.c prints "%08x-%02x").
 * - GPT, a GUID: the header at LBA 1 ("EFI PART"; UEFI 2.10 §5.3.2: partition entry LBA at
 *   offset 72, entry size at 84), entry n-1's unique partition GUID at offset 16, whose first
 *   three fields are little-endian (UEFI 2.10 Appendix A, EFI_GUID).
 */
export const PARTUUID_FN = `partuuid_dev() {
  want=$(echo "$1" | tr A-F a-f)
  hex() { od -An -t"$1" -j"$2" -N"$3" "$4" | tr -d ' \\n'; }
  for p in "$sys"/class/block/*; do
    [ -f "$p/partition" ] || continue
    n=$(cat "$p/partition"); part=\${p##*/}
    disk=$(basename "$(readlink -f "$p/..")"); d=$dev/$disk
    if [ "$(hex x4 440 4 "$d")-$(printf %02x "$n")" = "$want" ]; then echo "$dev/$part"; return 0; fi
    bs=$(cat "$sys/block/$disk/queue/logical_block_size" 2>/dev/null || echo 512)
    [ "$(dd if="$d" bs=1 skip="$bs" count=8 2>/dev/null)" = "EFI PART" ] || continue
    lba=$(od -An -tu8 -j$((bs + 72)) -N8 "$d" | tr -d ' \\n'); esz=$(od -An -tu4 -j$((bs + 84)) -N4 "$d" | tr -d ' \\n')
    o=$((lba * bs + (n - 1) * esz + 16))
    g=$(hex x4 $o 4 "$d")-$(hex x2 $((o + 4)) 2 "$d")-$(hex x2 $((o + 6)) 2 "$d")-$(hex x1 $((o + 8)) 2 "$d")-$(hex x1 $((o + 10)) 6 "$d")
    if [ "$g" = "$want" ]; then echo "$dev/$part"; return 0; fi
  done
  return 1
}`;

/** The initrd's /init (busybox sh). `modules` are the archive paths of the .ko files, in insmod order. */
export function initrdInit(modules: readonly string[]): string {
  return [
    "#!/bin/busybox sh",
    "# Typervisor starter initrd: load the virtio modules, find root=, mount it, switch_root to init=.",
    "/bin/busybox --install -s /bin",
    "export PATH=/bin",
    "sys=/sys dev=/dev",
    "mount -t devtmpfs devtmpfs /dev",
    "mount -t proc proc /proc",
    "mount -t sysfs sysfs /sys",
    // One clear line, then a shell that owns the console (cttyhack finds the real tty behind
    // /dev/console so job control works); leaving it reboots (PID 1 exits: panic, panic=1).
    `rescue() { echo "${INITRD_TAG}: $*; here is a shell (exit reboots)"; exec setsid cttyhack sh; }`,
    PARTUUID_FN,
    // The kernel's own defaults (init/do_mounts.c): read-only unless `rw`; /sbin/init.
    `root=/dev/vda mode=ro fstype=ext4 flags= init=/sbin/init wait=${DEFAULT_ROOT_WAIT_S}`,
    "set -f",
    "for arg in $(cat /proc/cmdline); do",
    "  case $arg in",
    "    root=*) root=${arg#root=} ;;",
    "    rootfstype=*) fstype=${arg#rootfstype=} ;;",
    "    rootflags=*) flags=${arg#rootflags=} ;;",
    "    rootdelay=*) wait=${arg#rootdelay=} ;;",
    "    init=*) init=${arg#init=} ;;",
    "    ro) mode=ro ;;",
    "    rw) mode=rw ;;",
    "  esac",
    "done",
    "set +f",
    `case $wait in ""|*[!0-9]*) wait=${DEFAULT_ROOT_WAIT_S} ;; esac`,
    ...modules.map((m) => `insmod /${m} || rescue "insmod ${basename(m, ".ko")} failed"`),
    // virtio devices probe as their driver registers; the disk node may still take a moment.
    "find_root() {",
    "  case $root in",
    '    /dev/*) [ -b "$root" ] && dev_root=$root ;;',
    '    UUID=*|LABEL=*) dev_root=$(findfs "$root" 2>/dev/null) ;;',
    '    PARTUUID=*/*) rescue "root=$root: PARTNROFF is not supported by this initrd" ;;',
    '    PARTUUID=*) dev_root=$(partuuid_dev "${root#PARTUUID=}") ;;',
    '    *) rescue "root=$root is not a /dev path, UUID=, LABEL= or PARTUUID=" ;;',
    "  esac",
    '  [ -n "$dev_root" ]',
    "}",
    "dev_root= i=0",
    'until find_root; do [ $i -ge $((wait * 10)) ] && rescue "no root device $root after $wait s (is the drive given, with virtio_blk loaded?)"; sleep 0.1; i=$((i + 1)); done',
    "mkdir -p /newroot",
    'mount -t "$fstype" -o "$mode${flags:+,$flags}" "$dev_root" /newroot || rescue "cannot mount $dev_root ($fstype, $mode) on /newroot"',
    '[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || rescue "the root disk $dev_root has no $init"',
    "[ -d /newroot/dev ] && mount --move /dev /newroot/dev",
    "umount /proc /sys",
    'exec switch_root /newroot "$init"',
    "",
  ].join("\n");
}

export interface InitrdModule {
  /** The .ko file's name (e.g. virtio_mmio.ko). */
  file: string;
  data: Uint8Array;
}

/** The archive's entries: folders, busybox, the modules under lib/modules/ in insmod order, /init. */
export function initrdEntries(busybox: Uint8Array, modules: readonly InitrdModule[]): CpioEntry[] {
  const dirs = ["bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"];
  const entries: CpioEntry[] = dirs.map((name) => ({ name, mode: S_IFDIR | 0o755 }));
  entries.push({ name: "bin/busybox", mode: S_IFREG | 0o755, data: busybox });
  const names = modules.map((m) => `lib/modules/${m.file}`);
  modules.forEach((m, i) => entries.push({ name: names[i]!, mode: S_IFREG | 0o644, data: m.data }));
  entries.push({ name: "init", mode: S_IFREG | 0o755, data: new TextEncoder().encode(initrdInit(names)) });
  return entries;
}

/** The initrd as bytes (newc cpio). */
export function buildInitrd(busybox: Uint8Array, modules: readonly InitrdModule[]): Uint8Array {
  return writeCpio(initrdEntries(busybox, modules));
}
