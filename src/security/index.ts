// The security chip: PCRs and measured boot, chip identity, attestation documents, the NSM request handler.
export * from "./pcr.js";
export * from "./cose.js";
export * from "./x509.js";
export * from "./chip.js";
export * from "./attestation.js";
export * from "./nsm.js";
export * from "./image.js";
export { chipCommand, measureCommand, attestCommand, signCommand, defaultChipDir, type CliIo, type CommandHandler } from "./cli.js";
