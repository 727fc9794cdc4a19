// virtio-nsm as a device kind (device-kind.ts): the guest's Nitro Secure Module, signing with the
// security chip's key over the VM's shared PCR bank (DESIGN.md §5).

import { createPrivateKey, KeyObject } from "node:crypto";
import { CardConfigError } from "../../../cards/errors.js";
import { DriveConfigError } from "../../../cards/blk-file.js";
import { SharedPcrBank } from "../../../cards/shared-pcr-bank.js";
import { chipLoad } from "../../../security/chip.js";
import { nsmDeviceInfo } from "./device.js";
import type { VirtioDeviceKind } from "../device-kind.js";
import type { NsmConfig } from "../../../vmm/drives.js";

/** Who signs attestation documents: a chip directory (chipLoad), or its material directly. */
export type NsmSigner =
  | { chipDir: string }
  | {
      /** DER of the leaf (signing) certificate. */
      certificate: Uint8Array;
      /** DER certificates, root first (docs/attestation_process.md §3.2.3). */
      cabundle: Uint8Array[];
      /** The leaf's P-384 private key: a KeyObject, or PKCS#8 DER bytes. */
      signingKey: KeyObject | Uint8Array;
    };

/** virtio-nsm (device ID 33): the guest's Nitro Secure Module over the VM's shared PCR bank. */
export interface NsmCardConfig {
  signer: NsmSigner;
  /** module_id of DescribeNSM and of attestation documents. */
  moduleId: string;
  /** The VM's PCR bank, shared with the VMM (SharedPcrBank.from(measureBoot(...)) before start). */
  pcrs: SharedPcrBank;
  queueSize?: number;
}

/** What the card worker gets (model.ts). */
export interface NsmWorkerData {
  moduleId: string;
  pcrBank: SharedArrayBuffer;
  certificate: Uint8Array;
  cabundle: Uint8Array[];
  /** PKCS#8 DER of the signing key; the main thread's copy is zeroed once the worker has it. */
  signingKeyPkcs8: Uint8Array;
}

function resolveSigner(signer: NsmSigner): { certificate: Uint8Array; cabundle: Uint8Array[]; key: KeyObject } {
  if ("chipDir" in signer) {
    const chip = chipLoad(signer.chipDir); // ChipError names the file at fault
    return { certificate: chip.leaf.der, cabundle: [chip.root.der], key: chip.leafKey };
  }
  let key: KeyObject;
  try {
    key =
      signer.signingKey instanceof KeyObject
        ? signer.signingKey
        : createPrivateKey({ key: Buffer.from(signer.signingKey), format: "der", type: "pkcs8" });
  } catch (e) {
    throw new CardConfigError(`nsm signer: signingKey is not a PKCS#8 DER private key (${(e as Error).message})`);
  }
  if (key.type !== "private" || key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "secp384r1") {
    throw new CardConfigError("nsm signer: signingKey must be a P-384 EC private key (ES384)");
  }
  if (signer.certificate.length === 0 || signer.cabundle.length === 0) {
    throw new CardConfigError("nsm signer: a leaf certificate and a cabundle with at least the root are required");
  }
  return { certificate: signer.certificate, cabundle: signer.cabundle, key };
}

export const nsmKind: VirtioDeviceKind<NsmCardConfig, NsmConfig> = {
  kind: "nsm",
  instances(config) {
    const nsm = config.nsm;
    if (nsm === undefined) return [];
    // The chip identity is checked here, at the edge, rather than when the card starts.
    try {
      chipLoad(nsm.chipDir);
    } catch (e) {
      throw new DriveConfigError(`nsm: ${(e as Error).message}`);
    }
    return [nsm];
  },
  slotName: () => "virtio-nsm",
  cardConfig: (nsm, ctx) => ({ signer: { chipDir: nsm.chipDir }, moduleId: nsm.moduleId ?? `typervisor-${ctx.vmId}`, pcrs: ctx.pcrs }),
  open(c) {
    if (!(c.pcrs instanceof SharedPcrBank)) throw new CardConfigError("nsm pcrs must be a SharedPcrBank (src/cards/shared-pcr-bank.ts)");
    if (typeof c.moduleId !== "string" || c.moduleId.length === 0) throw new CardConfigError("nsm moduleId must be a non-empty string");
    const s = resolveSigner(c.signer);
    const pkcs8 = new Uint8Array(s.key.export({ format: "der", type: "pkcs8" }));
    const data: NsmWorkerData = { moduleId: c.moduleId, pcrBank: c.pcrs.sab, certificate: s.certificate, cabundle: s.cabundle, signingKeyPkcs8: pkcs8 };
    return { info: nsmDeviceInfo({ queueSize: c.queueSize }), workerData: data, release: () => {}, handedOver: () => pkcs8.fill(0) };
  },
  // The worker side is a module of its own: the NSM protocol (CBOR, COSE) is loaded by the card
  // worker that answers it, not by every process that plans a VM.
  model: new URL("./model.js", import.meta.url),
  loadModel: () => import("./model.js"),
  // A group of our own (Firecracker has no NSM), with the block group's key names.
  metricGroups: (_, m) => ({
    nsm: {
      request_count: m.requests,
      bytes: m.bytes,
      execute_fails: m.errors,
      queue_event_count: m.kicks,
      interrupt_count: m.interrupts,
      needs_reset: m.needsReset,
    },
  }),
};
