/*
 * ABI check for src/sys: prints, as one JSON object, every ioctl number, constant, struct size and
 * field offset that src/sys/kvm-abi.ts, src/sys/libc.ts, src/sys/tun.ts and src/sys/unix.ts declare (tun.ts under "tun",
 * unix.ts under "unix"), computed by the C compiler from
 * the system headers. src/sys/kvm-abi.test.ts compiles this with gcc, runs it, and compares every
 * value name by name, in both directions (a name missing on either side fails the test).
 *
 * Build: gcc -std=gnu11 -Wall -Werror -o abi-check src/sys/abi-check.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <net/if.h>
#include <poll.h>
#include <time.h>
#include <linux/falloc.h>
#include <linux/kvm.h>
#include <asm/kvm.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

static int first;

static void open_obj(const char *name) {
  printf("%s\"%s\":{", first ? "" : ",", name);
  first = 1;
}
static void close_obj(void) {
  printf("}");
  first = 0;
}
static void num(const char *name, unsigned long long value) {
  printf("%s\"%s\":%llu", first ? "" : ",", name, value);
  first = 0;
}

/* A named value: ioctl number, constant or errno. */
#define V(name) num(#name, (unsigned long long)(name))
/* A struct: its size, then its fields' offsets keyed by member designator. */
#define STRUCT(s) do { open_obj(#s); num("size", sizeof(struct s)); open_obj("fields"); } while (0)
#define F(s, member) num(#member, offsetof(struct s, member))
#define END_STRUCT() do { close_obj(); close_obj(); } while (0)
/* An array member's element count. */
#define LEN(s, member) (sizeof(((struct s *)0)->member) / sizeof(((struct s *)0)->member[0]))

