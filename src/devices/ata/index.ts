// The emulated ATA disk: device model, register numbers, and a raw-image backend.
// Wiring (src/vmm, per drive with path=emulated), in every vCPU worker:
//   const state = createAtaState();                     // once, shared with every worker
//   const image = openAtaImage(path, readOnly);         // once, in the VMM; pass image.fd, image.sizeBytes
//   const ata = createAtaBusDevices(state, new FileAtaBackend(image.fd, image.sizeBytes), irq);
//   pio.insert(ATA_PRIMARY_COMMAND_BASE, ATA_COMMAND_BLOCK_LEN, "ata0", ata.commandBlock);
//   pio.insert(ATA_PRIMARY_CONTROL_BASE, ATA_CONTROL_BLOCK_LEN, "ata0-ctl", ata.controlBlock);
// and append `typervisor_ata=0x1f0:14` to the command line (the probe's ata tests require it;
// guest/README.md).
export * from "./spec.js";
export * from "./device.js";
export * from "./file-backend.js";
