import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { findLine, fnv1a64, fnv1a64Reference, hex64, hexToBytes, hexToString, parseProbeLines } from './probe-lines.js';

test('parseProbeLines: names, key=value fields, flags; ignores other lines and \\r', () => {
  const text = [
    'SeaBIOS noise',
    '+----- banner -----+',
    'PROBE start entry=pvh version=1\r',
    'PROBE exits done kind=pio n=10 tsc=1234',
    'PROBE demo ok',
    'not PROBE line',
    'PROBE',
    'PROBE e820 i=0 addr=0x0 size=0x9fc00 type=1\r\r',
    '',
  ].join('\n');
  const lines = parseProbeLines(text);
  assert.deepEqual(
    lines.map((l) => l.name),
    ['start', 'exits', 'demo', 'e820'],
  );
  assert.deepEqual(lines[0]!.fields, { entry: 'pvh', version: '1' });
  assert.equal(lines[0]!.raw, 'PROBE start entry=pvh version=1');
  assert.deepEqual(lines[1]!.fields, { done: '', kind: 'pio', n: '10', tsc: '1234' });
  assert.deepEqual(lines[2]!.fields, { ok: '' });
  assert.equal(lines[3]!.fields['size'], '0x9fc00');
});

test('parseProbeLines: a value may contain "=" (only the first splits)', () => {
  const [line] = parseProbeLines('PROBE error unknown_test=a=b\n');
  assert.deepEqual(line!.fields, { unknown_test: 'a=b' });
});

test('findLine: by name, with and without a predicate', () => {
  const lines = parseProbeLines('PROBE exits kind=pio n=5\nPROBE exits done kind=pio n=5 tsc=9\n');
  assert.equal(findLine(lines, 'exits')?.fields['n'], '5');
  assert.equal(findLine(lines, 'exits', (f) => 'done' in f)?.fields['tsc'], '9');
  assert.equal(findLine(lines, 'smp'), undefined);
});

test('hexToString / hexToBytes: round trip, and errors name the input', () => {
  const s = 'console=ttyS0 probe.run=boot,smp ünï';
  const hex = Buffer.from(s, 'utf8').toString('hex');
  assert.equal(hexToString(hex), s);
  assert.equal(hexToString(''), '');
  assert.deepEqual([...hexToBytes('00ffA0')], [0, 255, 160]);
  assert.throws(() => hexToBytes('abc'), /not a hex byte string/);
  assert.throws(() => hexToBytes('zz'), /not a hex byte string/);
});

test('fnv1a64: published test vectors (FNV reference: "" and "a" and "foobar")', () => {
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(fnv1a64(enc('')), 0xcbf29ce484222325n);
  assert.equal(fnv1a64(enc('a')), 0xaf63dc4c8601ec8cn);
  assert.equal(fnv1a64(enc('foobar')), 0x85944171f73967e8n);
  assert.equal(hex64(fnv1a64(enc(''))), '0xcbf29ce484222325');
});

test('fnv1a64: the fast path equals the BigInt reference on random data', () => {
  for (const n of [1, 7, 1000, 65537]) {
    const bytes = new Uint8Array(randomBytes(n));
    assert.equal(fnv1a64(bytes), fnv1a64Reference(bytes), `length ${n}`);
  }
});