int main(void) {
  printf("{");
  first = 1;

  open_obj("ioctls");
  first = 1;
  V(KVM_GET_API_VERSION); V(KVM_CREATE_VM); V(KVM_GET_MSR_INDEX_LIST); V(KVM_CHECK_EXTENSION);
  V(KVM_GET_VCPU_MMAP_SIZE); V(KVM_GET_SUPPORTED_CPUID); V(KVM_CREATE_VCPU); V(KVM_SET_USER_MEMORY_REGION);
  V(KVM_SET_TSS_ADDR); V(KVM_SET_IDENTITY_MAP_ADDR); V(KVM_CREATE_IRQCHIP); V(KVM_IRQ_LINE);
  V(KVM_SET_GSI_ROUTING); V(KVM_IRQFD); V(KVM_CREATE_PIT2); V(KVM_IOEVENTFD); V(KVM_SIGNAL_MSI);
  V(KVM_RUN); V(KVM_GET_REGS); V(KVM_SET_REGS); V(KVM_GET_SREGS); V(KVM_SET_SREGS); V(KVM_GET_MSRS);
  V(KVM_SET_MSRS); V(KVM_GET_FPU); V(KVM_SET_FPU); V(KVM_GET_LAPIC); V(KVM_SET_LAPIC); V(KVM_SET_CPUID2);
  V(KVM_GET_MP_STATE); V(KVM_SET_MP_STATE);
  close_obj();

  open_obj("caps");
  first = 1;
  V(KVM_CAP_IRQCHIP); V(KVM_CAP_HLT); V(KVM_CAP_USER_MEMORY); V(KVM_CAP_SET_TSS_ADDR); V(KVM_CAP_EXT_CPUID);
  V(KVM_CAP_NR_VCPUS); V(KVM_CAP_NR_MEMSLOTS); V(KVM_CAP_MP_STATE); V(KVM_CAP_SYNC_MMU); V(KVM_CAP_USER_NMI);
  V(KVM_CAP_IRQ_ROUTING); V(KVM_CAP_IRQ_INJECT_STATUS); V(KVM_CAP_IRQFD); V(KVM_CAP_PIT2);
  V(KVM_CAP_PIT_STATE2); V(KVM_CAP_IOEVENTFD); V(KVM_CAP_SET_IDENTITY_MAP_ADDR); V(KVM_CAP_ADJUST_CLOCK);
  V(KVM_CAP_INTERNAL_ERROR_DATA); V(KVM_CAP_VCPU_EVENTS); V(KVM_CAP_DEBUGREGS); V(KVM_CAP_XSAVE);
  V(KVM_CAP_XCRS); V(KVM_CAP_GET_TSC_KHZ); V(KVM_CAP_MAX_VCPUS); V(KVM_CAP_ONE_REG);
  V(KVM_CAP_TSC_DEADLINE_TIMER); V(KVM_CAP_SIGNAL_MSI); V(KVM_CAP_READONLY_MEM);
  V(KVM_CAP_IOEVENTFD_ANY_LENGTH); V(KVM_CAP_MAX_VCPU_ID); V(KVM_CAP_IMMEDIATE_EXIT);
  V(KVM_CAP_SYSTEM_EVENT_DATA);
  close_obj();

  open_obj("constants");
  first = 1;
  /* kvm-abi.ts: KVM_CONSTANTS */
  V(KVM_API_VERSION); V(KVMIO); V(KVM_NR_INTERRUPTS); V(KVM_APIC_REG_SIZE);
  V(KVM_EXIT_UNKNOWN); V(KVM_EXIT_EXCEPTION); V(KVM_EXIT_IO); V(KVM_EXIT_HYPERCALL); V(KVM_EXIT_DEBUG);
  V(KVM_EXIT_HLT); V(KVM_EXIT_MMIO); V(KVM_EXIT_IRQ_WINDOW_OPEN); V(KVM_EXIT_SHUTDOWN); V(KVM_EXIT_FAIL_ENTRY);
  V(KVM_EXIT_INTR); V(KVM_EXIT_SET_TPR); V(KVM_EXIT_TPR_ACCESS); V(KVM_EXIT_NMI); V(KVM_EXIT_INTERNAL_ERROR);
  V(KVM_EXIT_SYSTEM_EVENT); V(KVM_EXIT_IOAPIC_EOI); V(KVM_EXIT_X86_RDMSR); V(KVM_EXIT_X86_WRMSR);
  V(KVM_EXIT_X86_BUS_LOCK); V(KVM_EXIT_NOTIFY);
  V(KVM_EXIT_IO_IN); V(KVM_EXIT_IO_OUT);
  V(KVM_INTERNAL_ERROR_EMULATION); V(KVM_INTERNAL_ERROR_SIMUL_EX); V(KVM_INTERNAL_ERROR_DELIVERY_EV);
  V(KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON);
  V(KVM_SYSTEM_EVENT_SHUTDOWN); V(KVM_SYSTEM_EVENT_RESET); V(KVM_SYSTEM_EVENT_CRASH);
  V(KVM_SYSTEM_EVENT_WAKEUP); V(KVM_SYSTEM_EVENT_SUSPEND); V(KVM_SYSTEM_EVENT_SEV_TERM);
  V(KVM_MEM_LOG_DIRTY_PAGES); V(KVM_MEM_READONLY); V(KVM_PIT_SPEAKER_DUMMY);
  V(KVM_IOEVENTFD_FLAG_DATAMATCH); V(KVM_IOEVENTFD_FLAG_PIO); V(KVM_IOEVENTFD_FLAG_DEASSIGN);
  V(KVM_IRQFD_FLAG_DEASSIGN); V(KVM_IRQFD_FLAG_RESAMPLE); V(KVM_IRQ_ROUTING_IRQCHIP); V(KVM_IRQ_ROUTING_MSI);
  V(KVM_IRQCHIP_PIC_MASTER); V(KVM_IRQCHIP_PIC_SLAVE); V(KVM_IRQCHIP_IOAPIC);
  V(KVM_MP_STATE_RUNNABLE); V(KVM_MP_STATE_UNINITIALIZED); V(KVM_MP_STATE_INIT_RECEIVED);
  V(KVM_MP_STATE_HALTED); V(KVM_MP_STATE_SIPI_RECEIVED); V(KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
  num("KVM_RUN_INTERNAL_DATA_LEN", LEN(kvm_run, internal.data));
  num("KVM_RUN_SYSTEM_EVENT_DATA_LEN", LEN(kvm_run, system_event.data));
  num("KVM_RUN_MMIO_DATA_LEN", LEN(kvm_run, mmio.data));
  num("KVM_SREGS_INTERRUPT_BITMAP_LEN", LEN(kvm_sregs, interrupt_bitmap));
  num("KVM_FPU_FPR_BYTES", sizeof(((struct kvm_fpu *)0)->fpr));
  num("KVM_FPU_XMM_BYTES", sizeof(((struct kvm_fpu *)0)->xmm));
  /* libc.ts: LIBC_CONSTANTS */
  V(O_RDONLY); V(O_WRONLY); V(O_RDWR); V(O_CREAT); V(O_TRUNC); V(O_NONBLOCK); V(O_CLOEXEC);
  V(PROT_NONE); V(PROT_READ); V(PROT_WRITE); V(PROT_EXEC); V(MAP_SHARED); V(MAP_PRIVATE); V(MAP_FIXED);
  V(MAP_ANONYMOUS); V(MAP_NORESERVE); V(MAP_FIXED_NOREPLACE); V(MFD_CLOEXEC); V(MFD_ALLOW_SEALING);
  V(FALLOC_FL_KEEP_SIZE); V(FALLOC_FL_PUNCH_HOLE); V(FALLOC_FL_ZERO_RANGE);
  V(CLOCK_THREAD_CPUTIME_ID); num("TIMESPEC_SIZE", sizeof(struct timespec));
  V(POLLIN); V(POLLOUT); V(POLLERR); V(POLLHUP); V(POLLNVAL); num("POLLFD_SIZE", sizeof(struct pollfd));
  num("POLLFD_EVENTS_OFFSET", offsetof(struct pollfd, events)); num("POLLFD_REVENTS_OFFSET", offsetof(struct pollfd, revents));
  V(EFD_SEMAPHORE); V(EFD_CLOEXEC); V(EFD_NONBLOCK); V(SIGUSR1); V(SIGUSR2); V(SYS_gettid); V(SYS_ioctl);
  V(CLOCK_MONOTONIC); num("ITIMERSPEC_SIZE", sizeof(struct itimerspec)); V(SIGEV_THREAD_ID);
  num("SIGEVENT_SIZE", sizeof(struct sigevent)); num("SIGEVENT_SIGNO_OFFSET", offsetof(struct sigevent, sigev_signo));
  num("SIGEVENT_NOTIFY_OFFSET", offsetof(struct sigevent, sigev_notify));
  /* Debian 12's glibc 2.36 has no sigev_notify_thread_id macro: the union member itself (the kernel spells it _tid too). */
  num("SIGEVENT_TID_OFFSET", offsetof(struct sigevent, _sigev_un._tid));
  close_obj();

  /* MAP_FAILED as an unsigned 64-bit number, in a string (it does not fit a JSON double). */
  printf(",\"MAP_FAILED\":\"%llu\"", (unsigned long long)(unsigned long)MAP_FAILED);

  /* errors.ts builds its table from Node's os.constants.errno; check the codes we rely on. */
  open_obj("errno");
  first = 1;
  V(EPERM); V(ENOENT); V(ESRCH); V(EINTR); V(EIO); V(ENXIO); V(E2BIG); V(ENOEXEC); V(EBADF); V(ECHILD);
  V(EAGAIN); V(ENOMEM); V(EACCES); V(EFAULT); V(EBUSY); V(EEXIST); V(EXDEV); V(ENODEV); V(ENOTDIR);
  V(EISDIR); V(EINVAL); V(ENFILE); V(EMFILE); V(ENOTTY); V(EFBIG); V(ENOSPC); V(ESPIPE); V(EROFS);
  V(EMLINK); V(EPIPE); V(ERANGE); V(EDEADLK); V(ENAMETOOLONG); V(ENOSYS); V(ENOTEMPTY); V(ELOOP);
  V(ENODATA); V(EOVERFLOW); V(EOPNOTSUPP); V(ECONNREFUSED); V(ETIMEDOUT); V(EHOSTUNREACH); V(ECANCELED);
  V(EADDRINUSE); V(ECONNRESET); V(ENOTSOCK);
  close_obj();

  open_obj("structs");
  first = 1;

  STRUCT(kvm_run);
  F(kvm_run, request_interrupt_window); F(kvm_run, immediate_exit); F(kvm_run, exit_reason);
  F(kvm_run, ready_for_interrupt_injection); F(kvm_run, if_flag); F(kvm_run, flags); F(kvm_run, cr8);
  F(kvm_run, apic_base); F(kvm_run, hw.hardware_exit_reason);
  F(kvm_run, fail_entry.hardware_entry_failure_reason); F(kvm_run, fail_entry.cpu);
  F(kvm_run, ex.exception); F(kvm_run, ex.error_code);
  F(kvm_run, io.direction); F(kvm_run, io.size); F(kvm_run, io.port); F(kvm_run, io.count);
  F(kvm_run, io.data_offset);
  F(kvm_run, mmio.phys_addr); F(kvm_run, mmio.data); F(kvm_run, mmio.len); F(kvm_run, mmio.is_write);
  F(kvm_run, internal.suberror); F(kvm_run, internal.ndata); F(kvm_run, internal.data);
  F(kvm_run, system_event.type); F(kvm_run, system_event.ndata); F(kvm_run, system_event.flags);
  F(kvm_run, system_event.data);
  F(kvm_run, kvm_valid_regs); F(kvm_run, kvm_dirty_regs); F(kvm_run, s);
  END_STRUCT();

  STRUCT(kvm_regs);
  F(kvm_regs, rax); F(kvm_regs, rbx); F(kvm_regs, rcx); F(kvm_regs, rdx); F(kvm_regs, rsi); F(kvm_regs, rdi);
  F(kvm_regs, rsp); F(kvm_regs, rbp); F(kvm_regs, r8); F(kvm_regs, r9); F(kvm_regs, r10); F(kvm_regs, r11);
  F(kvm_regs, r12); F(kvm_regs, r13); F(kvm_regs, r14); F(kvm_regs, r15); F(kvm_regs, rip);
  F(kvm_regs, rflags);
  END_STRUCT();

  STRUCT(kvm_segment);
  F(kvm_segment, base); F(kvm_segment, limit); F(kvm_segment, selector); F(kvm_segment, type);
  F(kvm_segment, present); F(kvm_segment, dpl); F(kvm_segment, db); F(kvm_segment, s); F(kvm_segment, l);
  F(kvm_segment, g); F(kvm_segment, avl); F(kvm_segment, unusable); F(kvm_segment, padding);
  END_STRUCT();

  STRUCT(kvm_dtable);
  F(kvm_dtable, base); F(kvm_dtable, limit); F(kvm_dtable, padding);
  END_STRUCT();

  STRUCT(kvm_sregs);
  F(kvm_sregs, cs); F(kvm_sregs, ds); F(kvm_sregs, es); F(kvm_sregs, fs); F(kvm_sregs, gs); F(kvm_sregs, ss);
  F(kvm_sregs, tr); F(kvm_sregs, ldt); F(kvm_sregs, gdt); F(kvm_sregs, idt); F(kvm_sregs, cr0);
  F(kvm_sregs, cr2); F(kvm_sregs, cr3); F(kvm_sregs, cr4); F(kvm_sregs, cr8); F(kvm_sregs, efer);
  F(kvm_sregs, apic_base); F(kvm_sregs, interrupt_bitmap);
  END_STRUCT();

  STRUCT(kvm_fpu);
  F(kvm_fpu, fpr); F(kvm_fpu, fcw); F(kvm_fpu, fsw); F(kvm_fpu, ftwx); F(kvm_fpu, pad1);
  F(kvm_fpu, last_opcode); F(kvm_fpu, last_ip); F(kvm_fpu, last_dp); F(kvm_fpu, xmm); F(kvm_fpu, mxcsr);
  F(kvm_fpu, pad2);
  END_STRUCT();

  STRUCT(kvm_msr_entry);
  F(kvm_msr_entry, index); F(kvm_msr_entry, reserved); F(kvm_msr_entry, data);
  END_STRUCT();

  STRUCT(kvm_msrs);
  F(kvm_msrs, nmsrs); F(kvm_msrs, pad); F(kvm_msrs, entries);
  END_STRUCT();

  STRUCT(kvm_msr_list);
  F(kvm_msr_list, nmsrs); F(kvm_msr_list, indices);
  END_STRUCT();

  STRUCT(kvm_cpuid_entry2);
  F(kvm_cpuid_entry2, function); F(kvm_cpuid_entry2, index); F(kvm_cpuid_entry2, flags);
  F(kvm_cpuid_entry2, eax); F(kvm_cpuid_entry2, ebx); F(kvm_cpuid_entry2, ecx); F(kvm_cpuid_entry2, edx);
  F(kvm_cpuid_entry2, padding);
  END_STRUCT();

  STRUCT(kvm_cpuid2);
  F(kvm_cpuid2, nent); F(kvm_cpuid2, padding); F(kvm_cpuid2, entries);
  END_STRUCT();

  STRUCT(kvm_lapic_state);
  F(kvm_lapic_state, regs);
  END_STRUCT();

  STRUCT(kvm_userspace_memory_region);
  F(kvm_userspace_memory_region, slot); F(kvm_userspace_memory_region, flags);
  F(kvm_userspace_memory_region, guest_phys_addr); F(kvm_userspace_memory_region, memory_size);
  F(kvm_userspace_memory_region, userspace_addr);
  END_STRUCT();

  STRUCT(kvm_ioeventfd);
  F(kvm_ioeventfd, datamatch); F(kvm_ioeventfd, addr); F(kvm_ioeventfd, len); F(kvm_ioeventfd, fd);
  F(kvm_ioeventfd, flags); F(kvm_ioeventfd, pad);
  END_STRUCT();

  STRUCT(kvm_irqfd);
  F(kvm_irqfd, fd); F(kvm_irqfd, gsi); F(kvm_irqfd, flags); F(kvm_irqfd, resamplefd); F(kvm_irqfd, pad);
  END_STRUCT();

  STRUCT(kvm_irq_routing_entry);
  F(kvm_irq_routing_entry, gsi); F(kvm_irq_routing_entry, type); F(kvm_irq_routing_entry, flags);
  F(kvm_irq_routing_entry, pad); F(kvm_irq_routing_entry, u);
  F(kvm_irq_routing_entry, u.irqchip.irqchip); F(kvm_irq_routing_entry, u.irqchip.pin);
  F(kvm_irq_routing_entry, u.msi.address_lo); F(kvm_irq_routing_entry, u.msi.address_hi);
  F(kvm_irq_routing_entry, u.msi.data); F(kvm_irq_routing_entry, u.msi.devid);
  END_STRUCT();

  STRUCT(kvm_irq_routing);
  F(kvm_irq_routing, nr); F(kvm_irq_routing, flags); F(kvm_irq_routing, entries);
  END_STRUCT();

  STRUCT(kvm_pit_config);
  F(kvm_pit_config, flags); F(kvm_pit_config, pad);
  END_STRUCT();

  STRUCT(kvm_mp_state);
  F(kvm_mp_state, mp_state);
  END_STRUCT();

  STRUCT(kvm_irq_level);
  F(kvm_irq_level, irq); F(kvm_irq_level, status); F(kvm_irq_level, level);
  END_STRUCT();

  STRUCT(kvm_msi);
  F(kvm_msi, address_lo); F(kvm_msi, address_hi); F(kvm_msi, data); F(kvm_msi, flags); F(kvm_msi, devid);
  F(kvm_msi, pad);
  END_STRUCT();

  close_obj(); /* structs */

  /* tun.ts: TUN_IOCTLS, TUN_CONSTANTS, TUN_STRUCTS (TAP access for the network card). */
  open_obj("tun");
  first = 1;
  open_obj("ioctls");
  first = 1;
  V(TUNSETIFF); V(TUNSETOFFLOAD); V(TUNGETVNETHDRSZ); V(TUNSETVNETHDRSZ);
  close_obj();
  open_obj("constants");
  first = 1;
  V(IFF_TAP); V(IFF_NO_PI); V(IFF_VNET_HDR); V(TUN_F_CSUM); V(TUN_F_TSO4); V(TUN_F_TSO6); V(TUN_F_TSO_ECN);
  V(TUN_F_UFO); V(IFNAMSIZ); V(IOV_MAX);
  close_obj();
  open_obj("structs");
  first = 1;
  STRUCT(ifreq);
  F(ifreq, ifr_name); F(ifreq, ifr_flags);
  END_STRUCT();
  STRUCT(iovec);
  F(iovec, iov_base); F(iovec, iov_len);
  END_STRUCT();
  STRUCT(virtio_net_hdr_mrg_rxbuf);
  F(virtio_net_hdr_mrg_rxbuf, hdr.flags); F(virtio_net_hdr_mrg_rxbuf, hdr.gso_type);
  F(virtio_net_hdr_mrg_rxbuf, hdr.hdr_len); F(virtio_net_hdr_mrg_rxbuf, hdr.gso_size);
  F(virtio_net_hdr_mrg_rxbuf, hdr.csum_start); F(virtio_net_hdr_mrg_rxbuf, hdr.csum_offset);
  F(virtio_net_hdr_mrg_rxbuf, num_buffers);
  END_STRUCT();
  close_obj(); /* structs */
  close_obj(); /* tun */

  /* unix.ts: UNIX_CONSTANTS, UNIX_STRUCTS (Unix-domain stream sockets for the vsock card). */
  open_obj("unix");
  first = 1;
  open_obj("constants");
  first = 1;
  V(AF_UNIX); V(SOCK_STREAM); V(SOCK_NONBLOCK); V(SOCK_CLOEXEC); V(MSG_NOSIGNAL);
  num("SUN_PATH_LEN", LEN(sockaddr_un, sun_path));
  close_obj();
  open_obj("structs");
  first = 1;
  STRUCT(sockaddr_un);
  F(sockaddr_un, sun_family); F(sockaddr_un, sun_path);
  END_STRUCT();
  close_obj(); /* structs */
  close_obj(); /* unix */
  printf("}\n");
  return 0;
}
