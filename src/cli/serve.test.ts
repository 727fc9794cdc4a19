// The API-serving forms of the command, as a user runs them (separate processes). Booting needs
// /dev/kvm; everything up to the boot is checked here without it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { apiRequest } from "../api/index.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = join(root, "bin", "typervisor.js");
const noKvm = !existsSync("/dev/kvm");

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 60_000, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function waitFor(what: string, pred: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test("--api-sock: the server answers, registers for ps, and SIGTERM ends it (143) and unregisters", { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-serve-"));
  const sock = join(dir, "api.sock");
  const runtime = join(dir, "run");
  const child = spawn(process.execPath, [bin, "--api-sock", sock, "--id", "svc1", "--runtime-dir", runtime], { stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  try {
    await waitFor("the API socket", () => existsSync(sock));
    const info = await apiRequest(sock, "GET", "/");
    assert.equal(info.status, 200);
    assert.deepEqual({ ...(info.body as object), vmm_version: "x" }, { id: "svc1", state: "Not started", vmm_version: "x", app_name: "Typervisor" });
    const ps = cli(["ps", "--json", "--runtime-dir", runtime]);
    assert.equal(ps.status, 0, ps.stderr);
    const rows = JSON.parse(ps.stdout) as Array<{ id: string; state: string; pid: number }>;
    assert.deepEqual(rows.map((r) => [r.id, r.state, r.pid]), [["svc1", "Not started", child.pid]]);
  } finally {
    child.kill("SIGTERM");
  }
  assert.equal(await exited, 143);
  const after = cli(["ps", "--json", "--runtime-dir", runtime]);
  assert.deepEqual(JSON.parse(after.stdout), []);
  assert.equal(existsSync(sock), false, "the socket file is removed");
});

test("serve forms: bad combinations and bad config files are one-line errors, exit 2", () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-serve-"));
  const bad = join(dir, "bad.json");
  writeFileSync(bad, "{ not json");
  const unknown = join(dir, "unknown.json");
  writeFileSync(unknown, JSON.stringify({ "boot-source": { kernel_image_path: "/k" }, "machine-config": { vcpu_count: 1, mem_size_mib: 64, wat: 1 } }));
  const cases: Array<[string[], RegExp]> = [
    [["--no-api"], /--no-api needs --config-file/],
    [["--config-file", bad, "--no-api"], /bad\.json: malformed JSON/],
    [["--config-file", unknown, "--no-api"], /wat/],
    [["--config-file", join(dir, "missing.json"), "--no-api"], /cannot read config file .*missing\.json: ENOENT/],
    [["--api-sock"], /argument missing|--api-sock/],
    [["run", "--config-file", bad], /give --config-file without run/],
    [["run", "--id", "x"], /go with --api-sock/],
    [["run", "--api-sock", join(dir, "s.sock"), "--signature", join(dir, "x.sig"), "--trust", "y"], /cannot read signature .*x\.sig: no such file/],
    [["--api-sock", join(dir, "t.sock"), "--signature", "x.sig"], /--signature and --trust go together/],
    [["--api-sock", join(dir, "u.sock"), "--require-signed"], /--require-signed needs --signature SIG and --trust CERT/],
    [["run", "--api-sock", join(dir, "n.sock"), "--nsm", "--chip-dir", join(dir, "no-chip")], /nsm: no chip identity at .*no-chip/],
  ];
  for (const [args, re] of cases) {
    const r = cli(args);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(" "));
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
  }
});

test("--signature/--trust with --config-file: a config whose boot does not match the signature is refused before KVM (exit 2)", () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-serve-sig-"));
  const chip = join(dir, "chip");
  assert.equal(cli(["chip", "init", "--dir", chip]).status, 0);
  const probe = cli(["probe", "--path"]).stdout.trim();
  const sig = join(dir, "probe.sig");
  const cert = join(chip, "leaf-cert.pem");
  const signed = cli(["sign", "--kernel", probe, "--cmdline", "probe.run=demo", "--key", join(chip, "leaf-key.pem"), "--cert", cert, "--out", sig]);
  assert.equal(signed.status, 0, signed.stderr);
  const cfg = (bootArgs: string): string => {
    const p = join(dir, `${bootArgs.replace(/\W/g, "_")}.json`);
    writeFileSync(p, JSON.stringify({ "boot-source": { kernel_image_path: probe, boot_args: bootArgs }, "machine-config": { vcpu_count: 1, mem_size_mib: 64 } }));
    return p;
  };
  const env = { TYPERVISOR_RUNTIME_DIR: join(dir, "run") };
  for (const args of [
    ["--config-file", cfg("probe.run=boot"), "--no-api", "--signature", sig, "--trust", cert],
    ["--config-file", cfg("probe.run=boot"), "--api-sock", join(dir, "a.sock"), "--signature", sig, "--trust", cert],
  ]) {
    const r = cli(args, env);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /refusing to boot: the image signature does not verify \(pcr0: /);
  }
  // The matching boot passes the gate; what happens next depends on KVM.
  const ok = cli(["--config-file", cfg("probe.run=demo"), "--no-api", "--signature", sig, "--trust", cert], env);
  if (noKvm) {
    assert.equal(ok.status, 4, ok.stderr);
    assert.match(ok.stderr, /\/dev\/kvm/);
  } else assert.equal(ok.status, 0, ok.stderr);
});

test("without /dev/kvm, booting through --config-file or run --api-sock says so (exit 4)", { skip: !noKvm && "/dev/kvm exists: the KVM boot tests cover this" }, () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-serve-"));
  const probe = cli(["probe", "--path"]).stdout.trim();
  const cfg = join(dir, "vm.json");
  writeFileSync(cfg, JSON.stringify({ "boot-source": { kernel_image_path: probe, boot_args: "probe.run=demo" }, "machine-config": { vcpu_count: 1, mem_size_mib: 64 } }));
  for (const args of [["--config-file", cfg, "--no-api"], ["--config-file", cfg, "--api-sock", join(dir, "a.sock")], ["run", "--api-sock", join(dir, "b.sock")]]) {
    const r = cli(args, { TYPERVISOR_RUNTIME_DIR: join(dir, "run") });
    assert.equal(r.status, 4, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /\/dev\/kvm/);
  }
});

test("--config-file whose kernel is not a kernel, or whose network interface has a bad MAC: exit 2 in one line, before KVM", () => {
  const dir = mkdtempSync(join(tmpdir(), "typervisor-serve-bad-"));
  const notKernel = join(dir, "notes.txt");
  writeFileSync(notKernel, "not a kernel at all, just text\n".repeat(100));
  const cfg = (extra: Record<string, unknown>, kernel = notKernel): string => {
    const p = join(dir, `vm${Object.keys(extra).length}.json`);
    writeFileSync(p, JSON.stringify({ "boot-source": { kernel_image_path: kernel }, "machine-config": { vcpu_count: 1, mem_size_mib: 64 }, ...extra }));
    return p;
  };
  const probe = cli(["probe", "--path"]).stdout.trim();
  for (const [file, re] of [
    [cfg({}), /notes\.txt/],
    [cfg({ "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0", guest_mac: "ff:ff:ff:ff:ff:ff" }] }, probe), /eth0.*(multicast|group|broadcast)/],
  ] as const) {
    const r = cli(["--config-file", file, "--no-api"], { TYPERVISOR_RUNTIME_DIR: join(dir, "run") });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
  }
});
