// The package as a user gets it: `npm pack`, then `npm install <tarball>` in a project of their
// own, then `import { MicroVM } from "typervisor"`. The pack and install run on the host (the box
// has no npm) and leave the user's project under .cache/sdk-package/project, which the box carries
// (src/box/image.ts PROJECT_ENTRIES); the KVM test boots the probe guest from that installed copy.
//
// The install is offline. A bare `npm install --offline <tgz>` resolves the package's dependencies
// by their registry documents, which `npm ci` (from this repository's lockfile) does not cache in
// the form `npm install` asks for; so the project starts with a lockfile of this repository's
// runtime entries, and the install needs exactly what `npm ci` has put in the cache.
//
// The KVM test does not depend on the order tests run in: a project that is missing, or made from
// another build, is made again — with npm where there is npm, and in the box (which `npm test`
// starts before this file's turn when another KVM file asks first) by copying the files package.json
// "files" selects and linking the dependencies, a stand-in the test says it used. That selection
// is checked against npm's own list here on the host.

import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { kvmTests } from "../testing/kvm.js";
import { findTool } from "../image/rootfs.js";
import { runWithConsole, starterImage } from "../image/testing.js";
import { GUEST_MAC, assertNetTest, netNames, netTestCmdline, tapPeer } from "../devices/virtio/net/testing.js";

const kvmTest = kvmTests(import.meta.url);

const ROOT = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
/** The user's project with the packed typervisor installed by npm; the box carries this folder. */
const PROJECT = join(ROOT, ".cache/sdk-package/project");
/** Where the KVM test makes a stand-in when there is no npm (the box). */
const STAND_IN = join(ROOT, ".cache/sdk-package/stand-in");
/** Records which build a project was made from. */
const STAMP = "typervisor-build.json";
const installed = (project: string): string => join(project, "node_modules/typervisor");
const PKG = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { name: string; version: string; files: string[]; dependencies: Record<string, string> };

// ---- which files the package holds -------------------------------------------------------------

/** A glob of package.json "files" (`*`, `**`, `?`) as a regular expression over a relative path. */
function globSource(glob: string): string {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      const slash = glob[i + 2] === "/";
      re += slash ? "(?:.*/)?" : ".*";
      i += slash ? 2 : 1;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return re;
}

/** Names npm never packs, wherever they are (npm-packlist's defaults that occur in a tree like ours). */
const NEVER = /(^|\/)(\.git|\.svn|\.hg|CVS|node_modules|\.npmrc|\.DS_Store|npm-debug\.log|\.gitignore|\.npmignore|[^/]*\.orig|\.[^/]*\.swp)(\/|$)/;

/**
 * The files `npm pack` puts in this package, found the way npm-packlist finds them for our
 * package.json: package.json, README* and LICENSE* always; then each "files" entry in order (a
 * path or glob takes the file, or the folder with everything under it; `!` drops it again; the
 * last entry that matches decides). Only what exists under `root` is listed (the box holds only
 * the built part). The host test checks this list against npm's.
 */
function packedFiles(root: string, files: readonly string[] = PKG.files): string[] {
  const rules = files.map((entry) => {
    const neg = entry.startsWith("!");
    const body = (neg ? entry.slice(1) : entry).replace(/^\.?\//, "").replace(/\/$/, "");
    return { neg, re: new RegExp(`^${globSource(body)}(?:/.*)?$`) };
  });
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      if (NEVER.test(r) || (rel === "" && name === ".cache")) continue;
      const st = lstatSync(join(root, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile()) {
        const always = rel === "" && (/^(package\.json|(readme|license|licence)(\..*)?)$/i.test(name));
        let take = always;
        if (!always) for (const { neg, re } of rules) if (re.test(r)) take = !neg;
        if (take) out.push(r);
      }
    }
  };
  walk("");
  return out.sort();
}

/** The part of the package that a build makes and the box carries: what the fingerprint covers. */
const BUILT = /^(package\.json$|bin\/|dist\/|guest\/build\/)/;

/** A digest of the built part of the package as it is under `root` now. */
function buildFingerprint(root: string): string {
  const h = createHash("sha256");
  for (const f of packedFiles(root).filter((p) => BUILT.test(p))) {
    h.update(`${f}\0`);
    h.update(readFileSync(join(root, f)));
    h.update("\0");
  }
  return h.digest("hex");
}

