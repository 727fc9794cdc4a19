// The kernel command lines a VM gets when its config names none — one place for the SDK, the API,
// the CLI and the starter image (a small module: the CLI loads it before anything heavy).

/** The probe guest's default test. */
export const DEFAULT_PROBE_CMDLINE = "probe.run=demo";

/**
 * A Linux kernel's default: the console on COM1 (our 8250 at 0x3f8), reboot through the i8042
 * (`reboot=k`: the VMM ends the VM on the reset), reboot 1 s after a panic instead of hanging,
 * and no PCI probing (the machine has no PCI bus; its devices come from ACPI).
 */
export const DEFAULT_LINUX_CMDLINE = "console=ttyS0 reboot=k panic=1 pci=off";
