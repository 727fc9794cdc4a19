// The host side of a guest's vsock listener, in Firecracker's hybrid model (docs/vsock.md): connect
// to the VM's Unix socket `uds_path`, write `CONNECT <port>\n`, read `OK <host port>\n`; from then
// on the socket is the stream to the guest's listener on <port>.

import { connect, type Socket } from "node:net";

/** The guest refused, never answered, or the VM's vsock socket could not be reached. */
export class VsockConnectError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "VsockConnectError";
  }
}

/** Longest answer line we wait for: "OK " + a u32 + "\n". */
const MAX_ANSWER = 32;

/**
 * Opens a stream to the guest's vsock listener on `port` through the VM's Unix socket `udsPath`.
 * Resolves with the connected socket (a Duplex; bytes the guest sent right after accepting are
 * kept) and the host port the VMM gave the connection. Rejects with VsockConnectError when nothing
 * listens at `udsPath`, when the guest does not accept (the VMM closes the socket) or within
 * `timeoutMs`.
 */
export function connectVsock(udsPath: string, port: number, opts: { timeoutMs?: number } = {}): Promise<{ socket: Socket; hostPort: number }> {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) return Promise.reject(new VsockConnectError(`vsock port must be a u32, got ${port}`));
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const socket = connect(udsPath);
    let answer = Buffer.alloc(0);
    let done = false;
    const fail = (message: string, cause?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new VsockConnectError(message, cause === undefined ? undefined : { cause }));
    };
    const timer = setTimeout(() => fail(`vsock: the guest did not accept a connection to port ${port} within ${timeoutMs} ms`), timeoutMs);
    // Paused mode ('readable' + read()) for the answer line, so nothing after it is consumed: once
    // the listener is gone the socket flows for whoever reads it next.
    const onReadable = (): void => {
      for (let chunk: Buffer | null; !done && (chunk = socket.read() as Buffer | null) !== null; ) {
        answer = Buffer.concat([answer, chunk]);
        const nl = answer.indexOf(0x0a);
        if (nl < 0) {
          if (answer.length > MAX_ANSWER) fail(`vsock: ${udsPath} answered something other than "OK <port>"`);
          continue;
        }
        const m = /^OK (\d+)$/.exec(answer.subarray(0, nl).toString("latin1"));
        if (m === null) return fail(`vsock: ${udsPath} answered ${JSON.stringify(answer.subarray(0, nl).toString("latin1").slice(0, 40))}, not "OK <port>"`);
        done = true;
        clearTimeout(timer);
        socket.off("readable", onReadable);
        socket.off("error", onError);
        socket.off("close", onClose);
        const rest = answer.subarray(nl + 1);
        if (rest.length > 0) socket.unshift(rest);
        resolve({ socket, hostPort: Number(m[1]) });
      }
    };
    const onError = (e: NodeJS.ErrnoException): void =>
      fail(e.code === "ENOENT" || e.code === "ECONNREFUSED" ? `vsock: nothing listens at ${udsPath} (${e.code}): is the VM running with a vsock device?` : `vsock: ${udsPath}: ${e.message}`, e);
    const onClose = (): void => fail(`vsock: the guest refused the connection to port ${port} (nothing listens there)`);
    socket.on("readable", onReadable);
    socket.on("error", onError);
    socket.on("close", onClose);
    socket.once("connect", () => socket.write(`CONNECT ${port}\n`));
  });
}
