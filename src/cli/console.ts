// The console of an API-serving VMM, reachable by `typervisor console <id>`: guest serial output
// goes to the VMM's stdout and to every attached client (each new client first gets the recent
// output), and what a client types goes to the guest's UART. A Unix socket in the runtime
// directory, next to the VM's record; no shell, no control VM.

import { createServer, createConnection, type Server, type Socket } from "node:net";
import { unlinkSync } from "node:fs";
import { join } from "node:path";

/** Output kept for clients that attach later. */
const SCROLLBACK_BYTES = 64 * 1024;
/** Ctrl-A then x detaches, as in `typervisor run` and QEMU. */
const CTRL_A = 0x01;

export function consoleSocketPath(runtimeDir: string, id: string): string {
  return join(runtimeDir, `${id}.console`);
}

export interface ConsoleRelay {
  /** Guest output to send to every client. */
  output(chunk: Buffer): void;
  clients(): number;
  close(): Promise<void>;
}

export async function startConsoleRelay(path: string, onInput: (bytes: Buffer) => void): Promise<ConsoleRelay> {
  const clients = new Set<Socket>();
  let scrollback = Buffer.alloc(0);
  try {
    unlinkSync(path); // a stale socket of a VMM that died
  } catch {
    // None.
  }
  const server: Server = createServer((c) => {
    clients.add(c);
    if (scrollback.length > 0) c.write(scrollback);
    c.on("data", (d: Buffer) => onInput(d));
    c.on("error", () => c.destroy());
    c.on("close", () => clients.delete(c));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  server.unref();
  return {
    output(chunk) {
      scrollback = Buffer.concat([scrollback, chunk]);
      if (scrollback.length > SCROLLBACK_BYTES) scrollback = scrollback.subarray(scrollback.length - SCROLLBACK_BYTES);
      for (const c of clients) c.write(chunk);
    },
    clients: () => clients.size,
    async close() {
      for (const c of clients) c.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      try {
        unlinkSync(path);
      } catch {
        // Already gone.
      }
    },
  };
}

/**
 * Attaches this terminal to a VM's console until the VM ends or the user types Ctrl-A x.
 * Returns 0, or 1 when the console socket cannot be reached.
 */
export function attachConsole(path: string, io: { stdin: NodeJS.ReadStream; stdout: NodeJS.WriteStream; stderr: { write(s: string): unknown } }): Promise<number> {
  return new Promise((resolve) => {
    const sock = createConnection(path);
    const stdin = io.stdin;
    const tty = stdin.isTTY === true;
    let sawCtrlA = false;
    const onKeys = (chunk: Buffer) => {
      const out: number[] = [];
      for (const b of chunk) {
        if (sawCtrlA) {
          sawCtrlA = false;
          if (b === 0x78 /* x */) {
            finish(0);
            return;
          }
          if (b !== CTRL_A) out.push(CTRL_A);
        } else if (b === CTRL_A) {
          sawCtrlA = true;
          continue;
        }
        out.push(b);
      }
      if (out.length > 0) sock.write(Buffer.from(out));
    };
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      stdin.off("data", onKeys);
      if (tty) stdin.setRawMode(false);
      stdin.pause();
      sock.destroy();
      resolve(code);
    };
    sock.once("connect", () => {
      if (tty) stdin.setRawMode(true);
      stdin.on("data", onKeys);
      stdin.resume();
    });
    sock.on("data", (d: Buffer) => io.stdout.write(d));
    sock.on("error", (e) => {
      io.stderr.write(`typervisor console: cannot reach ${path}: ${(e as NodeJS.ErrnoException).code ?? e.message}\n`);
      finish(1);
    });
    sock.on("close", () => finish(0));
  });
}