/** Every file under `dir`, relative to it (symbolic links as files). */
function filesUnder(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const r = rel === "" ? name : `${rel}/${name}`;
    if (lstatSync(join(dir, r)).isDirectory()) out.push(...filesUnder(dir, r));
    else out.push(r);
  }
  return out;
}

// ---- npm ----------------------------------------------------------------------------------------

/**
 * The environment for npm in the scratch project: this process's, without what `npm test` sets
 * for this repository (its local prefix, package and lifecycle variables), which would point npm
 * back here. The user's npm settings (cache, registry, certificates) stay.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    const key = k.toLowerCase();
    if (key.startsWith("npm_") && !key.startsWith("npm_config_")) continue;
    if (["npm_config_local_prefix", "npm_config_prefix", "npm_config_global_prefix", "npm_config_yes"].includes(key) || k === "INIT_CWD") continue;
    env[k] = v;
  }
  return env;
}

const hasNpm = (): boolean => spawnSync("npm", ["--version"], { encoding: "utf8", env: npmEnv() }).status === 0;

function npm(args: string[], cwd: string, timeoutMs = 120_000): SpawnSyncReturns<string> {
  const r = spawnSync("npm", args, { cwd, encoding: "utf8", env: npmEnv(), timeout: timeoutMs });
  assert.equal(r.status, 0, `npm ${args.join(" ")} (in ${cwd}) failed:\n${r.stderr}${r.stdout}`);
  return r;
}

/** The user's scripts, written into a project: they import "typervisor" as a user does. */
const SCRIPTS: Record<string, string> = {
  "boot.mjs": [
    `import { MicroVM } from "typervisor";`,
    `const vm = MicroVM.create({ kernel: "probe", cmdline: "probe.run=demo" });`,
    `let out = "";`,
    `vm.console.setEncoding("utf8").on("data", (c) => (out += c));`,
    `const ended = new Promise((r) => vm.console.on("end", r));`,
    `await vm.start();`,
    `const exit = await vm.exited;`,
    `await ended;`,
    `const line = out.split("\\n").find((l) => l.startsWith("PROBE demo"));`,
    `console.log(JSON.stringify({ exit, line, kernel: vm.config.kernel, resolved: import.meta.resolve("typervisor") }));`,
  ].join("\n"),
  // A stock kernel from the user's project: the starter image with its root drive, a network
  // interface and vsock; the guest's console on stdout as it comes, the exit as the last line.
  "linux.mjs": [
    `import { MicroVM } from "typervisor";`,
    `const [kernel, initrd, rootfs, tap, mac, udsPath, cmdline] = process.argv.slice(2);`,
    `const vm = MicroVM.create({`,
    `  kernel, initrd, cmdline: \`\${cmdline} root=/dev/vda rw\`, memMiB: 512,`,
    `  drives: [{ id: "rootfs", path: rootfs }],`,
    `  net: [{ id: "eth0", tap, mac }],`,
    `  vsock: { guestCid: 3, udsPath },`,
    `});`,
    `vm.console.on("data", (c) => process.stdout.write(c));`,
    `const ended = new Promise((r) => vm.console.on("end", r));`,
    `await vm.start();`,
    `const exit = await vm.exited;`,
    `await ended;`,
    `const plain = (_k, v) => (typeof v === "bigint" ? \`0x\${v.toString(16)}\` : v); // a crash's registers are bigints`,
    `console.log("\\n" + JSON.stringify({ exit, kernel: vm.config.kernel, net: vm.config.net, vsock: vm.config.vsock, resolved: import.meta.resolve("typervisor") }, plain));`,
  ].join("\n"),
  "missing-kernel.mjs": [
    `import { MicroVM, KernelImageError, MicroVMError } from "typervisor";`,
    `try {`,
    `  MicroVM.create({ kernel: process.argv[2] });`,
    `  console.log(JSON.stringify({ threw: false }));`,
    `} catch (e) {`,
    `  console.log(JSON.stringify({ threw: true, name: e.name, message: e.message, kernelImageError: e instanceof KernelImageError,`,
    `    microVMError: e instanceof MicroVMError, image: e.image, path: e.path, causeCode: e.cause?.code }));`,
    `}`,
  ].join("\n"),
};

function writeScripts(project: string): void {
  for (const [name, text] of Object.entries(SCRIPTS)) writeFileSync(join(project, name), `${text}\n`);
}

