/* The XSTATE shim's resizing path, on this host, without UML: run with the shim preloaded
 * (LD_PRELOAD=xstate_shim.so). A traced child loads every vector register and stops; this
 * tracer does what UML does on a host whose XSAVE area is larger than UML's buffer, with a
 * buffer shorter than this host's area, and the child checks what it finds on resuming:
 *
 *   1. GETREGSET with a short buffer returns the child's registers;
 *   2. SETREGSET of that short buffer, with xmm1 changed, changes xmm1 and nothing else;
 *   3. with the AVX bit cleared in the short buffer's XSTATE_BV, the upper halves of the ymm
 *      registers come back in their initial state (zero): the bit is taken from the buffer,
 *      not from the host's current state;
 *   4. a buffer as long as the host's area passes through.
 *
 * On a host without AVX only 1 and 2 apply (xmm registers). Exit 0 when all hold.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vregs.h"

#define XMM_OFFSET 160   /* xmm0 in the legacy area */
#define YMMH_OFFSET 576  /* the AVX component: upper halves of ymm0-15 */
#define AVX_BIT 4ull

static int run_child(int round, const struct regfile *in)
{
    struct regfile out, want = *in;
    memset(&out, 0, sizeof(out));
    ptrace(PTRACE_TRACEME, 0, NULL, NULL);
    roundtrip(in, &out, EV_STOP, 0);
    memset(want.v[1], 0x5a, 16); /* the tracer changes xmm1 in every round */
    if (round == 2)
        for (int i = 0; i < 16; i++)
            memset(want.v[i] + 16, 0, 16);
    char name[160];
    const char *difference = first_difference(&want, &out, name, sizeof(name));
    if (difference)
        fprintf(stderr, "xstate selftest round %d: child: %s\n", round, difference);
    return difference ? 1 : 0;
}

static int fail(int round, const char *what)
{
    fprintf(stderr, "xstate selftest round %d: %s (%s)\n", round, what, strerror(errno));
    return 1;
}

static int one_round(int round, size_t host_size)
{
    struct regfile in;
    fill(&in, 4242 + round);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0)
        _exit(run_child(round, &in));
    int status;
    if (waitpid(child, &status, 0) < 0 || !WIFSTOPPED(status))
        return fail(round, "the child did not stop");
    size_t length = round == 3 ? host_size : (host_size > 832 ? 832 : 576);
    static uint8_t buffer[65536] __attribute__((aligned(64)));
    memset(buffer, 0, sizeof(buffer));
    struct iovec iov = {buffer, length};
    if (ptrace(PTRACE_GETREGSET, child, (void *)NT_X86_XSTATE, &iov) < 0)
        return fail(round, "GETREGSET failed");
    if (memcmp(buffer + XMM_OFFSET, in.v[0], 16) != 0)
        return fail(round, "GETREGSET did not return the child's xmm0");
    memset(buffer + XMM_OFFSET + 16, 0x5a, 16);
    if (round == 2) {
        uint64_t bv;
        memcpy(&bv, buffer + 512, 8);
        bv &= ~AVX_BIT;
        memcpy(buffer + 512, &bv, 8);
    }
    iov.iov_len = length;
    if (ptrace(PTRACE_SETREGSET, child, (void *)NT_X86_XSTATE, &iov) < 0)
        return fail(round, "SETREGSET failed");
    if (ptrace(PTRACE_CONT, child, NULL, NULL) < 0)
        return fail(round, "PTRACE_CONT failed");
    if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return fail(round, "the child's registers were not as set");
    return 0;
}

int main(void)
{
    uint64_t xcr0;
    unsigned a, b, c, d;
    use_level(detect(&xcr0));
    if (level == AVX512)
        use_level(AVX); /* the rounds check xmm/ymm; the shim treats every component alike */
    if (!xcr0) {
        printf("xstate selftest: this CPU has no XSAVE: nothing to test\n");
        return 1;
    }
    __cpuid_count(0xd, 0, a, b, c, d);
    size_t host_size = b;
    int failed = 0;
    for (int round = 1; round <= 3; round++)
        if (round != 2 || level == AVX)
            failed |= one_round(round, host_size);
    printf("xstate selftest: host XSAVE area %zu bytes, %s registers: %s\n", host_size, level_name[level],
           failed ? "FAILED" : "ok");
    return failed;
}
