/* Vector registers for the sandbox's soundness checks (vregcheck.c, xstate_selftest.c): the
 * register file, the CPU's vector level, and assembly that loads every register, crosses one
 * kernel event, and stores every register back, with no compiled C in between. */
#ifndef VREGS_H
#define VREGS_H
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum level { SSE = 1, AVX = 2, AVX512 = 3 };
static const char *level_name[] __attribute__((unused)) = {"", "sse", "avx", "avx512"};

/* The register file as the assembly below loads and stores it: 32 vector registers of 64
 * bytes (only the low 16 or 32 bytes of 16 registers are used below AVX-512), then k0-7. */
struct regfile {
    uint8_t v[32][64];
    uint16_t k[8];
} __attribute__((aligned(64)));

/* Events: what happens between loading the registers and reading them back. */
/* Outside the checks: EV_STOP (SIGSTOP to itself, for a tracer to look at the registers) and
 * EV_CORRUPT (zeroes xmm3 itself: proves that the comparison sees a changed register). */
enum event { EV_SYSCALL, EV_PAGE_FAULT, EV_SIGNAL, EV_FORK, EV_SLEEP, EV_SPIN, EV_YIELD, EV_COUNT,
             EV_STOP = EV_COUNT, EV_CORRUPT };
static const char *event_name[] __attribute__((unused)) = {"system call", "page fault", "signal handler", "fork",
                                   "sleep", "timer interrupt (busy loop)", "yield",
                                   "stop", "deliberate change of xmm3"};

/* long vr_<level>(const struct regfile *in, struct regfile *out, long event, long arg):
 * load every register from in, cross the event, store every register to out; returns the
 * event's rax (fork: 0 in the child). Nothing between the load and the store is compiled C. */
#define EVENTS                                                                                    \
    "cmp $0, %r14; je 10f\n\tcmp $1, %r14; je 11f\n\tcmp $2, %r14; je 12f\n\t"                   \
    "cmp $3, %r14; je 13f\n\tcmp $4, %r14; je 14f\n\tcmp $5, %r14; je 15f\n\t"                   \
    "cmp $7, %r14; je 17f\n\tcmp $8, %r14; je 18f\n\tjmp 16f\n"                                   \
    "10: mov $110, %eax; syscall; jmp 19f\n"                           /* getppid */            \
    "11: movb $1, (%r15); xor %eax, %eax; jmp 19f\n"                   /* untouched page */     \
    "12: mov $39, %eax; syscall; mov %rax, %rbx; mov $186, %eax; syscall; mov %rax, %rsi;"       \
    " mov %rbx, %rdi; mov $10, %edx; mov $234, %eax; syscall; jmp 19f\n" /* tgkill(self) */    \
    "13: mov $57, %eax; syscall; jmp 19f\n"                            /* fork */               \
    "14: mov %r15, %rdi; xor %esi, %esi; mov $35, %eax; syscall; jmp 19f\n" /* nanosleep */     \
    "15: mov %r15, %rcx; 1: dec %rcx; jnz 1b; xor %eax, %eax; jmp 19f\n"                        \
    "16: mov $24, %eax; syscall; jmp 19f\n"                           /* sched_yield */        \
    "17: mov $39, %eax; syscall; mov %rax, %rdi; mov $19, %esi; mov $62, %eax; syscall; jmp 19f\n" \
    "18: pxor %xmm3, %xmm3\n"                                                                      \
    "19:\n"

#define PROLOGUE(name)                                                                          \
    ".text\n.globl " name "\n.type " name ", @function\n" name ":\n"                            \
    "push %rbx; push %r12; push %r13; push %r14; push %r15\n"                                   \
    "mov %rdi, %r12; mov %rsi, %r13; mov %rdx, %r14; mov %rcx, %r15\n"
#define EPILOGUE "pop %r15; pop %r14; pop %r13; pop %r12; pop %rbx\nret\n"

#define X(op, n, w) op " " #n "*64(%r12), %" w #n "\n"
#define XS(op, n, w) op " %" w #n ", " #n "*64(%r13)\n"
#define R16(M, op, w)                                                                           \
    M(op, 0, w) M(op, 1, w) M(op, 2, w) M(op, 3, w) M(op, 4, w) M(op, 5, w) M(op, 6, w)         \
    M(op, 7, w) M(op, 8, w) M(op, 9, w) M(op, 10, w) M(op, 11, w) M(op, 12, w) M(op, 13, w)     \
    M(op, 14, w) M(op, 15, w)