/**
 * `npm pack` this repository's build into a temporary folder and `npm install --offline` the
 * tarball into a fresh project (made beside PROJECT, then put in its place). Returns npm's list
 * of the packed files.
 */
function installWithNpm(): string[] {
  assert.ok(existsSync(join(ROOT, "guest/build/probe.elf")), `the probe guest is not built: run "npm run build" in ${ROOT} first`);
  const packDir = mkdtempSync(join(tmpdir(), "typervisor-pack-"));
  const work = `${PROJECT}.tmp-${process.pid}`;
  try {
    // --ignore-scripts: pack the build this test run has (npm test builds first); no rebuild.
    const packed = npm(["pack", "--json", "--ignore-scripts", "--pack-destination", packDir], ROOT);
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as Array<{ filename: string; files: Array<{ path: string }> }>;
    const tarball = join(packDir, info!.filename);
    rmSync(work, { recursive: true, force: true });
    mkdirSync(work, { recursive: true });
    // The repository's runtime lock entries: the install resolves nothing from the registry.
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean }> };
    const packages: Record<string, unknown> = { "": { name: "typervisor-user-project" } };
    for (const [k, v] of Object.entries(lock.packages)) if (k !== "" && v.dev !== true) packages[k] = v;
    writeFileSync(join(work, "package.json"), `${JSON.stringify({ name: "typervisor-user-project", private: true, type: "module" }, null, 2)}\n`);
    writeFileSync(join(work, "package-lock.json"), `${JSON.stringify({ name: "typervisor-user-project", lockfileVersion: 3, requires: true, packages }, null, 2)}\n`);
    npm(["install", "--offline", "--no-audit", "--no-fund", tarball], work, 300_000);
    writeScripts(work);
    writeFileSync(join(work, STAMP), `${JSON.stringify({ fingerprint: buildFingerprint(ROOT), madeBy: "npm" })}\n`);
    rmSync(PROJECT, { recursive: true, force: true });
    renameSync(work, PROJECT);
    return info!.files.map((f) => f.path).sort();
  } finally {
    rmSync(packDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The package's runtime dependencies as installed under `root`/node_modules: its dependencies, and
 * theirs (optional ones where present), by name. A dependency installed only inside another's
 * node_modules is reached through that one.
 */
function runtimeDependencies(root: string): string[] {
  const found = new Set<string>();
  const todo = Object.keys(PKG.dependencies);
  while (todo.length > 0) {
    const name = todo.pop()!;
    const manifest = join(root, "node_modules", name, "package.json");
    if (found.has(name) || !existsSync(manifest)) continue;
    found.add(name);
    const p = JSON.parse(readFileSync(manifest, "utf8")) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
    todo.push(...Object.keys(p.dependencies ?? {}), ...Object.keys(p.optionalDependencies ?? {}));
  }
  return [...found].sort();
}

/**
 * Without npm: the package's files (as packedFiles selects them) copied into
 * STAND_IN/node_modules/typervisor, its runtime dependencies linked from this repository's
 * node_modules, and the same scripts.
 */
function buildStandIn(): string {
  rmSync(STAND_IN, { recursive: true, force: true });
  const pkgDir = installed(STAND_IN);
  for (const f of packedFiles(ROOT)) {
    mkdirSync(dirname(join(pkgDir, f)), { recursive: true });
    cpSync(join(ROOT, f), join(pkgDir, f));
  }
  for (const name of runtimeDependencies(ROOT)) {
    const link = join(STAND_IN, "node_modules", name);
    mkdirSync(dirname(link), { recursive: true });
    symlinkSync(join(ROOT, "node_modules", name), link);
  }
  writeFileSync(join(STAND_IN, "package.json"), `${JSON.stringify({ name: "typervisor-user-project", private: true, type: "module", dependencies: { typervisor: PKG.version } }, null, 2)}\n`);
  writeScripts(STAND_IN);
  return STAND_IN;
}

/** The project the KVM test uses: PROJECT when it was made from this build, else one made now. */
function userProject(t: TestContext): string {
  const stamp = join(PROJECT, STAMP);
  const current = buildFingerprint(ROOT);
  let why = "there is none";
  if (existsSync(stamp)) {
    if ((JSON.parse(readFileSync(stamp, "utf8")) as { fingerprint: string }).fingerprint === current) {
      writeScripts(PROJECT);
      return PROJECT;
    }
    why = "it was made from another build";
  }
  if (hasNpm()) {
    t.diagnostic(`made the user project with npm pack and npm install: ${why}`);
    installWithNpm();
    return PROJECT;
  }
  t.diagnostic(`no npm here and no user project from this build (${why}): using a stand-in made from package.json "files" and this repository's node_modules`);
  return buildStandIn();
}

function runNode(project: string, args: string[], timeoutMs: number): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { cwd: project, encoding: "utf8", timeout: timeoutMs });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The last line of a script's output, as JSON. */
function lastJson<T>(r: { stdout: string; stderr: string }): T {
  const line = r.stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`the script printed no JSON line:\n--- stdout ---\n${r.stdout}--- stderr ---\n${r.stderr}`);
  }
}

