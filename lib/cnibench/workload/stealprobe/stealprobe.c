/* cnibench steal probe: finds the spans in which a core was taken away from this guest.
 *
 *   stealprobe [interval_us] [late_us]
 *
 * Run pinned to one core (taskset). A thread wakes every interval_us on an absolute
 * CLOCK_MONOTONIC schedule (clock_nanosleep TIMER_ABSTIME, timer slack 1 ns), as SCHED_FIFO
 * priority 1 when it may (so a normal task of this kernel does not delay it), and compares each
 * wake with its due time. A wake later than late_us is an episode [due, wake]; its cause, with
 * cnib-openloop 5's rule (openloop.c: cause_of), from what changed over the wake:
 *   stopped   a SIGCONT arrived (someone stopped the probe with SIGSTOP);
 *   own       a voluntary switch beyond the sleep itself (the probe blocked: its fault);
 *   preempted the thread waited runnable for the CPU (schedstat run_delay grew, or an
 *             involuntary switch): a task of this kernel had the core; that wait is in-guest,
 *             and only the rest of the lateness (late - delta run_delay) counts as steal;
 *   steal     late with no switch and no run delay: the vCPU did not run (the hypervisor), or
 *             interrupt work of this guest (not told apart on a kernel without
 *             IRQ_TIME_ACCOUNTING; short next to the stalls this probe is for).
 * An episode runs from the previous wake (the last time the probe is known to have had the core)
 * to this one: its start is known to one interval, its end to the wake-up's latency.
 * Only the wake path runs each interval: clock_gettime (vDSO) and a pread of
 * /proc/thread-self/schedstat; getrusage only on a late wake.
 *
 * Until SIGTERM/SIGINT, then one summary (parsed by cnibench.workload.stealprobe.parse):
 *   stealprobe 1
 *   interval_us <n>  late_us <n>  cpu <n>  sched fifo|other  schedstat 1|0
 *   t0_realtime_ns <n>  t0_mono_ns <n>  samples <n>  span_ns <n>
 *   cpu_ns <utime+stime of the probe, getrusage RUSAGE_SELF: tick-sampled>
 *   exec_ns <the thread's sum_exec_runtime, schedstat's first field: exact; -1 without schedstat>
 *   offcpu <cause> <count> <late_ns>               for steal, preempted, own, stopped
 *   ep <prev_wake_ns> <wake_ns> <late_ns> <steal_ns> <cause>  (ns since t0_mono; the largest MAX_EPS)
 *   dropped <n>
 *   end
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_EPS 4000
enum { C_STEAL, C_PREEMPTED, C_OWN, C_STOPPED, NCAUSES };
static const char *NAMES[NCAUSES] = {"steal", "preempted", "own", "stopped"};

struct ep { int64_t start, end, late, steal; int cause; };
static struct ep eps[MAX_EPS];
static int neps;
static long long dropped;

static volatile sig_atomic_t stop;
static volatile sig_atomic_t conts;
static void on_stop(int sig) { (void)sig; stop = 1; }
static void on_cont(int sig) { (void)sig; conts++; }

static int64_t ns(clockid_t clk) {
    struct timespec t;
    clock_gettime(clk, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t run_delay(int fd) {
    char buf[128];
    long long run, wait;
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    return sscanf(buf, "%lld %lld", &run, &wait) == 2 ? wait : -1;
}

static void add_ep(struct ep e) {
    if (neps < MAX_EPS) { eps[neps++] = e; return; }
    int min = 0;
    for (int i = 1; i < MAX_EPS; i++) if (eps[i].late < eps[min].late) min = i;
    dropped++;
    if (e.late > eps[min].late) eps[min] = e;
}

static int cause_of(long vol_extra, long invol, int64_t waited, int64_t late, int stopped) {
    if (stopped) return C_STOPPED;
    if (vol_extra > 0) return C_OWN;
    if (invol > 0 || (waited > 0 && 2 * waited >= late)) return C_PREEMPTED;
    return C_STEAL;
}

int main(int argc, char **argv) {
    long interval = argc > 1 ? atol(argv[1]) : 1000, late_us = argc > 2 ? atol(argv[2]) : 200;
    if (interval <= 0 || late_us <= 0) {
        fprintf(stderr, "usage: stealprobe [interval_us > 0] [late_us > 0]\n");
        return 2;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_stop;  /* no SA_RESTART: the sleep returns on a stop */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_cont;
    sigaction(SIGCONT, &sa, NULL);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    struct sched_param sp = {.sched_priority = 1};
    int fifo = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    int64_t by_ns[NCAUSES] = {0};
    long long by_n[NCAUSES] = {0}, samples = 0;
    int64_t step = (int64_t)interval * 1000, late_ns = (int64_t)late_us * 1000;
    int64_t t0r = ns(CLOCK_REALTIME), t0 = ns(CLOCK_MONOTONIC), due = t0, prev = t0;
    int64_t delay0 = run_delay(fd);
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    long vol0 = ru.ru_nvcsw, invol0 = ru.ru_nivcsw, sleeps = 0;
    int conts0 = conts;
    while (!stop) {
        due += step;
        struct timespec req = {due / 1000000000LL, due % 1000000000LL};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &req, NULL) != 0 && !stop) {}
        if (stop) break;
        sleeps++;
        int64_t now = ns(CLOCK_MONOTONIC), delay = run_delay(fd);
        samples++;
        int64_t late = now - due;
        if (late > late_ns) {
            getrusage(RUSAGE_THREAD, &ru);
            int64_t waited = delay >= 0 && delay0 >= 0 ? delay - delay0 : 0;
            int stopped = conts != conts0;
            long vol_extra = ru.ru_nvcsw - vol0 - sleeps - (stopped ? 1 : 0);
            int c = cause_of(vol_extra, ru.ru_nivcsw - invol0, waited, late, stopped);
            int64_t steal = c == C_STEAL ? late : c == C_PREEMPTED && late > waited ? late - waited : 0;
            by_ns[c] += late;
            by_n[c]++;
            add_ep((struct ep){prev - t0, now - t0, late, steal, c});
            vol0 = ru.ru_nvcsw; invol0 = ru.ru_nivcsw; sleeps = 0; conts0 = conts;
            /* A long stall skips the due times it covered: the schedule resumes from now. */
            if (late > step) due = now - (now - t0) % step;
        } else if (conts != conts0) {
            conts0 = conts;
        }
        delay0 = delay;
        prev = now;
    }
    int64_t span = ns(CLOCK_MONOTONIC) - t0;
    getrusage(RUSAGE_SELF, &ru);
    int64_t cpu = (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL
                  + (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    printf("stealprobe 1\ninterval_us %ld\nlate_us %ld\ncpu %d\nsched %s\nschedstat %d\n", interval, late_us,
           sched_getcpu(), fifo ? "fifo" : "other", fd >= 0);
    char buf[128];
    long long exec = -1, wait;
    ssize_t n = fd >= 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
    if (n > 0) { buf[n] = 0; if (sscanf(buf, "%lld %lld", &exec, &wait) != 2) exec = -1; }
    printf("t0_realtime_ns %lld\nt0_mono_ns %lld\nsamples %lld\n", (long long)t0r, (long long)t0, samples);
    printf("span_ns %lld\ncpu_ns %lld\nexec_ns %lld\n", (long long)span, (long long)cpu, exec);
    for (int c = 0; c < NCAUSES; c++) printf("offcpu %s %lld %lld\n", NAMES[c], by_n[c], (long long)by_ns[c]);
    for (int i = 0; i < neps; i++)
        printf("ep %lld %lld %lld %lld %d\n", (long long)eps[i].start, (long long)eps[i].end, (long long)eps[i].late,
               (long long)eps[i].steal, eps[i].cause);
    printf("dropped %lld\nend\n", dropped);
    return 0;
}
