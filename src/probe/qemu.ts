// Runs the probe guest under QEMU (`-M microvm,acpi=off`), the peer we measure against
// (DESIGN.md §4, §6 "QEMU as the peer"). The serial port is QEMU's stdio (-nographic).
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { probePath } from './path.js';
import { parseProbeLines, type ProbeLine } from './probe-lines.js';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** isa-debug-exit: a guest write of v to this port makes QEMU exit with (v << 1) | 1. */
export const DEBUG_EXIT_PORT = 0xf4;

export interface QemuProbeOptions {
  /** Kernel command line (-append); the probe defaults to `probe.run=demo` without one. */
  cmdline?: string;
  /** Initrd file (-initrd): the probe reports its address, size and FNV-1a 64. */
  initrd?: string;
  /** vCPUs (-smp); default 1. */
  smp?: number;
  /** Guest RAM in MiB (-m); default 256. */
  memMiB?: number;
  /** Kill QEMU after this long; default 30 s. */
  timeoutMs?: number;
  /** Default: kvm when /dev/kvm is usable, else tcg. */
  accel?: 'kvm' | 'tcg';
  /** Arguments appended after the kernel's (devices, drives, -global). */
  extraArgs?: string[];
  /** The ELF to boot; default probePath(). */
  kernel?: string;
}

export interface QemuProbeResult {
  stdout: string;
  /** QEMU's exit status; null when it was killed (timeout). */
  exitCode: number | null;
  lines: ProbeLine[];
  /** True when QEMU was killed because it ran past timeoutMs. */
  timedOut: boolean;
  stderr: string;
}

/** Absolute path of qemu-system-x86_64 on PATH, or null. */
export function findQemu(): string | null {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, QEMU_BINARY);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** Whether /dev/kvm exists and can be opened read-write by this process. */
export function kvmUsable(): boolean {
  if (!existsSync('/dev/kvm')) return false;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The QEMU argument vector for one probe run (exported for tests and benchmarks). */
export function qemuArgs(opts: QemuProbeOptions & { kernel: string; accel: 'kvm' | 'tcg' }): string[] {
  const args = [
    '-M', 'microvm,acpi=off',
    '-accel', opts.accel,
    '-m', String(opts.memMiB ?? 256),
    '-smp', String(opts.smp ?? 1),
    '-nographic', // COM1 on stdio
    '-no-reboot', // a triple fault or reset ends QEMU instead of rebooting
    '-device', `isa-debug-exit,iobase=0x${DEBUG_EXIT_PORT.toString(16)},iosize=0x04`,
    '-kernel', opts.kernel,
  ];
  if (opts.cmdline !== undefined) args.push('-append', opts.cmdline);
  if (opts.initrd !== undefined) args.push('-initrd', opts.initrd);
  if (opts.extraArgs !== undefined) args.push(...opts.extraArgs);
  return args;
}

/** Why a probe-under-QEMU test cannot run here (QEMU or the built guest missing), or null. Tests skip with it. */
export function qemuProbeSkipReason(): string | null {
  if (findQemu() === null) return 'qemu-system-x86_64 not installed: apt-get install qemu-system-x86';
  try {
    probePath();
  } catch (e) {
    return (e as Error).message;
  }
  return null;
}

/** Boots the probe under QEMU and collects its serial output; kills QEMU on timeout. */
export function runProbeInQemu(opts: QemuProbeOptions = {}): Promise<QemuProbeResult> {
  const qemu = findQemu();
  if (qemu === null) {
    return Promise.reject(new Error(`${QEMU_BINARY} not found on PATH (install qemu-system-x86)`));
  }
  const kernel = opts.kernel ?? probePath();
  const accel = opts.accel ?? (kvmUsable() ? 'kvm' : 'tcg');
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const args = qemuArgs({ ...opts, kernel, accel });

  return new Promise((resolve, reject) => {
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`could not start ${qemu}: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      resolve({
        stdout,
        exitCode: timedOut ? null : code,
        lines: parseProbeLines(stdout),
        timedOut,
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}
