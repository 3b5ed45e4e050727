/* LD_PRELOAD library for linux.uml (User-Mode Linux 6.x) on hosts whose XSAVE area is larger
 * than UML's FP buffer (AVX-512, AMX), and on any host with AVX-512. Loaded into UML's own
 * process only; nothing of it runs in the guest.
 *
 * UML keeps each guest task's FP state in a fixed buffer (regs->fp, 2696 bytes in Debian's
 * 6.1 build) and moves it with ptrace(PTRACE_GETREGSET/SETREGSET, NT_X86_XSTATE). Three
 * problems follow on such hosts, and this library intercepts ptrace() to mend each:
 *
 * 1. Size. Since Linux 5.14 SETREGSET of NT_X86_XSTATE takes only the host's whole user XSAVE
 *    area (11008 bytes with AMX); a shorter one fails with EFAULT and UML panics ("ptrace set
 *    fp regs failed, errno = 14"). Here a short GET reads the whole area and hands UML its
 *    first bytes; a short SET reads the task's current whole area, lays UML's bytes over it
 *    and sets the whole. A buffer that is already whole (or longer: the kernel clamps it)
 *    passes through unchanged.
 * 2. XSTATE_BV (offset 512: which components hold data). For every component inside UML's
 *    bytes it must come from UML's bytes. The host's current area is no guide: UML runs a stub
 *    SIGSEGV handler in the guest task's host process at every guest page fault, and signal
 *    entry resets the FPU state, so taking the current bits zeroes k0-7 and the upper ZMM
 *    registers at every page fault. Components beyond UML's bytes keep the current state.
 * 3. Signal frames. UML's guest signal frame holds 832 bytes of FP state (x87, SSE, AVX), so
 *    a guest signal handler that uses AVX-512 (glibc's string functions do) leaks its k0-7,
 *    upper ZMM and zmm16-31 into the code it interrupted. Here the task's whole state is
 *    remembered when UML delivers a signal, and its bytes beyond the frame's 832 are written
 *    back when that frame's rt_sigreturn comes. What UML's ptrace traffic shows:
 *    - around each guest stop: GETREGS then GETREGSET; before each resume: SETREGS then
 *      SETREGSET, on the same pid; the FP buffer's address is the task's for its whole life;
 *    - a delivery is a SETREGS with rip = the handler, rsp = the frame, rdx = rsp + 8 (the
 *      ucontext), rsi = rsp + 312 (the siginfo), rax = 0, rdi = the signal number;
 *    - the return is that task's stop at rt_sigreturn (orig_rax 15) with rsp = frame + 8.
 *    Signals nest, so each task has a small stack of remembered states; where nothing
 *    matches, UML's own behaviour stands.
 *
 * XENLVM_UML_SHIM_STATS=FILE: counters of what was done, in FILE (see struct stats), so a
 * test can prove which paths ran. XENLVM_UML_SHIM_UML_BYTES=N (tests only): use only the
 * first N bytes of UML's buffer, as if the host's area were that much longer than UML's: on a
 * host that does not need the shim this runs its resizing path at every guest stop. N must
 * hold every component the guest's processes use (sandbox/uml_host.py, resize_bytes).
 * Memory only the tracer needs is kept out of the host processes UML clones for guest address
 * spaces (MADV_DONTFORK).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

#define XSTATE_BV_OFFSET 512
#define HEADER_END 576      /* legacy area (512) + XSAVE header (64) */
#define FRAME_FP_BYTES 832  /* what UML's signal frame keeps: legacy, header, AVX upper halves */
#define PROBE_BYTES 65536
#define TASK_SLOTS 1024
#define DEPTH 4
#define SAVED_BYTES 4096    /* longest UML buffer whose signal states are remembered */
#define RT_SIGRETURN 15

struct stats {              /* in XENLVM_UML_SHIM_STATS, 8-byte little-endian words */
    char magic[8];          /* "XSHIM01\0" */
    uint64_t host_size;     /* the host's whole user XSAVE area */
    uint64_t uml_size;      /* the length UML passes */
    uint64_t whole;         /* GET/SET passed through unchanged */
    uint64_t resized;       /* GET/SET done on the whole area for a shorter UML buffer */
    uint64_t deliveries;    /* signal deliveries whose state was remembered */
    uint64_t restored;      /* rt_sigreturns whose state beyond the frame was written back */
    uint64_t evicted;       /* remembered states dropped for lack of room */
    uint64_t failures;      /* intercepted calls that failed */
};

struct saved {
    unsigned long frame;
    uint8_t fp[SAVED_BYTES];
};

struct task {
    unsigned long key;      /* address of UML's FP buffer for this task */
    int depth;
    int pending;            /* index of the state to write back at the next SETREGSET, or -1 */
    struct saved stack[DEPTH];
};

