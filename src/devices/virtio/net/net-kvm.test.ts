// Integration test: a stock Debian guest on the network. The starter image (`typervisor image
// build`) boots from a Firecracker config file (boot-source, a root drive, network-interfaces and
// vsock); its initrd loads virtio_net, its init brings eth0 up from
// `ip=`, and `typervisor.test=net:...` pings the host, reads NET_MIB MiB from a host TCP server and
// sends NET_MIB MiB of random bytes back, printing the SHA-256 of each. The host end is a network
// namespace this test makes (192.0.2.0/24, TEST-NET-1, only inside it): the TAP the card opened
// moves into it, and a Node.js server there sends seeded bytes and hashes what it receives (./testing.ts).
// Both hashes must match, and the VM ends with the guest's reboot.
//
// It needs hardware-KVM semantics (a stock kernel); elsewhere it runs in the box, which carries
// iproute2's ip, mke2fs and debugfs for it. It skips only when something a user must install is
// missing, saying which. Nothing runs at import time.

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { kvmTests } from "../../../testing/kvm.js";
import { findTool } from "../../../image/rootfs.js";
import { runTypervisor, starterImage } from "../../../image/testing.js";
import { GUEST_MAC, assertNetTest, netNames, netTestCmdline, tapPeer } from "./testing.js";

const kvmTest = kvmTests(import.meta.url);
/** MiB each way (the figure). */
const NET_MIB = 64;
/** Boot plus 128 MiB through nested TCG in the box; seconds on hardware KVM. */
const TIMEOUT_MS = 480_000;

kvmTest(
  `virtio-net, from a Firecracker config file with a root drive, a network interface and vsock: the Debian guest configures eth0 on a TAP, pings the host and moves ${NET_MIB} MiB over TCP each way with the bytes checked`,
  { need: "hardware", timeout: TIMEOUT_MS + 120_000 },
  async (t: TestContext) => {
    const ip = findTool("ip");
    if (ip === undefined) return t.skip("iproute2's ip is missing: install Debian's iproute2");
    if (!existsSync("/dev/net/tun")) return t.skip("no /dev/net/tun: load the tun module (modprobe tun)");
    const image = starterImage(t, "tv-net-kvm-");
    if (image === undefined) return;
    const { dir, out } = image;
    const { tap, ns } = netNames();

    // The VM, as a Firecracker user configures one: a config file with the boot source, the root
    // drive, the network interface and a vsock device (which this test does not use beyond its boot).
    const config = join(dir, "vm.json");
    writeFileSync(config, JSON.stringify({
      "boot-source": { kernel_image_path: join(out, "vmlinuz"), initrd_path: join(out, "initrd.img"), boot_args: netTestCmdline(NET_MIB) },
      "machine-config": { vcpu_count: 1, mem_size_mib: 512 },
      drives: [{ drive_id: "rootfs", path_on_host: join(out, "rootfs.ext4"), is_root_device: true, is_read_only: false }],
      "network-interfaces": [{ iface_id: "eth0", host_dev_name: tap, guest_mac: GUEST_MAC }],
      vsock: { guest_cid: 3, uds_path: join(dir, "v.sock") },
    }));
    const vm = runTypervisor(t, ["--config-file", config, "--no-api"], TIMEOUT_MS);
    const peer = await tapPeer(t, { ip, dir, tap, ns, mib: NET_MIB, running: vm.running, tail: vm.tail });

    const code = await vm.status;
    assertNetTest(vm.console(), peer, NET_MIB, vm.tail());
    assert.equal(code, 0, `the VM ended with the guest's reboot${vm.tail()}\n--- host end ---\n${peer.output()}`);
  },
);
