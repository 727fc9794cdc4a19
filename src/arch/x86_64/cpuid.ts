// Per-vCPU CPUID: KVM_GET_SUPPORTED_CPUID, patched with this vCPU's identity and the VM's
// topology (one package, one thread per core, `vcpuCount` cores). Pure: the VMM passes the result
// to KVM_SET_CPUID2. Bit positions: Intel SDM Vol.2A, CPUID instruction reference.

import type { CpuidEntry } from "../../kvm/types.js";

/** linux/kvm.h: KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic): the entry is selected by ECX too. */
export const KVM_CPUID_FLAG_SIGNIFICANT_INDEX = 1;

/** SDM Vol.2A CPUID leaf 01H. */
const LEAF_FEATURES = 0x1;
/** Leaf 01H EBX[31:24] initial APIC id, [23:16] max addressable logical processor ids. */
const L1_EBX_APIC_ID_SHIFT = 24;
const L1_EBX_LOGICAL_COUNT_SHIFT = 16;
/** Leaf 01H ECX[31]: reserved for hypervisor use, "hypervisor present" (Linux X86_FEATURE_HYPERVISOR). */
const L1_ECX_HYPERVISOR = 1 << 31;
/** Leaf 01H EDX[28] HTT: EBX[23:16] is valid. */
const L1_EDX_HTT = 1 << 28;

/** SDM Vol.2A leaf 04H: deterministic cache parameters. */
const LEAF_CACHE_PARAMS = 0x4;
/** Leaf 04H EAX[31:26]: max addressable core ids in the package - 1. */
const L4_EAX_CORES_SHIFT = 26;
const L4_EAX_CORES_MASK = 0x3f << 26;
/** Leaf 04H EAX[25:14]: max logical processor ids sharing this cache - 1. */
const L4_EAX_SHARING_SHIFT = 14;
const L4_EAX_SHARING_MASK = 0xfff << 14;
/** Leaf 04H EAX[7:5]: cache level; EAX[4:0] cache type (0 = no more caches). */
const L4_EAX_LEVEL_SHIFT = 5;

/** SDM Vol.2A leaf 06H: thermal and power management. */
const LEAF_POWER = 0x6;

/** SDM Vol.2A leaf 0BH (and V2 leaf 1FH): extended topology enumeration. */
const LEAF_TOPOLOGY = 0xb;
const LEAF_TOPOLOGY_V2 = 0x1f;
/** Leaf 0BH ECX[15:8] level types: 1 = SMT, 2 = Core (0 = invalid, ends the enumeration). */
const LEVEL_TYPE_SMT = 1;
const LEVEL_TYPE_CORE = 2;

/** Bits needed to hold ids 0..n-1 (SDM: x2APIC id shift for the next level). */
const idBits = (n: number): number => (n <= 1 ? 0 : 32 - Math.clz32(n - 1));

export interface CpuidTopology {
  vcpuId: number;
  vcpuCount: number;
}

/** One subleaf of 0BH/1FH for this topology. */
function topologyEntry(fn: number, index: number, flags: number, t: CpuidTopology): CpuidEntry {
  const x2apicId = t.vcpuId >>> 0;
  if (index === 0) {
    // SMT level: one thread per core, so the shift to the core level is 0.
    return { function: fn, index, flags, eax: 0, ebx: 1, ecx: (LEVEL_TYPE_SMT << 8) | index, edx: x2apicId };
  }
  if (index === 1) {
    // Core level: `vcpuCount` cores; the shift to the package level covers all core ids.
    return { function: fn, index, flags, eax: idBits(t.vcpuCount), ebx: t.vcpuCount, ecx: (LEVEL_TYPE_CORE << 8) | index, edx: x2apicId };
  }
  // Invalid level: EAX = EBX = 0, ECX[7:0] = index, type 0.
  return { function: fn, index, flags, eax: 0, ebx: 0, ecx: index, edx: x2apicId };
}

/**
 * This vCPU's CPUID table: a copy of `supported` with
 *  - leaf 1: initial APIC id = vcpuId, logical count = vcpuCount (+HTT when > 1), hypervisor bit;
 *  - leaf 4: cores per package = vcpuCount, caches above L2 shared by all, L1/L2 per core;
 *  - leaf 6: cleared (no power management, turbo or EPB in a microVM);
 *  - leaves 0BH and 1FH (when KVM reports them): SMT + core levels, x2APIC id = vcpuId;
 *  - leaf 0x40000000 and above: KVM's own, untouched ("KVMKVMKVM" turns on kvm-clock in Linux).
 */
export function vcpuCpuid(supported: readonly CpuidEntry[], t: CpuidTopology): CpuidEntry[] {
  if (!Number.isInteger(t.vcpuCount) || t.vcpuCount < 1 || t.vcpuCount > 255) {
    throw new RangeError(`vcpuCount ${t.vcpuCount} must be between 1 and 255 (8-bit logical processor count)`);
  }
  if (!Number.isInteger(t.vcpuId) || t.vcpuId < 0 || t.vcpuId >= t.vcpuCount) {
    throw new RangeError(`vcpuId ${t.vcpuId} must be between 0 and ${t.vcpuCount - 1}`);
  }
  const out: CpuidEntry[] = [];
  const topologyDone = new Set<number>();
  for (const src of supported) {
    const e: CpuidEntry = { ...src };
    switch (e.function) {
      case LEAF_FEATURES:
        e.ebx = ((e.ebx & 0x0000_ffff) | (t.vcpuId << L1_EBX_APIC_ID_SHIFT) | (t.vcpuCount << L1_EBX_LOGICAL_COUNT_SHIFT)) >>> 0;
        e.ecx = (e.ecx | L1_ECX_HYPERVISOR) >>> 0;
        e.edx = (t.vcpuCount > 1 ? e.edx | L1_EDX_HTT : e.edx & ~L1_EDX_HTT) >>> 0;
        break;
      case LEAF_CACHE_PARAMS: {
        if ((e.eax & 0x1f) === 0) break; // no cache at this subleaf
        const level = (e.eax >>> L4_EAX_LEVEL_SHIFT) & 0x7;
        const sharing = level <= 2 ? 0 : t.vcpuCount - 1;
        e.eax = ((e.eax & ~(L4_EAX_CORES_MASK | L4_EAX_SHARING_MASK)) |
          (((t.vcpuCount - 1) << L4_EAX_CORES_SHIFT) & L4_EAX_CORES_MASK) |
          ((sharing << L4_EAX_SHARING_SHIFT) & L4_EAX_SHARING_MASK)) >>> 0;
        break;
      }
      case LEAF_POWER:
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case LEAF_TOPOLOGY:
      case LEAF_TOPOLOGY_V2:
        // Replace KVM's subleaves (the host's topology) with ours: subleaves 0, 1 and a terminator.
        if (!topologyDone.has(e.function)) {
          topologyDone.add(e.function);
          const flags = e.flags | KVM_CPUID_FLAG_SIGNIFICANT_INDEX;
          for (let i = 0; i < 3; i++) out.push(topologyEntry(e.function, i, flags, t));
        }
        continue;
    }
    out.push(e);
  }
  return out;
}
