import { test } from "node:test";
import assert from "node:assert/strict";
import { parseCommand, UsageError, parseConsole } from "./args.js";

const limits = { maxVcpus: 8, minMem: 16, maxMem: 65536 };

test("run with no options boots the probe demo defaults", () => {
  const c = parseCommand(["run"], limits);
  assert.deepEqual(c, {
    cmd: "run",
    options: { kernel: undefined, initrd: undefined, cmdline: undefined, vcpus: 1, memMiB: 256, console: { kind: "stdio" }, bootProtocol: "linux64" },
  });
});

test("run parses every option", () => {
  const c = parseCommand(
    ["run", "--kernel", "k", "--initrd", "i", "--cmdline", "a b", "--vcpus", "4", "--mem", "3072", "--console", "file:/tmp/x", "--boot", "pvh"],
    limits,
  );
  assert.equal(c.cmd, "run");
  if (c.cmd !== "run") return;
  assert.equal(c.options.kernel, "k");
  assert.equal(c.options.cmdline, "a b");
  assert.equal(c.options.vcpus, 4);
  assert.equal(c.options.memMiB, 3072);
  assert.deepEqual(c.options.console, { kind: "file", path: "/tmp/x" });
  assert.equal(c.options.bootProtocol, "pvh");
});

test("bad arguments are UsageErrors with one clear sentence", () => {
  const bad: Array<[string[], RegExp]> = [
    [["run", "--vcpus", "0"], /--vcpus must be from 1 to 8, got 0/],
    [["run", "--vcpus", "9"], /--vcpus must be from 1 to 8/],
    [["run", "--vcpus", "two"], /--vcpus must be a whole number, got "two"/],
    [["run", "--mem", "1"], /--mem must be from 16 to 65536/],
    [["run", "--bogus"], /Unknown option '--bogus'/],
    [["run", "--kernel"], /argument missing|--kernel/],
    [["run", "--initrd", "x"], /--initrd needs --kernel/],
    [["run", "--console", "tty"], /--console must be stdio, none or file:PATH/],
    [["run", "--boot", "efi"], /--boot must be linux64 or pvh/],
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
