// MAC addresses for the network card (IEEE 802 48-bit addresses, the `mac` of virtio 1.2 §5.1.4).
// Bit 0 of the first octet is the I/G bit (1 = group/multicast: never a card's address); bit 1
// is the U/L bit (1 = locally administered: what a VMM should invent). IEEE 802 "9.2 48-bit
// universal LAN MAC addresses", the clause virtio 1.2 §5.1.4.2 points drivers to.
import { createHash } from "node:crypto";
import { MAC_BYTES } from "./spec.js";

/** IEEE 802 §9.2: the I/G (individual/group) bit of the first octet. */
const MAC_GROUP_BIT = 0x01;
/** IEEE 802 §9.2: the U/L (universal/local) bit of the first octet. */
const MAC_LOCAL_BIT = 0x02;

export class MacError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MacError";
  }
}

/**
 * Parses "06:00:ac:10:00:02" (six pairs of hex digits, colon-separated, either case) into 6 bytes.
 * Throws MacError naming the problem: wrong form, a group (multicast/broadcast) address, or zero.
 */
export function parseMac(text: string): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) {
    throw new MacError(`MAC address "${text}" is not six colon-separated pairs of hex digits, like 06:00:ac:10:00:02`);
  }
  const mac = Uint8Array.from(text.split(":"), (h) => parseInt(h, 16));
  if ((mac[0]! & MAC_GROUP_BIT) !== 0) {
    throw new MacError(`MAC address ${text} is a group (multicast or broadcast) address: bit 0 of the first octet must be 0 for a card`);
  }
  if (mac.every((b) => b === 0)) throw new MacError(`MAC address ${text} is all zeros`);
  return mac;
}

/** "06:00:ac:10:00:02" for 6 bytes. */
export function formatMac(mac: Uint8Array): string {
  if (mac.byteLength !== MAC_BYTES) throw new MacError(`a MAC address has ${MAC_BYTES} bytes, not ${mac.byteLength}`);
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * A locally administered unicast MAC derived from `seed` (the VM id and card index, say): the same
 * seed always gives the same address, so a guest's DHCP lease survives a restart, and different
 * seeds collide with probability 2^-46 per pair. First octet: U/L set, I/G clear (IEEE 802 §9.2).
 */
export function defaultMac(seed: string): Uint8Array {
  const mac = new Uint8Array(createHash("sha256").update(`typervisor-mac:${seed}`).digest().subarray(0, MAC_BYTES));
  mac[0] = (mac[0]! & ~MAC_GROUP_BIT) | MAC_LOCAL_BIT;
  return mac;
}
