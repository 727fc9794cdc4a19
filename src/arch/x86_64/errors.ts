// Errors of the x86-64 boot path. The message is the documentation: one sentence, with the values
// that matter.

/** The image is not a kernel we can boot (wrong magic, wrong machine, malformed or truncated headers). */
export class KernelFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KernelFormatError";
  }
}

/** The image is valid but does not fit this VM (RAM too small, addresses outside RAM, limits exceeded). */
export class BootSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BootSetupError";
  }
}

export const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
