// ACPI for x86-64 microVMs: the tables (RSDP, XSDT, FADT, MADT, DSDT) and, as the `aml` namespace,
// the AML encoder they are written with.

export * from "./tables.js";
export * as aml from "./aml.js";
export { AmlError } from "./aml.js";
