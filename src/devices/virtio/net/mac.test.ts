// MAC addresses: parsing with clear errors, formatting, the derived default (IEEE 802 §9.2 bits).
import { test } from "node:test";
import assert from "node:assert/strict";
import { MacError, defaultMac, formatMac, parseMac } from "./mac.js";

test("parseMac: six colon-separated hex pairs, either case, round-trip through formatMac", () => {
  assert.deepEqual([...parseMac("06:00:ac:10:00:02")], [0x06, 0x00, 0xac, 0x10, 0x00, 0x02]);
  assert.deepEqual([...parseMac("02:AB:cd:EF:01:23")], [0x02, 0xab, 0xcd, 0xef, 0x01, 0x23]);
  assert.equal(formatMac(parseMac("02:AB:cd:EF:01:23")), "02:ab:cd:ef:01:23");
  // A universally administered unicast address is fine too.
  assert.equal(formatMac(parseMac("52:54:00:12:34:56")), "52:54:00:12:34:56");
});

test("parseMac refuses, saying why: wrong form, group (multicast/broadcast) addresses, all zeros", () => {
  for (const bad of ["", "06:00:ac:10:00", "06:00:ac:10:00:02:03", "06-00-ac-10-00-02", "6:0:ac:10:0:2", "06:00:ac:10:00:0g", " 06:00:ac:10:00:02", "0600ac100002"]) {
    assert.throws(() => parseMac(bad), (e: unknown) => e instanceof MacError && /six colon-separated pairs of hex digits/.test(e.message), JSON.stringify(bad));
  }
  for (const group of ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01", "07:00:00:00:00:01"]) {
    assert.throws(() => parseMac(group), (e: unknown) => e instanceof MacError && e.message.includes(`${group} is a group`), group);
  }
  assert.throws(() => parseMac("00:00:00:00:00:00"), /all zeros/);
  assert.throws(() => formatMac(new Uint8Array(5)), /6 bytes/);
});

test("defaultMac: locally administered unicast, stable for a seed, different across seeds", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const mac = defaultMac(`vm-${i}/eth0`);
    assert.equal(mac.byteLength, 6);
    assert.equal(mac[0]! & 0x01, 0, "I/G clear: unicast");
    assert.equal(mac[0]! & 0x02, 0x02, "U/L set: locally administered");
    assert.deepEqual(parseMac(formatMac(mac)), mac, "it passes our own validation");
    seen.add(formatMac(mac));
  }
  assert.equal(seen.size, 200);
  assert.deepEqual(defaultMac("vm-7/eth0"), defaultMac("vm-7/eth0"));
});