typedef long (*ptrace_fn)(enum __ptrace_request, ...);
static ptrace_fn real_ptrace;
static struct stats *stats, local_stats;
static struct task *tasks;
static uint8_t *scratch;         /* PROBE_BYTES, 64-byte aligned (page) */
static size_t host_size;         /* 0 until probed */
static uint64_t xcr0;
static uint32_t offset_of[64], size_of[64];
static size_t uml_bytes_limit;   /* XENLVM_UML_SHIM_UML_BYTES, or 0 */

/* What the previous GETREGS/SETREGS of a pid said about signals. */
static pid_t last_pid;
static enum { NOTHING, SIGRETURN_STOP, DELIVERY } last_kind;
static unsigned long last_frame;

static void *private_memory(size_t bytes)
{
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED)
        return NULL;
    madvise(memory, bytes, MADV_DONTFORK);
    return memory;
}

__attribute__((constructor)) static void shim_init(void)
{
    real_ptrace = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    unsetenv("LD_PRELOAD"); /* for UML only, not for anything it may start on the host */
    stats = &local_stats;
    const char *path = getenv("XENLVM_UML_SHIM_STATS");
    if (path) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0 && ftruncate(fd, sizeof(struct stats)) == 0) {
            void *shared = mmap(NULL, sizeof(struct stats), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (shared != MAP_FAILED) {
                madvise(shared, sizeof(struct stats), MADV_DONTFORK);
                stats = shared;
            }
        }
        if (fd >= 0)
            close(fd);
    }
    memcpy(stats->magic, "XSHIM01", 8);
    const char *limit = getenv("XENLVM_UML_SHIM_UML_BYTES");
    if (limit)
        uml_bytes_limit = strtoul(limit, NULL, 10);
    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    if (c & bit_OSXSAVE) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((uint64_t)hi << 32) | lo;
        for (int i = 2; i < 64; i++)
            if (xcr0 >> i & 1) {
                __cpuid_count(0xd, i, a, b, c, d);
                size_of[i] = a;
                offset_of[i] = b; /* standard (uncompacted) format, as ptrace uses */
            }
    }
    scratch = private_memory(PROBE_BYTES);
    tasks = private_memory(sizeof(struct task) * TASK_SLOTS);
    fprintf(stderr, "xenlvm uml xstate shim: loaded (XCR0 %#llx)\n", (unsigned long long)xcr0);
}

/* The XSTATE_BV bits of the components that lie wholly inside the first `bytes` bytes. */
static uint64_t components_inside(size_t bytes)
{
    uint64_t inside = 0x3; /* x87 and SSE: the legacy area */
    for (int i = 2; i < 64; i++)
        if ((xcr0 >> i & 1) && offset_of[i] + size_of[i] <= bytes)
            inside |= 1ull << i;
    return inside;
}

static long xstate_call(enum __ptrace_request request, pid_t pid, struct iovec *iov)
{
    return real_ptrace(request, pid, (void *)(uintptr_t)NT_X86_XSTATE, iov);
}

/* The host's whole area of pid into scratch; its length, or -1 with errno set. */
static long read_whole(pid_t pid)
{
    struct iovec whole = {scratch, host_size ? host_size : PROBE_BYTES};
    if (xstate_call(PTRACE_GETREGSET, pid, &whole) < 0)
        return -1;
    if (!host_size)
        host_size = whole.iov_len;
    stats->host_size = host_size;
    return (long)whole.iov_len;
}

/* Whether a transfer of iov goes to the host as it is: the host's size could not be learnt,
 * or UML's buffer is whole (or longer: the kernel clamps it), or too short for the header. */
static int passes_through(pid_t pid, const struct iovec *iov)
{
    if (!host_size && (!scratch || read_whole(pid) < 0))
        return 1;
    stats->uml_size = iov->iov_len;
    if (iov->iov_len >= host_size || iov->iov_len < HEADER_END) {
        stats->whole++;
        return 1;
    }
    return 0;
}

/* UML's buffer as far as it is used: all of it, or XENLVM_UML_SHIM_UML_BYTES of it. */
static struct iovec used_part(const struct iovec *iov)
{
    struct iovec used = *iov;
    if (uml_bytes_limit && used.iov_len > uml_bytes_limit)
        used.iov_len = uml_bytes_limit;
    return used;
}

static long get_xstate(pid_t pid, struct iovec *uml)
{
    struct iovec part = used_part(uml), *iov = &part;
    if (passes_through(pid, iov))
        return xstate_call(PTRACE_GETREGSET, pid, part.iov_len == uml->iov_len ? uml : iov);
    if (read_whole(pid) < 0) {
        stats->failures++;
        return -1;
    }
    memcpy(iov->iov_base, scratch, iov->iov_len);
    stats->resized++;
    return 0;
}

