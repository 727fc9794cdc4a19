// Integration test: a stock Debian cloud kernel (linux-image-cloud-amd64, a bzImage) boots on
// Typervisor to a busybox shell from an initramfs we build, reports what it sees, and reboots
// through the i8042 (reboot=k), which ends the VM with exit kind "reset".
//
// It needs hardware-KVM semantics (src/testing/kvm.ts runs it in the box elsewhere); it skips only
// when Debian's packages cannot be fetched, saying why. The module does no work at import time.

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S_IFDIR, S_IFREG, writeCpio } from "../initramfs/cpio.js";
import { debianKernelRelease, failureReason, fetchDebianKernel, fetchDebianPackageFile } from "../testing/debian.js";
import { Vm, type VmExit } from "./vm.js";
import { describeExit } from "./exit-report.js";
import { HOST_KVM, IN_BOX, kvmTests, meets } from "../testing/kvm.js";

const kvmTest = kvmTests(import.meta.url);

const MEM_MIB = 512;
/** A stock kernel boots in a few seconds on KVM; 120 s leaves room for a slow, shared host. */
const BOOT_TIMEOUT_MS = 120_000;
/**
 * console=ttyS0: the 8250 at 0x3f8 is our console. reboot=k: reboot through the i8042 (0xfe to
 * port 0x64), which the VMM reports as a reset. panic=1: a panic reboots after 1 s instead of
 * hanging until the timeout. pci=off: there is no PCI bus. rdinit=/init: run our script from the
 * initramfs. The i8042.* options are Firecracker's default command line
 * (src/vmm/src/vmm_config/boot_source.rs DEFAULT_KERNEL_CMDLINE): skip probing the aux port,
 * the multiplexer and PnP, and treat the controller as a plain keyboard.
 */
const CMDLINE = "console=ttyS0 reboot=k panic=1 pci=off rdinit=/init i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/**
 * /init: a busybox shell script. It installs the applets, mounts proc, prints one marker line
 * with `uname -r` and the CPU count, runs a command through `sh -c`, then reboots at once.
 */
export function initScript(marker: string): string {
  return [
    "#!/bin/busybox sh",
    "/bin/busybox --install -s /bin",
    "export PATH=/bin",
    // The kernel's built-in initramfs (usr/default_cpio_list) supplies /dev/console; if it was
    // not there, the console is reached through devtmpfs instead.
    "if [ ! -c /dev/console ]; then mount -t devtmpfs devtmpfs /dev; exec </dev/console >/dev/console 2>&1; fi",
    "mount -t proc proc /proc",
    "mkdir -p /sys; mount -t sysfs sysfs /sys",
    `echo "${marker} release=$(uname -r) cpus=$(grep -c '^processor' /proc/cpuinfo) online=$(cat /sys/devices/system/cpu/online)"`,
    // What ACPI described: PnP ids (COM1, the i8042) and the virtio-mmio platform devices (LNRO0005).
    `echo "${marker}-acpi pnp=$(cat /sys/bus/pnp/devices/*/id 2>/dev/null | sort | tr '\\n' ',') platform=$(ls /sys/bus/platform/devices | grep LNRO0005 | tr '\\n' ',')"`,
    `sh -c 'echo "${marker}-shell answer=$((6 * 7)) pid=$$"'`,
    // The tty layer sends userspace output to the UART by interrupts; give it time to drain before
    // the reset cuts it off (seen losing the last line with 8 vCPUs in the box).
    "sleep 1",
    "reboot -f",
    // Not reached when reboot works; panic=1 would then reboot after init exits.
    `echo "${marker}-reboot-failed"`,
    "",
  ].join("\n");
}

/** An initramfs (newc cpio) with /bin/busybox, /init, and the mount points it needs. */
export function busyboxInitramfs(busybox: Uint8Array, init: string): Uint8Array {
  return writeCpio([
    { name: "bin", mode: S_IFDIR | 0o755 },
    { name: "bin/busybox", mode: S_IFREG | 0o755, data: busybox },
    { name: "dev", mode: S_IFDIR | 0o755 },
    { name: "proc", mode: S_IFDIR | 0o555 },
    { name: "sys", mode: S_IFDIR | 0o555 },
    { name: "init", mode: S_IFREG | 0o755, data: new TextEncoder().encode(init) },
  ]);
}

/**
 * vCPU counts the kernel must bring up, every one through ACPI's MADT (the kernel has no MPPARSE).
 * 8 only on a hardware-KVM host: in the box (nested SVM under TCG, 2 emulated CPUs) an 8-vCPU boot
 * passed 2 of 5 runs here under QEMU 7.2, ending early or stalling at different places, and 13 of 15
 * under QEMU 10.0 (one guest crash exit, and once the box's own kernel panicked on a corrupted stack
 * in its vCPU thread, as under 7.2 with vls/vgif on), so there it proves nothing about us either way.
 */
const VCPU_COUNTS = meets(HOST_KVM, "hardware") && !IN_BOX ? [1, 2, 4, 8] : [1, 2, 4];

// need "hardware": PVM emulates a guest's ring 0, so a stock kernel cannot boot there (DESIGN.md §6);
// on a PVM host, and on one with no /dev/kvm, these run in the box.
for (const vcpus of VCPU_COUNTS) {
  kvmTest(`Debian cloud kernel, ${vcpus} vCPU${vcpus > 1 ? "s" : ""}: every CPU online through ACPI, COM1 + i8042 + virtio-mmio from the DSDT, a shell, i8042 reset`, { need: "hardware", timeout: 2 * BOOT_TIMEOUT_MS + 300_000 }, async (t: TestContext) => {
    await bootDebian(t, vcpus);
  });
}

