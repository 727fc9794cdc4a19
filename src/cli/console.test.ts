// The console of an API-serving VMM (serve mode, over the fake machine): a client attaching
// later gets the recent output, sees new output, and what it types reaches the guest's UART.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createConnection } from "node:net";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { apiRequest } from "../api/index.js";
import { fakeFactory, fakeKernel, tempDir, text, BLOCK } from "../api/testing.js";
import { serve } from "./serve.js";
import { consoleSocketPath } from "./console.js";
import type { VmExit } from "../vmm/vm.js";

async function waitFor(what: string, pred: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("console: scrollback on attach; typed bytes go to the VM's UART input; the socket goes away with the VMM", { timeout: 30_000 }, async () => {
  const dir = tempDir();
  const runtime = join(dir, "run");
  const apiSock = join(dir, "api.sock");
  let ctl: Parameters<NonNullable<Parameters<typeof serve>[0]["onReady"]>>[0] | undefined;
  const stderr: string[] = [];
  const done = serve(
    {
      apiSock,
      noApi: false,
      id: "c1",
      runtimeDir: runtime,
      vmFactory: fakeFactory([[...text("hello console\n"), { inb: 0x3fd }, BLOCK]]),
      onReady: (c) => (ctl = c),
    },
    { stderr: { write: (s: string) => stderr.push(s) }, exitStatus: (e: VmExit) => (e.kind === "stopped" ? 0 : 9) },
  );
  await waitFor("the API", () => ctl !== undefined);
  assert.equal((await apiRequest(apiSock, "PUT", "/boot-source", { kernel_image_path: fakeKernel(dir) })).status, 204);
  assert.equal((await apiRequest(apiSock, "PUT", "/actions", { action_type: "InstanceStart" })).status, 204);

  const path = consoleSocketPath(runtime, "c1");
  assert.ok(existsSync(path));
  const client = createConnection(path);
  let seen = "";
  client.on("data", (d: Buffer) => (seen += d.toString()));
  await waitFor("the scrollback", () => seen.includes("hello console\n"));
  // What a client types is handed to the VM's UART (whose queueing is tested in src/vmm).
  const vm = ctl!.handle.vm!;
  const typed: string[] = [];
  const original = vm.sendConsoleInput.bind(vm);
  vm.sendConsoleInput = (bytes: Uint8Array) => {
    typed.push(Buffer.from(bytes).toString());
    return original(bytes);
  };
  client.write("ls\n");
  await waitFor("the typed bytes", () => typed.join("") === "ls\n");
  client.end();

  ctl!.stop();
  assert.equal(await done, 0, stderr.join(""));
  assert.equal(existsSync(path), false, "the console socket is removed");
  assert.equal(existsSync(apiSock), false);
});
