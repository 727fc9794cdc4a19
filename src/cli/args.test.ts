import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCommand, UsageError, parseConsole, parseDrive, parseNet } from "./args.js";
import { toDriveConfig, withRootArgs } from "./run.js";
import { runOptionsToResources } from "./serve.js";
import { microVmConfigFrom } from "../api/config.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const limits = { maxVcpus: 8, minMem: 16, maxMem: 65536 };

test("run with no options boots the probe demo defaults", () => {
  const c = parseCommand(["run"], limits);
  assert.deepEqual(c, {
    cmd: "run",
    options: { kernel: undefined, initrd: undefined, cmdline: undefined, vcpus: 1, vcpuThreads: "dedicated", cardThreads: "dedicated", memMiB: 256, console: { kind: "stdio" }, bootProtocol: "linux64", drives: [], nets: [], entropy: false, requireSigned: false },
  });
});

test("run parses every option", () => {
  const c = parseCommand(
    ["run", "--kernel", "k", "--initrd", "i", "--cmdline", "a b", "--vcpus", "4", "--vcpu-threads", "pooled", "--card-threads", "pooled", "--mem", "3072", "--console", "file:/tmp/x", "--boot", "pvh"],
    limits,
  );
  assert.equal(c.cmd, "run");
  if (c.cmd !== "run") return;
  assert.equal(c.options.kernel, "k");
  assert.equal(c.options.cmdline, "a b");
  assert.equal(c.options.vcpus, 4);
  assert.equal(c.options.vcpuThreads, "pooled");
  assert.equal(c.options.cardThreads, "pooled");
  const main = parseCommand(["run", "--vcpu-threads", "main", "--vcpus", "1"], limits);
  assert.ok(main.cmd === "run" && main.options.vcpuThreads === "main");
  assert.equal(c.options.memMiB, 3072);
  assert.deepEqual(c.options.console, { kind: "file", path: "/tmp/x" });
  assert.equal(c.options.bootProtocol, "pvh");
});

