/* cnibench hiccup meter (like jHiccup): sleep 1 ms, record how much longer the sleep took.
 *
 *   hiccup [interval_us] [event_us]
 *
 * A stall of the machine (a VM descheduled by its host, an interrupt storm, a CPU hog on the
 * core the meter runs on) shows as oversleep. The meter runs until SIGTERM/SIGINT, then prints
 * one summary in the text format parsed by cnibench.workload.hiccup.parse:
 *
 *   hiccup 1
 *   interval_us <n>
 *   samples <wake-ups>
 *   span_us <monotonic time from start to stop>
 *   max_us <largest oversleep>
 *   over <threshold_us> <count> <sum_us>     for thresholds 100, 250, 500, 1000, 2000, 5000, 10000, 50000
 *   event <epoch_us> <oversleep_us>          every oversleep >= event_us (default 500), at most 1000
 *   end
 *
 * Timer slack is set to 1 ns so the kernel does not batch the wake-up (the default slack of
 * 50 us would be measured as oversleep). Normal scheduling class: it sees what a normal
 * process (nginx, the generator) would see.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#define MAX_EVENTS 1000
static const long THRESHOLDS[] = {100, 250, 500, 1000, 2000, 5000, 10000, 50000};
#define NT (sizeof THRESHOLDS / sizeof THRESHOLDS[0])

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static long long us(clockid_t clk) {
    struct timespec t;
    clock_gettime(clk, &t);
    return (long long)t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    long interval = argc > 1 ? atol(argv[1]) : 1000;
    long event_us = argc > 2 ? atol(argv[2]) : 500;
    if (interval <= 0 || event_us <= 0) {
        fprintf(stderr, "usage: hiccup [interval_us > 0] [event_us > 0]\n");
        return 2;
    }
    static long long ev_at[MAX_EVENTS], ev_over[MAX_EVENTS];
    long long count[NT] = {0}, sum[NT] = {0};
    long long samples = 0, max_over = 0;
    int events = 0;

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;  /* no SA_RESTART: the sleep returns at once on a stop */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);

    struct timespec req = {interval / 1000000, (interval % 1000000) * 1000};
    long long start = us(CLOCK_MONOTONIC), before = start;
    while (!stop) {
        if (clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL) != 0)
            break;  /* interrupted: a stop, not a measurement */
        long long now = us(CLOCK_MONOTONIC);
        long long over = now - before - interval;
        before = now;
        if (over < 0)
            over = 0;
        samples++;
        if (over > max_over)
            max_over = over;
        for (size_t i = 0; i < NT; i++)
            if (over >= THRESHOLDS[i]) {
                count[i]++;
                sum[i] += over;
            }
        if (over >= event_us && events < MAX_EVENTS) {
            ev_at[events] = us(CLOCK_REALTIME);
            ev_over[events++] = over;
        }
    }
    printf("hiccup 1\ninterval_us %ld\nsamples %lld\nspan_us %lld\nmax_us %lld\n", interval, samples,
           us(CLOCK_MONOTONIC) - start, max_over);
    for (size_t i = 0; i < NT; i++)
        printf("over %ld %lld %lld\n", THRESHOLDS[i], count[i], sum[i]);
    for (int i = 0; i < events; i++)
        printf("event %lld %lld\n", ev_at[i], ev_over[i]);
    printf("end\n");
    return 0;
}