async function bootDebian(t: TestContext, vcpus: number): Promise<void> {
  let kernelPath: string;
  let busyboxPath: string;
  try {
    kernelPath = fetchDebianKernel();
  } catch (e) {
    t.skip(`could not fetch the Debian kernel: ${failureReason(e)}`);
    return;
  }
  try {
    busyboxPath = fetchDebianPackageFile("busybox-static", /^bin\/busybox$/);
  } catch (e) {
    t.skip(`could not fetch busybox-static: ${failureReason(e)}`);
    return;
  }
  const release = debianKernelRelease(kernelPath);
  const marker = `TYPERVISOR-LINUX-${randomBytes(6).toString("hex")}`;
  const initrd = busyboxInitramfs(new Uint8Array(readFileSync(busyboxPath)), initScript(marker));

  const dir = mkdtempSync(join(tmpdir(), "typervisor-linux-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // One drive: its virtio-mmio slot must reach the kernel through the DSDT (no cmdline devices here).
  const disk = join(dir, "disk.img");
  writeFileSync(disk, Buffer.alloc(1 << 20));
  let exit: VmExit;
  let output: string;
  for (let attempt = 1; ; attempt++) {
    ({ exit, output } = await bootOnce(dir, release, kernelPath, initrd, vcpus, disk));
    // Inside the box only: nested SVM under TCG (QEMU 7.2) now and then leaves an SMP guest stalled
    // mid-boot (guest time stops; seen at 4 and 8 vCPUs, at different places), or ends it in a
    // crash exit (seen once in CI at 4 vCPUs). One more boot is allowed there, and said with the
    // crash's registers; on a real KVM host a hang or a crash fails at once.
    const hung = exit.kind === "stopped" && !/Kernel panic/.test(output);
    if (!(IN_BOX && (hung || exit.kind === "crash") && attempt < 2)) break;
    const last = output.trim().split("\n").pop()?.slice(0, 160);
    t.diagnostic(`boot ${attempt} ${hung ? "stalled" : `ended in ${describeExit(exit)}`} under nested TCG (last console line: ${last}); booting once more`);
  }
  const tail = `\nexit: ${describeExit(exit)}\n--- console (last 4000 chars) ---\n${output.slice(-4000)}`;

  assert.doesNotMatch(output, /A valid RSDP was not found/, `the kernel found our RSDP${tail}`);
  assert.match(output, new RegExp(`smpboot: Allowing ${vcpus} CPUs`), `the MADT lists ${vcpus} CPUs${tail}`);
  const line = new RegExp(`^${marker} release=(\\S+) cpus=(\\d+) online=(\\S+)\\s*$`, "m").exec(output);
  assert.ok(line, `marker line from /init${tail}`);
  assert.equal(line[1], release, `uname -r${tail}`);
  assert.equal(Number(line[2]), vcpus, `processors in /proc/cpuinfo${tail}`);
  assert.equal(line[3], vcpus === 1 ? "0" : `0-${vcpus - 1}`, `/sys/devices/system/cpu/online${tail}`);
  const acpi = new RegExp(`^${marker}-acpi pnp=(\\S*) platform=(\\S*)\\s*$`, "m").exec(output);
  assert.ok(acpi, `ACPI line from /init${tail}`);
  assert.equal(acpi[1], "PNP0303,PNP0501,", `PnP devices from the DSDT (i8042, COM1)${tail}`);
  assert.equal(acpi[2], "LNRO0005:00,", `the drive's virtio-mmio device from the DSDT${tail}`);
  assert.match(output, new RegExp(`^${marker}-shell answer=42 pid=\\d+\\s*$`, "m"), `sh -c ran${tail}`);
  assert.doesNotMatch(output, new RegExp(`${marker}-reboot-failed|Kernel panic`), `clean reboot${tail}`);
  assert.deepEqual(exit, { kind: "reset" }, `exit${tail}`);
}

/** One boot of the kernel with the busybox initramfs; returns how it ended and its console. */
async function bootOnce(dir: string, release: string, kernelPath: string, initrd: Uint8Array, vcpus: number, disk: string): Promise<{ exit: VmExit; output: string }> {
  const consolePath = join(dir, "console.log");
  const fd = openSync(consolePath, "w");
  let vm: Vm | undefined;
  let exit: VmExit;
  try {
    vm = Vm.create({
      kernel: { name: release, bytes: new Uint8Array(readFileSync(kernelPath)) },
      initrd: { name: "busybox.cpio", bytes: initrd },
      cmdline: CMDLINE,
      vcpus,
      memMiB: MEM_MIB,
      consoleFd: fd,
      drives: [{ id: "disk0", path: disk }],
    });
    const timer = setTimeout(() => vm!.stop(`test timeout after ${BOOT_TIMEOUT_MS / 1000} s`), BOOT_TIMEOUT_MS);
    try {
      await vm.start();
      exit = await vm.wait();
    } finally {
      clearTimeout(timer);
    }
  } finally {
    closeSync(fd);
    vm?.close();
  }
  return { exit, output: readFileSync(consolePath, "utf8") };
}
