// Integration test of the starter image: `typervisor image build`'s three files boot on
// Typervisor as a user boots them — the exact `typervisor run` command that image build prints,
// its root drive flag included — with `typervisor.test=marker:<token>` added to the command
// line: the kernel loads the initrd's modules, mounts /dev/vda read-write, switch_roots to busybox
// init, which writes the token to the root disk, syncs and reboots (a clean unmount; reboot=k
// ends the VM). The host then reads the token back from rootfs.ext4 with debugfs.
//
// It needs hardware-KVM semantics (a stock kernel); elsewhere it runs in the box, which carries
// mke2fs and debugfs for it. It skips only when Debian's packages or e2fsprogs are missing, saying
// which. Nothing runs at import time.

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { kvmTests } from "../testing/kvm.js";
import { runCommand, IMAGE_CMDLINE } from "./build.js";
import { findTool, TEST_MARKER_PATH, TEST_WROTE } from "./rootfs.js";
import { INITRD_TAG } from "./initramfs.js";
import { runTypervisor, starterImage } from "./testing.js";

const kvmTest = kvmTests(import.meta.url);
/** A few seconds on hardware KVM; about 30 s of guest time under nested TCG in the box. */
const BOOT_TIMEOUT_MS = 300_000;

kvmTest(
  "the starter image boots from its root disk: initrd modules, /dev/vda mounted rw, busybox init runs typervisor.test, the marker reaches the disk, reboot ends the VM",
  { need: "hardware", timeout: BOOT_TIMEOUT_MS + 120_000 },
  async (t: TestContext) => {
    const image = starterImage(t, "tv-image-kvm-");
    if (image === undefined) return;
    const { out } = image;
    // The printed command, word for word (the temporary folder has no spaces), plus the test's options.
    const printed = runCommand(out);
    const words = printed.split(" ");
    assert.equal(words[0], "typervisor");
    const marker = `m${randomBytes(12).toString("hex")}`;
    const run = runTypervisor(t, [...words.slice(1), "--vcpus", "1", "--cmdline", `${IMAGE_CMDLINE} typervisor.test=marker:${marker}`], BOOT_TIMEOUT_MS);
    const status = await run.status;
    const output = run.console();
    const tail = run.tail();

    assert.match(output, /Kernel command line: .* root=\/dev\/vda rw/, `the root drive flag added root=/dev/vda rw${tail}`);
    assert.doesNotMatch(output, new RegExp(`${INITRD_TAG}:`), `the initrd reported no failure${tail}`);
    assert.match(output, /EXT4-fs \(vda\): mounted filesystem/, `the initrd mounted /dev/vda${tail}`);
    assert.match(output, /typervisor: typervisor up \(/, `busybox init ran rcS from the root disk${tail}`);
    assert.ok(output.includes(TEST_WROTE), `the test wrote its marker${tail}`);
    assert.match(output, /reboot: Restarting system/, `reboot went through init to the kernel${tail}`);
    assert.equal(status, 0, `typervisor exits 0 on the guest's reboot (i8042 reset)${tail}`);

    const debugfs = findTool("debugfs")!;
    const read = (req: string): string => {
      const r = spawnSync(debugfs, ["-R", req, join(out, "rootfs.ext4")], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    assert.equal(read(`cat ${TEST_MARKER_PATH}`), `${marker}\n`, `the marker is on the root disk${tail}`);
    assert.match(read("stats"), /Filesystem state:\s+clean/, `the shutdown left the file system clean (umount -a -r at reboot)${tail}`);
  },
);