// ---- tests --------------------------------------------------------------------------------------

test("packedFiles selects what npm packs (the box's stand-in relies on it)", () => {
  // The rule language on a fixture: a folder, a negated glob under it, a single file.
  const dir = mkdtempSync(join(tmpdir(), "typervisor-files-"));
  try {
    for (const f of ["README.md", "package.json", "dist/a.js", "dist/a.test.js", "dist/x/b.test.js", "dist/x/testing/t.js", "guest/build/probe.elf", "guest/build/boot.o", "src/a.ts", "node_modules/k/index.js", "dist/.gitignore"]) {
      mkdirSync(dirname(join(dir, f)), { recursive: true });
      writeFileSync(join(dir, f), f);
    }
    const files = ["dist/", "!dist/**/*.test.js", "!dist/**/testing/**", "guest/build/probe.elf"];
    assert.deepEqual(packedFiles(dir, files), ["README.md", "dist/a.js", "guest/build/probe.elf", "package.json"]);
    // The last entry that matches decides: a file dropped by a glob can be taken back.
    assert.deepEqual(packedFiles(dir, [...files, "dist/a.test.js"]), ["README.md", "dist/a.js", "dist/a.test.js", "guest/build/probe.elf", "package.json"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test(
  "npm pack, then npm install --offline of the tarball into a user's project: the installed files are npm's list, npx typervisor runs from the installed copy, and a kernel path that does not exist is a KernelImageError with one sentence",
  { timeout: 600_000 },
  (t) => {
    if (!hasNpm()) return t.skip("npm is not on PATH: install Node.js with npm to test the package as users install it");
    const packed = installWithNpm();

    // What npm packed is what packedFiles selects (so the box's stand-in holds the same files),
    // and what the install put in node_modules/typervisor.
    assert.deepEqual(packed, packedFiles(ROOT), "packedFiles agrees with npm pack");
    assert.deepEqual(filesUnder(installed(PROJECT)), packed, "the installed package holds exactly the packed files");
    assert.ok(packed.includes("guest/build/probe.elf"));
    // The dependencies were installed into the project, so nothing resolves from this repository's
    // node_modules; and they are the ones the box's stand-in links.
    const topLevel = readdirSync(join(PROJECT, "node_modules"))
      .filter((n) => !n.startsWith("."))
      .flatMap((n) => (n.startsWith("@") ? readdirSync(join(PROJECT, "node_modules", n)).map((m) => `${n}/${m}`) : [n]));
    assert.deepEqual(topLevel.filter((n) => n !== PKG.name).sort(), runtimeDependencies(ROOT), "npm installed the dependencies the stand-in links");

    const npx = (args: string[]) => {
      const r = spawnSync("npx", ["--offline", "typervisor", ...args], { cwd: PROJECT, encoding: "utf8", env: npmEnv(), timeout: 60_000 });
      assert.equal(r.status, 0, `npx typervisor ${args.join(" ")}: ${r.stderr}`);
      return r.stdout.trim();
    };
    assert.equal(npx(["--version"]), `${PKG.name} ${PKG.version}`);
    const probe = npx(["probe", "--path"]);
    assert.equal(probe, join(installed(PROJECT), "guest/build/probe.elf"), "the probe of the installed copy");
    assert.deepEqual(readFileSync(probe), readFileSync(join(ROOT, "guest/build/probe.elf")), "the probe as built here");

    const missing = join(PROJECT, "no-such-vmlinux");
    const r = runNode(PROJECT, ["missing-kernel.mjs", missing], 60_000);
    assert.equal(r.status, 0, r.stderr);
    const e = lastJson<Record<string, unknown>>(r);
    assert.deepEqual(e, {
      threw: true,
      name: "KernelImageError",
      message: `cannot read the kernel image "${missing}": ENOENT (no such file)`,
      kernelImageError: true,
      microVMError: true,
      image: "kernel",
      path: missing,
      causeCode: "ENOENT",
    });
    const stamp = JSON.parse(readFileSync(join(PROJECT, STAMP), "utf8")) as { fingerprint: string };
    assert.equal(stamp.fingerprint, buildFingerprint(ROOT), "the project records the build it was made from");
  },
);

kvmTest(
  "from the user's project, import \"typervisor\" boots the installed probe guest: MicroVM.create({ kernel: \"probe\" }), start, exit status 0 and the demo's console line",
  { need: "kvm", timeout: 600_000 },
  (t) => {
    const project = userProject(t);
    const r = runNode(project, ["boot.mjs"], 240_000);
    assert.equal(r.status, 0, `node boot.mjs: ${r.stderr}${r.stdout}`);
    const out = lastJson<{ exit: unknown; line?: string; kernel: string; resolved: string }>(r);
    assert.deepEqual(out.exit, { kind: "debug-exit", status: 0 });
    assert.equal(out.line, "PROBE demo ok");
    assert.equal(out.kernel, join(installed(project), "guest/build/probe.elf"), "the probe guest of the installed copy");
    assert.ok(out.resolved.startsWith(pathToFileURL(installed(project)).href + "/"), `"typervisor" resolves into the project: ${out.resolved}`);
    assert.ok(statSync(out.kernel).isFile());
    t.diagnostic(`project: ${relative(ROOT, project)}`);
  },
);

/** MiB each way for the SDK's network check (the net KVM test moves 64 MiB through the CLI's path). */
const SDK_NET_MIB = 16;

kvmTest(
  `from the user's project, the installed SDK boots Debian's kernel (the starter image) with a root drive, a network interface and vsock: / is /dev/vda read-write, eth0 on a TAP pings the host and moves ${SDK_NET_MIB} MiB each way with the bytes checked, a clean reboot`,
  { need: "hardware", timeout: 600_000 },
  async (t) => {
    const ip = findTool("ip");
    if (ip === undefined) return t.skip("iproute2's ip is missing: install Debian's iproute2");
    if (!existsSync("/dev/net/tun")) return t.skip("no /dev/net/tun: load the tun module (modprobe tun)");
    const image = starterImage(t, "tv-sdk-linux-");
    if (image === undefined) return;
    const project = userProject(t);
    const { dir, out } = image;
    const { tap, ns } = netNames();
    const uds = join(dir, "v.sock");
    const args = ["linux.mjs", join(out, "vmlinuz"), join(out, "initrd.img"), join(out, "rootfs.ext4"), tap, GUEST_MAC, uds, netTestCmdline(SDK_NET_MIB)];
    // Its stdout is the guest's console; in the box, a kernel gone silent mid-boot is stopped and the failure says so (the test then runs again).
    const run = runWithConsole(t, [process.execPath, ...args], { what: `node ${args.join(" ")}`, timeoutMs: 480_000, cwd: project });
    const tail = run.tail;
    const peer = await tapPeer(t, { ip, dir, tap, ns, mib: SDK_NET_MIB, running: run.running, tail });

    assert.equal(await run.status, 0, `node linux.mjs${tail()}`);
    const stdout = run.console();
    assert.match(stdout, /EXT4-fs \(vda\): mounted filesystem/, `the root drive mounted${tail()}`);
    assert.match(stdout, new RegExp(`typervisor: eth0 up: mac ${GUEST_MAC} address`), `the image's init brought eth0 up${tail()}`);
    assertNetTest(stdout, peer, SDK_NET_MIB, tail());
    const end = lastJson<{ exit: unknown; kernel: string; net: unknown; vsock: unknown; resolved: string }>({ stdout, stderr: run.stderr() });
    assert.deepEqual(end.exit, { kind: "reset" }, `the guest's reboot ended the VM${tail()}`);
    assert.deepEqual(end.net, [{ id: "eth0", tap, mac: GUEST_MAC }]);
    assert.deepEqual(end.vsock, { guestCid: 3, udsPath: uds });
    assert.ok(end.resolved.startsWith(pathToFileURL(installed(project)).href + "/"), `"typervisor" resolves into the project: ${end.resolved}`);
    t.diagnostic(`project: ${relative(ROOT, project)}`);
  },
);