#define R16HI(M, op, w)                                                                         \
    M(op, 16, w) M(op, 17, w) M(op, 18, w) M(op, 19, w) M(op, 20, w) M(op, 21, w) M(op, 22, w)  \
    M(op, 23, w) M(op, 24, w) M(op, 25, w) M(op, 26, w) M(op, 27, w) M(op, 28, w) M(op, 29, w)  \
    M(op, 30, w) M(op, 31, w)
#define K(n) "kmovw 2048+" #n "*2(%r12), %k" #n "\n"
#define KS(n) "kmovw %k" #n ", 2048+" #n "*2(%r13)\n"
#define K8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

__asm__(PROLOGUE("vr_sse") R16(X, "movdqu", "xmm") EVENTS R16(XS, "movdqu", "xmm") EPILOGUE);
__asm__(PROLOGUE("vr_avx") R16(X, "vmovdqu", "ymm") EVENTS R16(XS, "vmovdqu", "ymm")
        "vzeroupper\n" EPILOGUE);
__asm__(PROLOGUE("vr_avx512") R16(X, "vmovdqu64", "zmm") R16HI(X, "vmovdqu64", "zmm") K8(K) EVENTS
        R16(XS, "vmovdqu64", "zmm") R16HI(XS, "vmovdqu64", "zmm") K8(KS) "vzeroupper\n" EPILOGUE);

/* void vl_<level>(const struct regfile *in): load only (the signal handler's overwrite). */
#define LOADER(name) ".text\n.globl " name "\n.type " name ", @function\n" name ":\nmov %rdi, %rax\n"
#define XA(op, n, w) op " " #n "*64(%rax), %" w #n "\n"
#define KA(n) "kmovw 2048+" #n "*2(%rax), %k" #n "\n"
__asm__(LOADER("vl_sse") R16(XA, "movdqu", "xmm") "ret\n");
__asm__(LOADER("vl_avx") R16(XA, "vmovdqu", "ymm") "vzeroupper\nret\n");
__asm__(LOADER("vl_avx512") R16(XA, "vmovdqu64", "zmm") R16HI(XA, "vmovdqu64", "zmm") K8(KA)
        "vzeroupper\nret\n");

long vr_sse(const struct regfile *, struct regfile *, long, long);
long vr_avx(const struct regfile *, struct regfile *, long, long);
long vr_avx512(const struct regfile *, struct regfile *, long, long);
void vl_sse(const struct regfile *);
void vl_avx(const struct regfile *);
void vl_avx512(const struct regfile *);

static enum level level;
static long (*roundtrip)(const struct regfile *, struct regfile *, long, long);
static void (*load_only)(const struct regfile *);

static void use_level(enum level chosen)
{
    level = chosen;
    roundtrip = level == AVX512 ? vr_avx512 : level == AVX ? vr_avx : vr_sse;
    load_only = level == AVX512 ? vl_avx512 : level == AVX ? vl_avx : vl_sse;
}

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static enum level detect(uint64_t *xcr0)
{
    unsigned a, b, c, d;
    *xcr0 = 0;
    __cpuid(1, a, b, c, d);
    if (!(c & bit_OSXSAVE) || !(c & bit_AVX))
        return SSE;
    *xcr0 = xgetbv0();
    if ((*xcr0 & 0x6) != 0x6)
        return SSE;
    __cpuid_count(7, 0, a, b, c, d);
    if ((b & bit_AVX512F) && (*xcr0 & 0xe6) == 0xe6)
        return AVX512;
    return AVX;
}

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static void fill(struct regfile *file, uint64_t seed)
{
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
    uint64_t *words = (uint64_t *)file;
    for (size_t i = 0; i < sizeof(*file) / 8; i++)
        words[i] = next_random(&state);
}

/* The name of the first register whose bytes differ, or NULL when all are equal. */
static const char *first_difference(const struct regfile *want, const struct regfile *got, char *name,
                                    size_t size)
{
    int count = level == AVX512 ? 32 : 16;
    size_t width = level == AVX512 ? 64 : level == AVX ? 32 : 16;
    const char *kind = level == AVX512 ? "zmm" : level == AVX ? "ymm" : "xmm";
    for (int i = 0; i < count; i++)
        for (size_t byte = 0; byte < width; byte++)
            if (want->v[i][byte] != got->v[i][byte]) {
                snprintf(name, size, "%s%d byte %zu: expected %02x, got %02x", kind, i, byte,
                         want->v[i][byte], got->v[i][byte]);
                return name;
            }
    if (level == AVX512)
        for (int i = 0; i < 8; i++)
            if (want->k[i] != got->k[i]) {
                snprintf(name, size, "k%d: expected %04x, got %04x", i, want->k[i], got->k[i]);
                return name;
            }
    return NULL;
}

#endif
