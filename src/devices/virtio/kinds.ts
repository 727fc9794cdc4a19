// Every virtio device kind the VMM knows, one line each (device-kind.ts). Slots are given in this
// order: card drives first (so the first is the guest's /dev/vda), then entropy, then the NSM, then
// the network interfaces, then the vsock device.

import type { VirtioDeviceKind } from "./device-kind.js";
import { blkKind, type BlkCardConfig } from "./blk/kind.js";
import { rngKind, type RngCardConfig } from "./rng/kind.js";
import { nsmKind, type NsmCardConfig } from "./nsm/kind.js";
import { netKind, type NetConfig } from "./net/kind.js";
import { vsockKind, type VsockConfig } from "./vsock/kind.js";

/** Each kind's card config, by kind name. */
export interface KindConfigs {
  blk: BlkCardConfig;
  rng: RngCardConfig | undefined;
  nsm: NsmCardConfig;
  net: NetConfig;
  vsock: VsockConfig;
}

export const VIRTIO_KINDS: { readonly [K in keyof KindConfigs]: VirtioDeviceKind<KindConfigs[K], any> } = {
  blk: blkKind,
  rng: rngKind,
  nsm: nsmKind,
  net: netKind,
  vsock: vsockKind,
};

/** The kind named `name` (a CardConfigError-free lookup: names come from code, not from users). */
export function virtioKind(name: string): VirtioDeviceKind<unknown, unknown> {
  const k = (VIRTIO_KINDS as unknown as Record<string, VirtioDeviceKind<unknown, unknown> | undefined>)[name];
  if (k === undefined) throw new Error(`no virtio device kind "${name}" (kinds.ts lists ${Object.keys(VIRTIO_KINDS).join(", ")})`);
  return k;
}

/** Every kind, in slot order. */
export const ALL_VIRTIO_KINDS: readonly VirtioDeviceKind<unknown, unknown>[] = Object.values(VIRTIO_KINDS) as unknown as VirtioDeviceKind<unknown, unknown>[];
