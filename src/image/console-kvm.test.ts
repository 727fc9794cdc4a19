// Integration test of the console as a person uses it: `typervisor run` with the starter image,
// typed into a tmux window (the terminal), as the command `typervisor image build` prints it. The
// guest's shell comes up on the serial console; keys reach it in raw mode (tmux send-keys) and its
// output reaches the window (capture-pane); the window's size reaches the guest's tty through the
// serial line itself (the image's `resize` asks the terminal, which answers through us), at boot
// and again after the window is resized; Ctrl-A x leaves with status 0 and gives the terminal back
// in the mode it had.
//
// A stock kernel needs hardware-KVM semantics: elsewhere this runs in the box, which carries tmux.
// It skips only when tmux, e2fsprogs or Debian's packages are missing, saying which.

import type { TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { kvmTests } from "../testing/kvm.js";
import { runCommand } from "./build.js";
import { findTool } from "./rootfs.js";
import { starterImage } from "./testing.js";

const kvmTest = kvmTests(import.meta.url);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** About 30 s of guest time to the shell under nested TCG in the box; seconds on hardware KVM. */
const BOOT_TIMEOUT_MS = 300_000;
/** A command's answer, once the shell is up. */
const ANSWER_TIMEOUT_MS = 60_000;
const PROMPT = /typervisor:~# $/m;

kvmTest(
  "the console in a terminal (tmux): a shell on ttyS0, keys in raw mode, the window size at boot and after a resize, Ctrl-A x leaves with status 0 and the terminal restored",
  { need: "hardware", timeout: BOOT_TIMEOUT_MS + 4 * ANSWER_TIMEOUT_MS + 60_000 },
  async (t: TestContext) => {
    const tmuxPath = findTool("tmux");
    if (tmuxPath === undefined) return t.skip("tmux is not installed (apt-get install tmux)");
    const image = starterImage(t, "tv-console-");
    if (image === undefined) return;
    const words = runCommand(image.out).split(" ");
    assert.equal(words[0], "typervisor");

    const sock = join(image.dir, "tmux.sock");
    const tmux = (...args: string[]): string => {
      const r = spawnSync(tmuxPath, ["-S", sock, "-f", "/dev/null", ...args], { encoding: "utf8", env: { ...process.env, TERM: "xterm" } });
      assert.equal(r.status, 0, `tmux ${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    // What the window runs: the printed command, then its status and the terminal's mode afterwards.
    const typervisor = [process.execPath, join(ROOT, "bin/typervisor.js"), ...words.slice(1), "--vcpus", "1"].join(" ");
    tmux("new-session", "-d", "-s", "tv", "-x", "120", "-y", "40", `${typervisor}; echo TV-EXIT=$?; stty -a; sleep 3600`);
    t.after(() => spawnSync(tmuxPath, ["-S", sock, "kill-server"]));
    tmux("set-option", "-t", "tv", "status", "off");

    let shown = 0;
    const pane = (): string => {
      const text = tmux("capture-pane", "-p", "-J", "-S", "-5000", "-t", "tv");
      // Mirrored to stderr as it grows, so the box (which stops a run that goes quiet) sees progress.
      const lines = text.split("\n");
      if (lines.length > shown) process.stderr.write(lines.slice(Math.max(0, shown - 1)).join("\n") + "\n");
      shown = lines.length;
      return text;
    };
    const waitFor = async (what: string, ok: (text: string) => boolean, timeoutMs: number): Promise<string> => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const text = pane();
        if (ok(text)) return text;
        if (Date.now() > deadline) {
          const shownText = text.split("\n").map((l) => l.trimEnd()).join("\n").trimEnd();
          assert.fail(`${what}: not seen within ${timeoutMs / 1000} s\n--- the window (${size()}) ---\n${shownText.slice(-4000)}`);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    const size = (): string => tmux("display-message", "-p", "-t", "tv", "#{pane_height} #{pane_width}").trim();
    const ask = async (command: string, answer: RegExp, what: string): Promise<string> => {
      const before = pane().length;
      tmux("send-keys", "-t", "tv", "-l", command);
      tmux("send-keys", "-t", "tv", "Enter");
      return waitFor(what, (text) => answer.test(text.slice(Math.max(0, before - 200))), ANSWER_TIMEOUT_MS);
    };

    await waitFor("the guest's shell prompt", (text) => PROMPT.test(text.trimEnd() + " "), BOOT_TIMEOUT_MS);

    // Keys in raw mode: the shell gets each one (arithmetic only the guest's shell does).
    await ask("echo answer=$((6 * 7)) tty=$(tty)", /^answer=42 tty=\/dev\/ttyS0$/m, "the shell's answer");

    // The size the window has, seen by the guest's tty since boot (the console's resize).
    const first = size();
    await ask("echo size=$(stty size)", new RegExp(`^size=${first}$`, "m"), `the guest's tty size ${first} (the window's)`);

    // Resized: after `resize` the guest's tty has the new size.
    tmux("resize-window", "-t", "tv", "-x", "100", "-y", "30");
    const second = size();
    assert.notEqual(second, first, "tmux resized the window");
    await ask("resize; echo size=$(stty size)", new RegExp(`^size=${second}$`, "m"), `the guest's tty size ${second} after resize`);

    // Ctrl-A x: typervisor stops the VM and exits 0; the terminal is back in canonical mode with echo.
    tmux("send-keys", "-t", "tv", "C-a");
    tmux("send-keys", "-t", "tv", "x");
    const after = await waitFor("typervisor's exit after Ctrl-A x", (text) => /TV-EXIT=\d+/.test(text), ANSWER_TIMEOUT_MS);
    assert.match(after, /TV-EXIT=0\b/, "Ctrl-A x ends typervisor with status 0");
    const mode = after.slice(after.indexOf("TV-EXIT="));
    assert.match(mode, /(^|\s)icanon(\s|$)/m, `canonical mode restored\n${mode}`);
    assert.match(mode, /(^|\s)echo(\s|$)/m, `echo restored\n${mode}`);
  },
);
