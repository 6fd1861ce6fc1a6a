/* Core-to-core latency between CPU 0 and CPU 1: one cache line bounced between two pinned threads.

       gcc -O2 -pthread -o /tmp/core_to_core benchmarks/core_to_core.c && /tmp/core_to_core 20

   Prints "<seconds since start> <one-way latency in ns>" every 200,000 round trips, for the given seconds
   (0: one line). On the 2-vCPU AMD EPYC VMs of this project it reads about 26 ns while the host keeps both
   vCPUs on one die, and about 160 ns while it places them on two; it switches between the two within
   seconds. onnxruntime's two threads on one batch were twice as slow in the second state (docs/RESULTS.md,
   "Why some processes ran slow"), which is why the runtime runs whole batches side by side, one per core. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic long flag __attribute__((aligned(64)));
static volatile int stop = 0;
enum { ROUNDS = 200000 };

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *pong(void *unused) {
    (void)unused;
    pin(1);
    for (long expect = 1; !stop; expect += 2) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != expect)
            if (stop) return 0;
        atomic_store_explicit(&flag, expect + 1, memory_order_release);
    }
    return 0;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0, start = now();
    pthread_t thread;
    pthread_create(&thread, 0, pong, 0);
    pin(0);
    long v = 0;
    do {
        double t0 = now();
        for (int i = 0; i < ROUNDS; i++) {
            atomic_store_explicit(&flag, ++v, memory_order_release);
            ++v;
            while (atomic_load_explicit(&flag, memory_order_acquire) != v) {}
        }
        printf("%.2f %.1f\n", t0 - start, (now() - t0) / ROUNDS / 2 * 1e9);
        fflush(stdout);
    } while (now() - start < seconds);
    stop = 1;
    pthread_join(thread, 0);
    return 0;
}
