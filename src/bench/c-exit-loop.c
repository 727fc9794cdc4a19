/*
 * The C baseline of `npm run bench:exits` (issue "Hypervisor core" item 11): the same guest, the
 * same VM and vCPU (built by Typervisor's TypeScript builder), the same KVM_RUN call — only the
 * exit-handling loop is C instead of TypeScript. It does the work the TypeScript loop does for the
 * probe's `exits` test and nothing more: count the exit, answer the UART as an 8250 that is always
 * ready (scratch register kept, LSR = THR empty), copy guest output to the console descriptor, and
 * stop on the debug-exit port or the i8042 reset. Loaded through src/sys/baseline.ts.
 *
 * Build: gcc -O2 -shared -fPIC -o c-exit-loop.so src/bench/c-exit-loop.c
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#define COM1 0x3f8          /* 8250 at 0x3f8 (src/devices/legacy) */
#define UART_LSR 5          /* line status register offset */
#define UART_SCR 7          /* scratch register offset */
#define LSR_THR_EMPTY 0x60  /* THRE | TEMT */
#define DEBUG_EXIT_PORT 0xf4
#define I8042_CMD_PORT 0x64
#define I8042_CMD_RESET 0xfe

/* Outcomes (the return value): >= 0 the guest's debug-exit status; below, how else it ended. */
#define END_RESET (-1)
#define END_SHUTDOWN (-2)
#define END_OTHER_EXIT (-3) /* counts[3] holds the exit reason */
#define END_RUN_FAILED (-4) /* counts[3] holds errno */

/*
 * Runs the vCPU until the guest ends the run. counts[0] = PIO exits, counts[1] = MMIO exits,
 * counts[2] = KVM_RUN calls interrupted (EINTR/EAGAIN), counts[3] = detail of an abnormal end.
 */
long typervisor_c_exit_loop(int vcpu_fd, struct kvm_run *run, int console_fd, uint64_t *counts) {
    uint8_t scr = 0;
    for (;;) {
        if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                counts[2]++;
                continue;
            }
            counts[3] = (uint64_t)errno;
            return END_RUN_FAILED;
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            uint32_t bytes = (uint32_t)run->io.size * run->io.count;
            counts[0]++;
            if (run->io.direction == KVM_EXIT_IO_OUT) {
                if (run->io.port == DEBUG_EXIT_PORT) return data[0];
                if (run->io.port == I8042_CMD_PORT && data[0] == I8042_CMD_RESET) return END_RESET;
                if (run->io.port == COM1 && console_fd >= 0) {
                    ssize_t w = write(console_fd, data, bytes);
                    (void)w; /* a console that went away must not stop the guest */
                }
                if (run->io.port == COM1 + UART_SCR) scr = data[0];
            } else if (run->io.port == COM1 + UART_LSR) {
                memset(data, LSR_THR_EMPTY, bytes);
            } else if (run->io.port == COM1 + UART_SCR) {
                memset(data, scr, bytes);
            } else {
                memset(data, 0xff, bytes); /* nothing there: the bus floats high */
            }
            break;
        }
        case KVM_EXIT_MMIO:
            counts[1]++;
            if (!run->mmio.is_write) memset(run->mmio.data, 0xff, run->mmio.len);
            break;
        case KVM_EXIT_SHUTDOWN:
            return END_SHUTDOWN;
        default:
            counts[3] = run->exit_reason;
            return END_OTHER_EXIT;
        }
    }
}