static long set_xstate(pid_t pid, struct iovec *uml)
{
    struct iovec part = used_part(uml), *iov = &part;
    if (passes_through(pid, iov))
        return xstate_call(PTRACE_SETREGSET, pid, part.iov_len == uml->iov_len ? uml : iov);
    int saved_errno;
    if (read_whole(pid) < 0) {
        stats->failures++;
        return -1;
    }
    uint64_t current_bv, uml_bv, inside = components_inside(iov->iov_len);
    memcpy(&current_bv, scratch + XSTATE_BV_OFFSET, 8);
    memcpy(&uml_bv, (uint8_t *)iov->iov_base + XSTATE_BV_OFFSET, 8);
    memcpy(scratch, iov->iov_base, XSTATE_BV_OFFSET); /* legacy area */
    memcpy(scratch + HEADER_END, (uint8_t *)iov->iov_base + HEADER_END, iov->iov_len - HEADER_END);
    uint64_t bv = ((uml_bv & inside) | (current_bv & ~inside)) & xcr0;
    memcpy(scratch + XSTATE_BV_OFFSET, &bv, 8);
    struct iovec whole = {scratch, host_size};
    long result = xstate_call(PTRACE_SETREGSET, pid, &whole);
    saved_errno = errno;
    if (result < 0)
        stats->failures++;
    else
        stats->resized++;
    errno = saved_errno;
    return result;
}

static struct task *task_of(unsigned long key, int create)
{
    if (!tasks)
        return NULL;
    struct task *task = &tasks[(key >> 6 ^ key >> 16) % TASK_SLOTS];
    if (task->key == key)
        return task;
    if (!create)
        return NULL;
    if (task->depth > 0)
        stats->evicted += task->depth;
    task->key = key;
    task->depth = 0;
    task->pending = -1;
    return task;
}

/* At the stop of a task's rt_sigreturn: find the delivery of that frame. */
static void note_sigreturn(struct iovec *iov)
{
    struct task *task = task_of((unsigned long)iov->iov_base, 0);
    if (!task)
        return;
    for (int i = task->depth - 1; i >= 0; i--)
        if (task->stack[i].frame == last_frame) {
            task->pending = i;
            return;
        }
}

/* Before UML's SETREGSET: write back what the frame did not keep, then remember a delivery. */
static void before_set(pid_t pid, struct iovec *iov)
{
    unsigned long key = (unsigned long)iov->iov_base;
    size_t bytes = iov->iov_len;
    if (bytes <= FRAME_FP_BYTES || bytes > SAVED_BYTES)
        return;
    struct task *task = task_of(key, 0);
    if (task && task->pending >= 0) {
        struct saved *state = &task->stack[task->pending];
        memcpy((uint8_t *)iov->iov_base + FRAME_FP_BYTES, state->fp + FRAME_FP_BYTES, bytes - FRAME_FP_BYTES);
        task->depth = task->pending; /* nested handlers above it have returned (or jumped out) */
        task->pending = -1;
        stats->restored++;
    }
    if (last_pid == pid && last_kind == DELIVERY) {
        task = task_of(key, 1);
        if (!task)
            return;
        if (task->depth == DEPTH) {
            memmove(&task->stack[0], &task->stack[1], sizeof(struct saved) * (DEPTH - 1));
            task->depth--;
            stats->evicted++;
        }
        task->stack[task->depth].frame = last_frame;
        memcpy(task->stack[task->depth].fp, iov->iov_base, bytes);
        task->depth++;
        stats->deliveries++;
    }
}

long ptrace(enum __ptrace_request request, ...)
{
    va_list args;
    va_start(args, request);
    pid_t pid = va_arg(args, pid_t);
    void *addr = va_arg(args, void *);
    void *data = va_arg(args, void *);
    va_end(args);
    if (!real_ptrace) {
        errno = ENOSYS;
        return -1;
    }
    long result;
    switch ((int)request) {
    case PTRACE_GETREGS:
        result = real_ptrace(request, pid, addr, data);
        if (result == 0) {
            struct user_regs_struct *regs = data;
            last_pid = pid;
            last_kind = regs->orig_rax == RT_SIGRETURN ? SIGRETURN_STOP : NOTHING;
            last_frame = regs->rsp - 8;
        }
        return result;
    case PTRACE_SETREGS: {
        struct user_regs_struct *regs = data;
        last_pid = pid;
        last_kind = regs->rax == 0 && regs->rdi >= 1 && regs->rdi <= 64 && regs->rdx == regs->rsp + 8 &&
                    regs->rsi == regs->rsp + 312 ? DELIVERY : NOTHING;
        last_frame = regs->rsp;
        return real_ptrace(request, pid, addr, data);
    }
    case PTRACE_GETREGSET:
        if ((uintptr_t)addr != NT_X86_XSTATE)
            break;
        result = get_xstate(pid, data);
        if (result == 0 && last_pid == pid && last_kind == SIGRETURN_STOP)
            note_sigreturn(data);
        last_kind = NOTHING;
        return result;
    case PTRACE_SETREGSET:
        if ((uintptr_t)addr != NT_X86_XSTATE)
            break;
        before_set(pid, data);
        last_kind = NOTHING;
        return set_xstate(pid, data);
    default:
        break;
    }
    return real_ptrace(request, pid, addr, data);
}
