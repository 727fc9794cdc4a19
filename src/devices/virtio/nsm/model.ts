// virtio-nsm, the card worker's side (device-kind.ts `model`): the NSM request handler over the
// VM's shared PCR bank, signing with the key the VMM handed over (kind.ts).

import { createPrivateKey } from "node:crypto";
import { SharedPcrBank } from "../../../cards/shared-pcr-bank.js";
import { handleNsmRequest, type NsmState } from "../../../security/nsm.js";
import { NsmDevice } from "./device.js";
import type { CardModel, ModelContext } from "../device-kind.js";
import type { NsmWorkerData } from "./kind.js";

/** Worker side: the NSM request handler over the shared PCR bank, signing with the key it was handed. */
export function createModel(ctx: ModelContext<NsmWorkerData>): CardModel {
  const d = ctx.data;
  const key = createPrivateKey({ key: Buffer.from(d.signingKeyPkcs8), format: "der", type: "pkcs8" });
  d.signingKeyPkcs8.fill(0);
  const state: NsmState = {
    moduleId: d.moduleId,
    bank: new SharedPcrBank(d.pcrBank),
    signer: { certificate: d.certificate, cabundle: d.cabundle, signingKey: key },
  };
  return new NsmDevice(ctx.mem, (req) => handleNsmRequest(state, req), ctx.stats);
}
