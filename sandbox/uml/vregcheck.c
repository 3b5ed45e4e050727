/* Do processes keep their vector registers? Run in the sandbox guest before anything else.
 *
 * User-Mode Linux moves each guest task's FP/vector state through ptrace; where it loses or
 * mixes up part of that state (an XSAVE area it does not handle, a signal frame too small for
 * AVX-512), glibc's vectorised string functions return garbage and every result of the guest
 * is suspect. This program fills every vector register the CPU has (xmm0-15; ymm0-15 with AVX;
 * zmm0-31 and k0-7 with AVX-512F) with a known pattern, crosses one event that makes the
 * kernel save and restore the task's state (a system call, a page fault, a signal whose
 * handler overwrites every register, fork, a sleep, a busy loop long enough for the timer to
 * interrupt it, a yield), reads every register back and compares, in the main thread and in
 * four threads at once.
 *
 *   vregcheck         run the checks; exit 0 when every register survived every event
 *   vregcheck --host  print this CPU's vector level and XSAVE facts (its layout included) as
 *                     key=value lines
 *   vregcheck --must-fail  change a register on purpose: shows that a change is seen (exit 1)
 *
 * Exit 1 names the first register that changed, the event and the bytes.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vregs.h"

static int host_facts(void)
{
    uint64_t xcr0;
    unsigned a, b, c, d, max_leaf = __get_cpuid_max(0, NULL);
    enum level found = detect(&xcr0);
    unsigned xsave_size = 0;
    if (xcr0 && max_leaf >= 0xd) {
        __cpuid_count(0xd, 0, a, b, c, d);
        xsave_size = b; /* the XSAVE area of every feature enabled in XCR0 */
    }
    int amx = (xcr0 >> 17 & 3) == 3;
    printf("level=%s\nxcr0=%#llx\nxsave_size=%u\navx512=%s\namx=%s\n", level_name[found],
           (unsigned long long)xcr0, xsave_size, found == AVX512 ? "yes" : "no", amx ? "yes" : "no");
    /* The layout of the XSAVE area in the standard format ptrace uses: each enabled component
     * beyond the legacy area (x87, SSE) as "component=BIT,OFFSET,SIZE". */
    for (int bit = 2; xsave_size && bit < 64; bit++)
        if (xcr0 >> bit & 1) {
            __cpuid_count(0xd, bit, a, b, c, d);
            printf("component=%d,%u,%u\n", bit, b, a);
        }
    return 0;
}

static uint8_t *fresh_pages;
static size_t fresh_next, fresh_count;
static pthread_mutex_t fresh_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures, checks;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static void record(const char *who, enum event event, const char *difference)
{
    pthread_mutex_lock(&report_lock);
    checks++;
    if (difference) {
        if (failures++ < 5)
            fprintf(stderr, "vregcheck: %s, across a %s: %s\n", who, event_name[event], difference);
    }
    pthread_mutex_unlock(&report_lock);
}

/* The signal handler overwrites every register, and uses glibc's string functions (which
 * use the widest registers the CPU has) as real handlers do. */
static void overwrite_registers(int signum)
{
    static __thread struct regfile other;
    static __thread char text[4096];
    fill(&other, (uint64_t)signum * 7919 + (uint64_t)(uintptr_t)&other);
    load_only(&other);
    memset(text, 'x', sizeof(text) - 1);
    volatile size_t length = strlen(text);
    memcpy(text, text + 2048, length / 2);
}

static void check_event(const char *who, enum event event, uint64_t seed)
{
    struct regfile in, out;
    struct timespec pause = {0, 2 * 1000 * 1000};
    long arg = 0;
    fill(&in, seed);
    memset(&out, 0, sizeof(out));
    if (event == EV_PAGE_FAULT) {
        pthread_mutex_lock(&fresh_lock);
        if (fresh_next == fresh_count) {
            pthread_mutex_unlock(&fresh_lock);
            return;
        }
        arg = (long)(fresh_pages + 4096 * fresh_next++);
        pthread_mutex_unlock(&fresh_lock);
    } else if (event == EV_SLEEP) {
        arg = (long)&pause;
    } else if (event == EV_SPIN) {
        arg = 30 * 1000 * 1000;
    }
    long result = roundtrip(&in, &out, event, arg);
    char name[160];
    const char *difference = first_difference(&in, &out, name, sizeof(name));
    if (event == EV_FORK && result == 0)
        _exit(difference ? 1 : 0);
    if (event == EV_FORK) {
        int status = 0;
        if (result < 0 || waitpid((pid_t)result, &status, 0) < 0) {
            record(who, event, "fork failed");
            return;
        }
        record(who, event, difference);
        record("the forked child", event,
               WIFEXITED(status) && WEXITSTATUS(status) == 0 ? NULL : "its registers changed");
        return;
    }
    record(who, event, difference);
}

#define ROUNDS 4
#define THREADS 4

static void *thread_main(void *number)
{
    char who[32];
    snprintf(who, sizeof(who), "thread %ld", (long)number);
    for (int round = 0; round < ROUNDS; round++)
        for (int event = 0; event < EV_COUNT; event++)
            if (event != EV_FORK)
                check_event(who, event, 1000003u * (uint64_t)(long)number + 101u * round + event);
    return NULL;
}

int main(int argc, char **argv)
{
    uint64_t xcr0;
    if (argc > 1 && strcmp(argv[1], "--host") == 0)
        return host_facts();
    use_level(detect(&xcr0));
    if (argc > 1 && strcmp(argv[1], "--must-fail") == 0) {
        check_event("main thread", EV_CORRUPT, 1);
        return failures ? 1 : 0;
    }

    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = overwrite_registers;
    sigaction(SIGUSR1, &action, NULL);
    fresh_count = (THREADS + 1) * ROUNDS;
    fresh_pages = mmap(NULL, 4096 * fresh_count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fresh_pages == MAP_FAILED) {
        perror("vregcheck: mmap");
        return 2;
    }

    for (int round = 0; round < ROUNDS; round++)
        for (int event = 0; event < EV_COUNT; event++)
            check_event("main thread", event, 7u * round + event);
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], NULL, thread_main, (void *)(i + 1)) != 0) {
            fprintf(stderr, "vregcheck: pthread_create failed\n");
            return 2;
        }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);

    printf("vregcheck: %s registers, %d checks, %d failed\n", level_name[level], checks, failures);
    return failures ? 1 : 0;
}
