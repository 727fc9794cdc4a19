// The probe guest's virtio-rng driver (guest/src/rng.c) against QEMU's own virtio-rng-device on
// microvm (TCG without /dev/kvm), and its virtio-nsm driver (guest/src/nsm.c) against QEMU's
// virtio-nsm when this QEMU has one (9.x does; 7.2 does not, and then that test says so and skips).
// This verifies the guest side; our device models are verified by src/devices/virtio/{rng,nsm}
// and src/cards/{rng,nsm}-card tests, and against this guest only once a VMM with KVM runs it.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { findQemu, qemuProbeSkipReason, runProbeInQemu, type QemuProbeResult } from './qemu.js';
import { findLine, type ProbeLine } from './probe-lines.js';
import { parseSign1 } from '../security/cose.js';
import { parseAttestationPayload } from '../security/attestation.js';

const TIMEOUT_MS = 60_000;
// QEMU microvm's virtio-mmio is legacy (version 1) unless told otherwise; the driver refuses legacy devices.
const MODERN = ['-global', 'virtio-mmio.force-legacy=false'];

const skipReason = qemuProbeSkipReason;

function ready(t: TestContext): boolean {
  const reason = skipReason();
  if (reason !== null) t.skip(reason);
  return reason === null;
}

/** QEMU's name for its virtio-mmio NSM device, or null when this QEMU has none (before 9.1). */
function qemuNsmDevice(): string | null {
  const r = spawnSync(findQemu()!, ['-device', 'help'], { encoding: 'utf8' });
  const names = `${r.stdout}${r.stderr}`;
  return /name "virtio-nsm-device"/.test(names) ? 'virtio-nsm-device' : null;
}

/** The probe under QEMU with extra devices; killed a little before the test's own timeout. */
const runQemu = (cmdline: string, extra: string[]) => runProbeInQemu({ cmdline, extraArgs: extra, timeoutMs: TIMEOUT_MS - 5_000 });

const exitFor = (status: number) => (status << 1) | 1;
const describe = (r: QemuProbeResult) => `exit=${r.exitCode}\n${r.stdout}\n${r.stderr}`;

function must(r: QemuProbeResult, name: string): ProbeLine {
  const l = findLine(r.lines, name);
  assert.ok(l, `no "PROBE ${name}" line\n${describe(r)}`);
  return l;
}

test('qemu virtio-rng: rng reads 64 KiB from virtio-rng-device, every byte value present, none far above its share', { timeout: TIMEOUT_MS }, async (t) => {
  if (!ready(t)) return;
  const bytes = 64 * 1024;
  const r = await runQemu(`probe.run=rng probe.rng.bytes=${bytes}`, [...MODERN, '-device', 'virtio-rng-device']);
  assert.equal(r.exitCode, exitFor(0), describe(r));
  const f = must(r, 'rng').fields;
  assert.equal(f['ok'], '1');
  assert.equal(f['bytes'], String(bytes));
  assert.equal(f['all_equal'], '0');
  assert.equal(f['distinct'], '256');
  assert.ok(Number(f['requests']) >= bytes / 4096, 'at most 4 KiB per request');
  // 64 KiB uniform: 256 per value on average; a real RNG stays well inside [128, 400].
  assert.ok(Number(f['min_count']) > 128 && Number(f['max_count']) < 400, `${f['min_count']}..${f['max_count']}`);
  assert.match(f['fnv1a64'] ?? '', /^0x[0-9a-f]{16}$/);
});

test('qemu virtio-rng: no device is error=no_rng; a legacy (Version 1) device is refused; a bad option is reported', { timeout: TIMEOUT_MS }, async (t) => {
  if (!ready(t)) return;
  const none = await runQemu('probe.run=rng', MODERN);
  assert.equal(none.exitCode, exitFor(1), describe(none));
  assert.equal(must(none, 'rng').fields['error'], 'no_rng');
  const legacy = await runQemu('probe.run=rng', ['-device', 'virtio-rng-device']);
  assert.equal(legacy.exitCode, exitFor(1), describe(legacy));
  assert.equal(must(legacy, 'rng').fields['error'], 'legacy_version');
  const bad = await runQemu('probe.run=rng probe.rng.bytes=9G', [...MODERN, '-device', 'virtio-rng-device']);
  assert.equal(bad.exitCode, exitFor(1), describe(bad));
  assert.equal(must(bad, 'error').fields['bad_option'], 'probe.rng.bytes');
});

test('qemu virtio-nsm: nsm runs DescribeNSM, ExtendPCR(16)+DescribePCR(16) and Attestation with the command-line nonce and user_data', { timeout: TIMEOUT_MS }, async (t) => {
  if (!ready(t)) return;
  const dev = qemuNsmDevice();
  if (dev === null) {
    t.skip('this QEMU has no virtio-nsm device (added in QEMU 9.1; `qemu-system-x86_64 -device help` lists none): the probe nsm driver is not run against QEMU here (it runs against our own NSM card in src/probe/hosted.test.ts)');
    return;
  }
  const nonce = randomBytes(32);
  const userData = Buffer.from('probe user data');
  const r = await runQemu(`probe.run=nsm probe.nsm.nonce=${nonce.toString('hex')} probe.nsm.user_data=${userData.toString('hex')}`, [...MODERN, '-device', dev]);
  assert.equal(r.exitCode, exitFor(0), describe(r));
  const f = must(r, 'nsm').fields;
  assert.equal(f['ok'], '1');
  assert.equal(f['max_pcrs'], '32');
  assert.equal(f['pcr_match'], '1');
  assert.equal(f['pcr_lock'], '0');
  // QEMU signs with a throw-away key: check the document's fields, not its chain.
  const doc = parseAttestationPayload(parseSign1(Buffer.from(f['attestation_hex'] ?? '', 'hex')).payload);
  assert.deepEqual(Buffer.from(doc.nonce ?? []), nonce);
  assert.deepEqual(Buffer.from(doc.user_data ?? []), userData);
  assert.equal(Buffer.from(f['module_id_hex'] ?? '', 'hex').toString(), doc.module_id);
});