test("bad arguments are UsageErrors with one clear sentence", () => {
  const bad: Array<[string[], RegExp]> = [
    [["run", "--vcpus", "0"], /--vcpus must be from 1 to 8, got 0/],
    [["run", "--vcpus", "2", "--vcpu-threads", "main"], /--vcpu-threads main runs the one vCPU on the main thread: --vcpus must be 1, got 2/],
    [["run", "--vcpus", "9"], /--vcpus must be from 1 to 8/],
    [["run", "--vcpus", "two"], /--vcpus must be a whole number, got "two"/],
    [["run", "--mem", "1"], /--mem must be from 16 to 65536/],
    [["run", "--bogus"], /Unknown option '--bogus'/],
    [["run", "--kernel"], /argument missing|--kernel/],
    [["run", "--initrd", "x"], /--initrd needs --kernel/],
    [["run", "--console", "tty"], /--console must be stdio, none or file:PATH/],
    [["run", "--boot", "efi"], /--boot must be linux64 or pvh/],
    [["run", "--vcpu-threads", "shared"], /--vcpu-threads must be dedicated, pooled or main, got "shared"/],
    [["run", "--card-threads", "one"], /--card-threads must be dedicated or pooled, got "one"/],
    [["frobnicate"], /unknown command "frobnicate"/],
    [["probe"], /--path/],
    [["run", "extra"], /positional|Unexpected argument/i],
  ];
  for (const [argv, re] of bad) {
    assert.throws(() => parseCommand(argv, limits), (e: unknown) => {
      assert.ok(e instanceof UsageError, `${argv.join(" ")}: ${String(e)}`);
      assert.match(e.message, re, argv.join(" "));
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
  }
});

test("help and version forms", () => {
  assert.deepEqual(parseCommand([], limits), { cmd: "help", topic: undefined });
  assert.deepEqual(parseCommand(["--help"], limits), { cmd: "help", topic: undefined });
  assert.deepEqual(parseCommand(["run", "--help"], limits), { cmd: "help", topic: "run" });
  assert.deepEqual(parseCommand(["--version"], limits), { cmd: "version" });
  assert.deepEqual(parseCommand(["probe", "--path"], limits), { cmd: "probe-path" });
  assert.deepEqual(parseConsole("none"), { kind: "none" });
});

test("--drive: path, ro, id and rates; repeatable", () => {
  const c = parseCommand(["run", "--drive", "path=a.img,id=rootfs", "--drive", "path=b.img,ro,bw=10M:50M,ops=1000"], limits);
  if (c.cmd !== "run") return assert.fail("run");
  assert.deepEqual(c.options.drives, [
    { readOnly: false, path: "a.img", id: "rootfs" },
    { readOnly: true, path: "b.img", id: "drive1", bandwidth: { perSecond: 10 * 1024 * 1024, burst: 50 * 1024 * 1024 }, ops: { perSecond: 1000 } },
  ]);
  assert.deepEqual(toDriveConfig(c.options.drives[1]!), {
    id: "drive1",
    path: "b.img",
    readOnly: true,
    rateLimiter: { bandwidth: { size: 10 * 1024 * 1024, refillTime: 1000, oneTimeBurst: 50 * 1024 * 1024 }, ops: { size: 1000, refillTime: 1000 } },
  });
  assert.deepEqual(toDriveConfig(parseDrive("path=x", 0)), { id: "drive0", path: "x", readOnly: false });
});

test("--drive: malformed specs are one-line usage errors", () => {
  const bad: Array<[string, RegExp]> = [
    ["ro", /needs path=FILE/],
    ["path=", /path= needs a value/],
    ["path=a,ro=yes", /ro takes no value/],
    ["path=a,bw=fast", /bw= must be a number per second/],
    ["path=a,ops=0", /must be above zero/],
    ["path=a,cache=none", /unknown key "cache"/],
  ];
  for (const [spec, re] of bad) assert.throws(() => parseDrive(spec, 0), (e: unknown) => e instanceof UsageError && re.test(e.message), spec);
});

test("--entropy and --nsm [--chip-dir]", () => {
  const c = parseCommand(["run", "--entropy", "--nsm", "--chip-dir", "/tmp/chip"], limits);
  if (c.cmd !== "run") return assert.fail("run");
  assert.equal(c.options.entropy, true);
  assert.equal(c.options.nsmChipDir, "/tmp/chip");
  assert.throws(() => parseCommand(["run", "--chip-dir", "/x"], limits), /--chip-dir goes with --nsm/);
});

test("--drive root: placed first (/dev/vda), one only, virtio-blk only; partuuid= goes with root", () => {
  const c = parseCommand(["run", "--drive", "path=data.img", "--drive", "path=rootfs.ext4,root", "--drive", "path=c.img,ro"], limits);
  if (c.cmd !== "run") return assert.fail("run");
  assert.deepEqual(c.options.drives.map((d) => [d.id, d.path, d.root === true]), [["drive1", "rootfs.ext4", true], ["drive0", "data.img", false], ["drive2", "c.img", false]]);
  assert.deepEqual(parseDrive("path=r,root,ro,partuuid=1a2b3c4d-01", 0), { readOnly: true, path: "r", id: "drive0", root: true, partuuid: "1a2b3c4d-01" });
  assert.throws(() => parseCommand(["run", "--drive", "path=a,root", "--drive", "path=b,root"], limits), /only one --drive may be root \(drive0, drive1 are\)/);
  assert.throws(() => parseDrive("path=a,root=yes", 0), /root takes no value/);
  assert.throws(() => parseDrive("path=a,partuuid=1a2b3c4d-01", 0), /partuuid= names the root partition: it goes with root/);
  assert.throws(() => parseDrive("path=a,root,io=emulated", 0), /root must be a virtio-blk drive/);
});

test("--drive root adds root= to the command line as the API's is_root_device does, in run and with --api-sock", () => {
  const base = "console=ttyS0 reboot=k panic=1 pci=off";
  assert.equal(withRootArgs(base, [parseDrive("path=r,root", 0)]), `${base} root=/dev/vda rw`);
  assert.equal(withRootArgs(base, [parseDrive("path=r,root,ro", 0)]), `${base} root=/dev/vda ro`);
  assert.equal(withRootArgs(base, [parseDrive("path=r,root,partuuid=1a2b3c4d-01", 0)]), `${base} root=PARTUUID=1a2b3c4d-01 rw`);
  assert.equal(withRootArgs(base, [parseDrive("path=r", 0)]), base, "no root drive, no root=");
  assert.throws(() => withRootArgs(base, [parseDrive("path=r,root,partuuid=nope", 0)]), (e: unknown) => (e as Error).name === "FaultError" && /partuuid must be a partition UUID/.test((e as Error).message));
  // The API path: the same drive becomes is_root_device, first, and the same root= at InstanceStart.
  const dir = mkdtempSync(join(tmpdir(), "cli-root-"));
  try {
    const img = (n: string) => {
      writeFileSync(join(dir, n), Buffer.alloc(4096));
      return join(dir, n);
    };
    const c = parseCommand(["run", "--kernel", "k", "--api-sock", join(dir, "s"), "--drive", `path=${img("d.img")},id=data`, "--drive", `path=${img("r.img")},id=rootfs,root`], limits);
    if (c.cmd !== "serve" || c.run === undefined) return assert.fail("serve");
    const r = runOptionsToResources(c.run);
    assert.deepEqual(r.drives!.map((d) => [d.drive_id, d.is_root_device]), [["rootfs", true], ["data", false]]);
    assert.equal(microVmConfigFrom(r).cmdline, withRootArgs(base, c.run.drives));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("--net tap=NAME[,mac=][,id=]: network interfaces in order, ids eth0, eth1 by default; through --api-sock they become network-interfaces", () => {
  const limits = { maxVcpus: 8, minMem: 16, maxMem: 65536 };
  const c = parseCommand(["run", "--kernel", "k", "--net", "tap=tap0,mac=06:00:ac:10:00:02", "--net", "tap=tap1,id=lan"], limits);
  assert.equal(c.cmd, "run");
  if (c.cmd !== "run") return;
  assert.deepEqual(c.options.nets, [
    { id: "eth0", tap: "tap0", mac: "06:00:ac:10:00:02" },
    { id: "lan", tap: "tap1" },
  ]);
  assert.throws(() => parseNet("mac=06:00:ac:10:00:02", 0), /--net needs tap=NAME/);
  assert.throws(() => parseNet("tap=t,speed=10G", 0), /--net: unknown key "speed"/);
  assert.throws(() => parseNet("tap=", 0), /--net tap= needs a value/);
  const dir = mkdtempSync(join(tmpdir(), "typervisor-net-args-"));
  try {
    const kernel = join(dir, "k");
    writeFileSync(kernel, "x");
    const s = parseCommand(["run", "--api-sock", join(dir, "s"), "--kernel", kernel, "--net", "tap=tap0,mac=06:00:ac:10:00:02"], limits);
    assert.equal(s.cmd, "serve");
    if (s.cmd !== "serve") return;
    assert.deepEqual(runOptionsToResources(s.run!).networkInterfaces, [{ iface_id: "eth0", host_dev_name: "tap0", guest_mac: "06:00:ac:10:00:02" }]);
    const bad = parseCommand(["run", "--api-sock", join(dir, "s"), "--kernel", kernel, "--net", "tap=tap0,mac=01:00:00:00:00:00"], limits);
    if (bad.cmd !== "serve") return;
    assert.throws(() => runOptionsToResources(bad.run!), /network-interfaces\[0\] "eth0": .*(multicast|group)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
