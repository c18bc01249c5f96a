/* cnib-openloop: an open-loop HTTP/1.1 load generator for cnibench.
 *
 * The schedule is fixed before the run: request k is due at t0 + k/R (uniform, the study's
 * constant rate) or at the points of a Poisson process of rate R (--arrival poisson). It is
 * sent at its due time whatever the responses do, on the next of the thread's keep-alive
 * connections that has fewer than --pipeline requests in flight. Latency is counted from the
 * due (intended) time, so any lag in sending is charged to the request (the principle of wrk2)
 * and no after-the-fact correction is needed.
 *
 * Each thread owns every T-th request of the schedule and every T-th connection, is pinned to
 * its CPU, and polls: it reads the monotonic clock (vDSO, no system call), sends what is due,
 * and handles socket events. Within --spin-us (1 ms) of the next due time it busy-polls
 * (epoll with timeout 0), so a send is not left to a timer's wake-up; further away it waits in
 * epoll until then (a response wakes it at once). At the study's rates (>= 1,000 req/s per
 * thread) it therefore spins all the time and its CPU shows as 100 % busy; the send lag
 * (sent - intended), logged per request, is the figure that says whether it kept up.
 *
 * Its own stall detector: each thread compares the wall time that passed with the CPU time it
 * got (CLOCK_THREAD_CPUTIME_ID, which leaves out time the hypervisor stole: on the testbed the
 * sum matched /proc/stat's steal of its core). A loop pass longer than STALL_NS is checked, and
 * when the thread was off its CPU for more than STALL_NS of it, that interval is a stall
 * ("stalls" in the summary: thread, start, end, ns off the CPU; the largest MAX_STALLS). Time
 * it chose to block in epoll (below 1,000 req/s a thread sleeps until shortly before the next
 * due time) is left out, and with it any lateness of that wake-up; the CPU a thread spends
 * inside those waits is not, so at such rates the total can come out a little below 0. The
 * check costs three system calls per long pass and per ms (the thread's CPU clock, its context
 * switch counts, its run delay); busy passes are short.
 *
 * Each stall says why the thread was off its CPU (version 5): "own" when the thread switched
 * out by itself (a voluntary context switch beyond its chosen epoll waits: it blocked, which
 * only a fault of the generator does), unless a SIGCONT arrived in the same interval: then
 * "stopped" (someone stopped the process with SIGSTOP, which the kernel also books as a
 * voluntary switch), else "preempted" when it was switched out for another
 * task of this kernel (an involuntary switch; the run delay the kernel's schedstat counted is
 * kept), else "steal": off its CPU with no switch at all, so the hypervisor took the vCPU. The
 * tests excuse the machine's stalls, never the generator's own. Shorter gaps are kept too, as
 * the per-check intervals (about one per ms) in which the thread was off its CPU more than
 * SHORT_NS or ran a loop pass longer than SLOW_PASS_NS: what the send lag outside the listed
 * stalls is made of (a short stall, or the loop's own work) can then be read off a run.
 *
 * Output: one JSON object on stdout (counts, t0 on the realtime clock, settings) and, with
 * --log, a binary log of the requests due inside the measurement window (warm-up excluded):
 * per request five little-endian fields, 32 bytes (see struct rec). Times are ns since t0 on
 * CLOCK_MONOTONIC; -1 where the event did not happen. --log-every N keeps every N-th of them.
 *
 * Version 6: --histograms FILE records, instead of (or beside) the log, the histograms the
 * record needs (struct hists: layouts there), merged over the threads at exit into one sparse
 * binary file (read by generators/openloop_hist.py). The schedule is generated as the run goes
 * and each request's intended time travels in its connection's in-flight queue, so the memory
 * of a run without --log does not grow with the rate.
 *
 * Version 7 (issue 27): connections cost ~4.2 KB each (the 4 KB out-buffer, the in-flight queue
 * apart): reads go to one 64 KB buffer per thread, and a connection keeps only what a read left
 * incomplete (heap, grown as needed). The soft open-file limit is raised to the hard one when the
 * connections need it; more connections than the hard limit allows is one message, exit 2.
 *
 * Version 8 (issue 28): --start-at NS puts t0 at that instant of the realtime clock (1 ms to 60 s
 * ahead), so the generators of several client hosts start their shares of one schedule together.
 *
 * Built by cnibench at set-up with the system's C compiler (workload/loadgen.py); nothing here
 * is downloaded. Linux only (epoll, sched_setaffinity).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define VERSION "8"
#define STALL_NS 100000   /* off the CPU longer than this inside one pass: a stall, listed */
#define MAX_STALLS 2000   /* listed per thread; more are counted in offcpu_ns only */
#define SHORT_NS 20000    /* an interval off the CPU longer than this is kept in the intervals */
#define SLOW_PASS_NS 40000 /* a loop pass longer than this (wall time) too: the loop's own work */
#define MAX_INTERVALS 4000 /* kept per thread, the first ones; more are counted */
#define CAUSE_STEAL 0
#define CAUSE_PREEMPTED 1
#define CAUSE_OWN 2
#define CAUSE_STOPPED 3
#define NCAUSES 4
#define EVENTS_PER_PASS 4 /* sockets read per pass before the schedule is checked again: after a
                           * server stall the backlog of responses arrives at once, and reading 64
                           * sockets of 4 KB responses in one pass held due sends back 0.4-0.9 ms
                           * (25,000 req/s, large). Edge-triggered events left over stay ready
                           * for the next epoll_wait. */
#define INBUF 65536
#define ST_NONE 0      /* not answered (yet) */
#define ST_CONNERR (-1) /* the connection failed or closed with the request in flight */
#define ST_NOTSENT (-2) /* never sent: no connection could take it before the run ended */

struct rec {            /* one per request due in the window; 32 bytes, little-endian */
    int64_t intended_ns;
    int64_t sent_ns;
    int64_t done_ns;
    int32_t status;     /* HTTP status, or ST_* */
    uint32_t conn;
};

struct stall {
    int64_t start_ns, end_ns, off_ns;  /* the pass (ns since t0) and its time off the CPU */
    int cause;                         /* CAUSE_*: see the top of the file */
    int64_t run_delay_ns;              /* runnable but waiting for the CPU (schedstat), -1: unknown */
};

struct interval {                      /* one stall check's interval with a gap or a slow pass */
    int64_t start_ns, end_ns, off_ns, max_pass_ns;
    int cause;
};

struct inflight {     /* one request in flight: its intended time travels with it (no schedule array) */
    int64_t k, intended_ns, sent_ns;
};

/* Histogram layouts (version 6, --histograms): HdrHistogram's log-linear buckets with unit 1,
 * 2^(HALF+1) sub-buckets per power of two, so index i holds the same values as HdrHistogram's
 * counts[i] for (lowest 1, highest, digits): HALF 10 = 3 significant digits, 7 = 2, 4 = 1. */
#define H3 10
#define H2 7
#define H1 4
#define LAT_HIGHEST 100000000LL     /* µs: 100 s, the record's range */
#define LAG_HIGHEST 100000000000LL  /* ns: 100 s, send lag kept in ns so its µs percentiles keep 3 digits */

struct hists {
    int64_t *lat, *svc, *lag;   /* µs from intended / µs from sent (3 digits), ns send lag (3 digits) */
    uint32_t *sec;              /* per second of the window by completion: latency, 2 digits */
    int64_t *sec_ok, *sec_err;  /* per second: answered in time / failed (as the log's timeline) */
    uint32_t *ms_sent, *ms_sched; /* per ms of the window: sends, scheduled requests */
    int64_t late;               /* 2xx answered after the timeout */
};

struct sched {                  /* the thread's schedule, generated as it goes */
    uint64_t rng;
    int64_t j;
    double tt;
};

struct conn {
    int fd;
    int connected;
    uint32_t id;
    struct inflight *fifo; /* requests in flight, oldest first (ring of cap = pipeline) */
    int head, count;
    char out[4096];     /* bytes not yet written (partial writes) */
    int out_len;
    char *rest;         /* a response not yet complete (heap, grown as needed; NULL: none yet):
                         * reads go to the thread's one INBUF buffer, so a connection holds only
                         * what a read left over, not 64 KB (60,000 connections fit) */
    int rest_len, rest_cap;
    int64_t reconnect_at;
};

struct thread {
    int index;
    int cpu;
    pthread_t tid;
    struct conn *conns;
    int nconns;
    int next_conn;
    int epfd;
    struct sched sch;
    int64_t next_due;   /* due time of the next request to send (ns since t0), -1: none left */
    struct rec *recs;   /* with --log: one per log_every-th request of the window */
    int64_t nrecs;
    int64_t first_window; /* first request number inside the window (with --log) */
    struct hists h;     /* with --histograms */
    char *in;           /* INBUF bytes: every connection's reads, parsed in place */
    /* counters */
    int64_t sent, ok, http_errors, conn_errors, reconnects, unfinished, not_sent, timeouts;
    int64_t work_ns;    /* time in loop passes that sent or read something: the CPU the load costs */
    int64_t offcpu_ns;  /* wall time minus the thread's CPU time over its loop */
    struct stall stalls[MAX_STALLS];
    int nstalls;
    int64_t stalls_dropped;
    struct interval intervals[MAX_INTERVALS];
    int nintervals;
    int64_t intervals_dropped;
    int64_t by_cause_ns[NCAUSES]; /* off-CPU time of the listed stalls, by cause */
    int schedstat_fd;          /* /proc/thread-self/schedstat, -1 when the kernel has none */
    int fail;
    char err[256];
};

/* settings */
static const char *g_host = "127.0.0.1", *g_path = "/", *g_log = NULL, *g_arrival = "uniform", *g_hist = NULL;
static int64_t g_log_every = 1;   /* --log-every N: the log keeps every N-th request of the window */
static int64_t g_warm_ns, g_end_ns, g_nsec, g_nms; /* the window [g_warm_ns, g_end_ns), its seconds and ms */
static int g_len3, g_lenlag, g_len2, g_len1;       /* counts per histogram of each layout */
static uint16_t *g_slots; /* per 1 ms slot of intended time: latency, 1 digit, for steal masks after the run;
                           * shared by the threads (atomic adds), as it is the one cost that grows with
                           * the window: 768 bytes per ms */
static int g_port = 80, g_conns = 10, g_threads = 1, g_pipeline = 32;
static double g_rate = 1000, g_duration = 5, g_warmup = 1, g_timeout = 10;
static int64_t g_spin_ns = 1000000; /* spin, not sleep, this close to a due time (--spin-us): 1 ms, since
                                    * wake-ups from a timed sleep on this VM were > 250 us late for 1 % of sends */
static uint64_t g_seed = 1;
static int64_t g_start_at = 0; /* --start-at: t0 on the realtime clock, ns (several clients start together); 0: now + 5 ms */
static int g_cpus[256], g_ncpus = 0;
static struct sockaddr_storage g_addr;
static socklen_t g_addrlen;
static char g_request[1024];
static int g_reqlen;

static int64_t g_t0;              /* CLOCK_MONOTONIC ns of the schedule's origin */
static volatile int g_go = 0, g_ready = 0;
static volatile sig_atomic_t g_stop = 0;
static volatile int g_conts = 0;  /* SIGCONTs received: a stop from outside, not the thread's own block */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The thread's own context switches so far (voluntary, involuntary). */
static void thread_switches(int64_t *vol, int64_t *invol) {
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0) { *vol = *invol = 0; return; }
    *vol = ru.ru_nvcsw;
    *invol = ru.ru_nivcsw;
}

/* ns the thread has waited runnable for a CPU (schedstat's second field), -1 when unknown. */
static int64_t run_delay_ns(int fd) {
    char buf[128];
    long long run, wait;
    if (fd < 0) return -1;
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return -1;
    buf[n] = 0;
    return sscanf(buf, "%lld %lld", &run, &wait) == 2 ? wait : -1;
}

/* Why a gap happened, from the switch counts over it (see the top of the file). */
static int cause_of(int64_t vol, int64_t chosen_waits, int64_t invol, int conts) {
    if (vol > chosen_waits) return conts > 0 ? CAUSE_STOPPED : CAUSE_OWN;
    return invol > 0 ? CAUSE_PREEMPTED : CAUSE_STEAL;
}

static void add_interval(struct thread *t, int64_t start, int64_t end, int64_t off, int64_t max_pass, int cause) {
    if (t->nintervals == MAX_INTERVALS) { t->intervals_dropped++; return; }
    t->intervals[t->nintervals++] = (struct interval){start, end, off, max_pass, cause};
}

/* Keep the MAX_STALLS largest: a full list gives way to a larger stall. */
static void add_stall(struct thread *t, int64_t start, int64_t end, int64_t off, int cause, int64_t delay) {
    struct stall st = {start, end, off, cause, delay};
    t->by_cause_ns[cause] += off;
    if (t->nstalls < MAX_STALLS) { t->stalls[t->nstalls++] = st; return; }
    int min = 0;
    for (int i = 1; i < MAX_STALLS; i++) if (t->stalls[i].off_ns < t->stalls[min].off_ns) min = i;
    t->stalls_dropped++;
    if (off > t->stalls[min].off_ns) t->stalls[min] = st;
}

static void die(const char *msg) {
    fprintf(stderr, "cnib-openloop: %s\n", msg);
    exit(2);
}

#define FD_MARGIN 64 /* descriptors besides the connections (= infra/limits.py's FD_MARGIN) */

/* The soft open-file limit raised to the hard one when the connections need it; more
 * connections than the hard limit allows: one message, exit 2, before anything connects. */
static void raise_nofile(int conns) {
    struct rlimit rl;
    rlim_t need = (rlim_t)conns + FD_MARGIN;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need) return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr, "cnib-openloop: --connections %d needs %llu open files; the hard limit is %llu "
                "(raise it: LimitNOFILE= of sshd, or nofile in /etc/security/limits.conf)\n",
                conns, (unsigned long long)need, (unsigned long long)rl.rlim_max);
        exit(2);
    }
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "cnib-openloop: cannot raise the open-file limit to %llu: %s\n",
                (unsigned long long)rl.rlim_cur, strerror(errno));
        exit(2);
    }
}

/* Every allocation is checked: out of memory is one message and exit 2, never a crash. */
static void *xalloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size);
    if (!p) { fprintf(stderr, "cnib-openloop: out of memory for %s\n", what); exit(2); }
    return p;
}

/* Counts per histogram of a layout: HdrHistogram's (bucket_count + 1) * sub_bucket_half_count. */
static int hist_len(int half, int64_t highest) {
    int buckets = 1;
    for (int64_t smallest = 2LL << half; smallest <= highest; smallest <<= 1) buckets++;
    return (buckets + 1) << half;
}

/* HdrHistogram's counts index of v (unit 1), v clamped to [0, highest]. */
static int hist_index(int64_t v, int half, int64_t highest) {
    if (v < 0) v = 0;
    if (v > highest) v = highest;
    int64_t mask = (2LL << half) - 1;
    int bucket = 64 - __builtin_clzll((uint64_t)(v | mask)) - (half + 1);
    int64_t sub = v >> bucket;
    return (int)(((int64_t)(bucket + 1) << half) + (sub - (1LL << half)));
}

static void on_signal(int sig) { (void)sig; g_stop = 1; }
static void on_cont(int sig) { (void)sig; __atomic_add_fetch(&g_conts, 1, __ATOMIC_RELAXED); }

/* xorshift64*: a small seeded generator, so a Poisson schedule repeats for a seed. */
static double uniform01(uint64_t *s) {
    *s ^= *s >> 12; *s ^= *s << 25; *s ^= *s >> 27;
    return ((*s * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}

/* The due time of the schedule's next request (ns since t0), or -1 past its end. Uniform:
 * request j of the aggregate schedule is due at j/R and this thread owns j = index mod T;
 * Poisson: superposed Poisson processes are Poisson, so each thread draws at rate R/T. */
static int64_t sched_next(struct sched *s) {
    double span = g_warmup + g_duration;
    if (strcmp(g_arrival, "poisson") == 0) {
        if (s->tt >= span) return -1;
        s->tt += -log(1.0 - uniform01(&s->rng)) / (g_rate / g_threads);
        return s->tt >= span ? -1 : (int64_t)(s->tt * 1e9);
    }
    double tt = (double)s->j / g_rate;
    if (tt >= span) return -1;
    s->j += g_threads;
    return (int64_t)llround(tt * 1e9);
}

/* Move to the next request of the schedule; a request of the window is counted as scheduled. */
static void advance(struct thread *t) {
    t->next_due = sched_next(&t->sch);
    if (t->h.ms_sched && t->next_due >= g_warm_ns && t->next_due < g_end_ns)
        t->h.ms_sched[(t->next_due - g_warm_ns) / 1000000]++;
}

/* The log's record of request k, or NULL when the log does not keep it. */
static struct rec *rec_of(struct thread *t, int64_t k) {
    if (!t->recs || k < t->first_window || (k - t->first_window) % g_log_every) return NULL;
    int64_t i = (k - t->first_window) / g_log_every;
    return i < t->nrecs ? &t->recs[i] : NULL;
}

/* A request of the window was sent: send lag and the per-ms send counts. */
static void on_sent(struct thread *t, const struct inflight *f) {
    if (f->intended_ns < g_warm_ns) return;
    t->sent++;
    if (!t->h.lag) return;
    t->h.lag[hist_index(f->sent_ns - f->intended_ns, H3, LAG_HIGHEST)]++;
    if (f->sent_ns < g_end_ns) t->h.ms_sent[(f->sent_ns - g_warm_ns) / 1000000]++;
}

/* The histograms of a finished request of the window, as result_from_log bins the log: latency
 * rounded up to µs, answered in time = 2xx within the timeout, seconds by completion time. */
static void hist_done(struct hists *h, const struct inflight *f, int status, int64_t done) {
    int64_t lat = done - f->intended_ns, sec = (done - g_warm_ns) / 1000000000LL;
    int good = status >= 200 && status < 300, late = good && lat > (int64_t)(g_timeout * 1e9);
    h->late += late;
    if (!good || late) {
        if (sec >= 0 && sec < g_nsec) h->sec_err[sec]++;
        return;
    }
    int64_t us = (lat + 999) / 1000, svc = (done - f->sent_ns + 999) / 1000;
    if (us < 1) us = 1;
    if (svc < 1) svc = 1;
    h->lat[hist_index(us, H3, LAT_HIGHEST)]++;
    h->svc[hist_index(svc, H3, LAT_HIGHEST)]++;
    if (sec >= 0 && sec < g_nsec) {
        h->sec_ok[sec]++;
        h->sec[sec * g_len2 + hist_index(us, H2, LAT_HIGHEST)]++;
    }
    int64_t slot = (f->intended_ns - g_warm_ns) / 1000000;
    if (slot < g_nms) { /* saturates at 65,535 in one bucket of one ms: 65 M req/s */
        uint16_t *c = &g_slots[slot * g_len1 + hist_index(us, H1, LAT_HIGHEST)];
        uint16_t old = __atomic_load_n(c, __ATOMIC_RELAXED);
        while (old < UINT16_MAX && !__atomic_compare_exchange_n(c, &old, old + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    }
}

/* A request left the in-flight queue: answered (status), or failed (ST_CONNERR). */
static void finish(struct thread *t, const struct inflight *f, int status, int64_t done) {
    struct rec *r = rec_of(t, f->k);
    if (r) { r->done_ns = done; r->status = status; }
    if (f->intended_ns < g_warm_ns) return;
    if (status == ST_CONNERR) t->conn_errors++;
    else if (status >= 200 && status < 300) t->ok++;
    else t->http_errors++;
    if (t->h.lat) hist_done(&t->h, f, status, done);
}

static void set_nonblock_nodelay(int fd) {
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Connect (blocking for the initial set, so the schedule starts with every connection up). */
static int open_conn(struct thread *t, struct conn *c, int blocking) {
    int fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (blocking) {
        struct timeval tv = {.tv_sec = 3}; /* an unreachable server fails in 3 s, not minutes */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0) { close(fd); return -1; }
        set_nonblock_nodelay(fd);
        c->connected = 1;
    } else {
        set_nonblock_nodelay(fd);
        if (connect(fd, (struct sockaddr *)&g_addr, g_addrlen) != 0 && errno != EINPROGRESS) { close(fd); return -1; }
        c->connected = 0;
    }
    c->fd = fd;
    c->rest_len = c->out_len = 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) { close(fd); c->fd = -1; return -1; }
    return 0;
}

static void close_conn(struct thread *t, struct conn *c, int64_t now) {
    /* Requests in flight on a broken connection failed. */
    while (c->count > 0) {
        struct inflight f = c->fifo[c->head];
        c->head = (c->head + 1) % g_pipeline;
        c->count--;
        finish(t, &f, ST_CONNERR, now - g_t0);
    }
    if (c->fd >= 0) {
        epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->connected = 0;
    c->rest_len = c->out_len = 0;
    c->reconnect_at = now + 1000000; /* retry in 1 ms */
}

static void flush_out(struct thread *t, struct conn *c, int64_t now) {
    while (c->out_len > 0) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n > 0) {
            memmove(c->out, c->out + n, c->out_len - n);
            c->out_len -= (int)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            close_conn(t, c, now);
            return;
        }
    }
}

/* The connection that takes the next request: round robin, skipping full or down ones. */
static struct conn *pick(struct thread *t) {
    for (int i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[(t->next_conn + i) % t->nconns];
        if (c->connected && c->count < g_pipeline && c->out_len + g_reqlen <= (int)sizeof c->out) {
            t->next_conn = (int)((c - t->conns) + 1) % t->nconns;
            return c;
        }
    }
    return NULL;
}

/* Keep the bytes a read left over (an incomplete response) with the connection; 0 when it
 * cannot hold them (out of memory: the connection is closed, its requests failed, and said). */
static int keep_rest(struct thread *t, struct conn *c, const char *buf, int len, int64_t now) {
    if (len > c->rest_cap) {
        int cap = c->rest_cap ? c->rest_cap : 512;
        while (cap < len) cap *= 2;
        char *p = realloc(c->rest, (size_t)cap);
        if (!p) {
            snprintf(t->err, sizeof t->err, "out of memory for a connection's partial response (%d bytes)", len);
            t->fail = 1;
            g_stop = 1;
            close_conn(t, c, now);
            return 0;
        }
        c->rest = p;
        c->rest_cap = cap;
    }
    memcpy(c->rest, buf, (size_t)len);
    c->rest_len = len;
    return 1;
}

/* One response's framing at head (avail bytes): its length (0: incomplete, -1: not a response
 * this generator reads, -2: chunked, refused), its status in *status. */
static long frame(const char *head, int avail, int *status) {
    const char *end = memmem(head, (size_t)avail, "\r\n\r\n", 4);
    if (!end) return 0;
    int hlen = (int)(end - head) + 4;
    long clen = -1;
    *status = 0;
    if (avail >= 12 && memcmp(head, "HTTP/1.", 7) == 0) *status = atoi(head + 9);
    for (const char *p = head; p < end; p++) {
        if (p != head && p[-1] != '\n') continue;
        if (strncasecmp(p, "Content-Length:", 15) == 0) clen = strtol(p + 15, NULL, 10);
        else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0) return -2;
    }
    if (clen < 0) clen = 0;
    if (*status == 0 || hlen + clen > INBUF) return -1;
    return avail < hlen + clen ? 0 : hlen + clen;
}

/* Parse complete responses; each completes the oldest request in flight. Reads go to the
 * thread's buffer behind what the connection kept from its last read; what stays incomplete
 * is kept with the connection again. */
static void on_readable(struct thread *t, struct conn *c, int64_t now) {
    char *buf = t->in;
    int len = c->rest_len;
    if (len) memcpy(buf, c->rest, (size_t)len);
    c->rest_len = 0;
    for (;;) {
        ssize_t n = recv(c->fd, buf + len, (size_t)(INBUF - len), 0);
        if (n == 0) { close_conn(t, c, now); return; }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            close_conn(t, c, now);
            return;
        }
        int drained = n < INBUF - len; /* a short read emptied the socket: no recv() to see EAGAIN */
        len += (int)n;
        int64_t done = now_ns() - g_t0;
        /* Responses are consumed from `at` and the rest moved to the front once per read, so a
         * burst of buffered responses costs linear time, not a memmove per response. */
        int at = 0, status = 0;
        for (;;) {
            long size = frame(buf + at, len - at, &status);
            if (size == 0) break;
            if (size == -2) {
                /* Only Content-Length framing is read: a chunked body would be misparsed. */
                snprintf(t->err, sizeof t->err, "the server sent a Transfer-Encoding response (chunked); "
                         "cnib-openloop reads only responses framed by Content-Length");
                t->fail = 1;
                g_stop = 1;
            }
            if (size < 0 || c->count == 0) { close_conn(t, c, now); return; } /* or a response nobody asked for */
            struct inflight f = c->fifo[c->head];
            c->head = (c->head + 1) % g_pipeline;
            c->count--;
            finish(t, &f, status, done);
            at += (int)size;
        }
        if (at > 0) {
            memmove(buf, buf + at, (size_t)(len - at));
            len -= at;
        }
        if (len == INBUF) { close_conn(t, c, now); return; } /* a header or body larger than the buffer */
        if (drained) break;
    }
    if (len) keep_rest(t, c, buf, len, now);
}

/* Wait up to timeout_ns for socket events (0: just look). ns resolution where the C library
 * has epoll_pwait2 (glibc >= 2.35); else ms, rounded down, so the thread wakes early, not late. */
static int wait_events(int epfd, struct epoll_event *evs, int max, int64_t timeout_ns) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
    struct timespec ts = {.tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL};
    return epoll_pwait2(epfd, evs, max, &ts, NULL);
#else
    return epoll_wait(epfd, evs, max, (int)(timeout_ns / 1000000));
#endif
}

/* Whether any of the thread's connections is open (after the schedule's end, none open and
 * none coming back means the server is gone: waiting out the timeout would add nothing). */
static int any_open(const struct thread *t) {
    for (int i = 0; i < t->nconns; i++) if (t->conns[i].fd >= 0) return 1;
    return 0;
}

/* Handle socket events; returns how many, and when the wait ended in *woke (for work_ns). */
static int poll_once(struct thread *t, int64_t now, int64_t timeout_ns, int64_t *woke) {
    struct epoll_event evs[EVENTS_PER_PASS];
    int n = wait_events(t->epfd, evs, EVENTS_PER_PASS, timeout_ns);
    *woke = timeout_ns > 0 ? now_ns() : now;
    for (int i = 0; i < n; i++) {
        struct conn *c = evs[i].data.ptr;
        if (c->fd < 0) continue;
        if (!c->connected && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            int err = 0; socklen_t len = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) { close_conn(t, c, now); continue; }
            c->connected = 1;
        }
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(t, c, now);
        if (c->fd >= 0 && (evs[i].events & EPOLLOUT) && c->out_len) flush_out(t, c, now);
    }
    return n;
}

static void *run_thread(void *arg) {
    struct thread *t = arg;
    if (t->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(t->cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            snprintf(t->err, sizeof t->err, "cannot pin thread %d to CPU %d: %s", t->index, t->cpu, strerror(errno));
            t->fail = 1;
        }
    }
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC); /* -1: no schedstat */
    for (int i = 0; i < t->nconns && !t->fail; i++) {
        if (open_conn(t, &t->conns[i], 1) != 0) {
            snprintf(t->err, sizeof t->err, "cannot connect to %s:%d: %s", g_host, g_port, strerror(errno));
            t->fail = 1;
        }
    }
    pthread_mutex_lock(&g_mu);
    g_ready++;
    pthread_mutex_unlock(&g_mu);
    while (!g_go) { if (g_stop) return NULL; }
    if (g_go < 0) return NULL;

    int64_t k = 0;  /* next request to send */
    int64_t end_sched = (int64_t)((g_warmup + g_duration) * 1e9);
    int64_t deadline = end_sched + (int64_t)(g_timeout * 1e9);
    int64_t last_reconnect_scan = 0;
    int64_t loop_wall0 = now_ns(), loop_cpu0 = thread_cpu_ns();
    int64_t base_wall = loop_wall0, base_cpu = loop_cpu0, last_top = loop_wall0;
    int64_t asleep = 0, asleep_total = 0; /* wall time blocked in epoll by choice: not a stall */
    int64_t waits = 0;                    /* epoll waits with a timeout since the baseline */
    int64_t max_pass = 0;                 /* longest loop pass (wall) since the baseline */
    int64_t pass_asleep = 0;              /* the last pass's chosen wait in epoll */
    int64_t base_vol, base_invol, base_delay = run_delay_ns(t->schedstat_fd);
    int base_conts = __atomic_load_n(&g_conts, __ATOMIC_RELAXED);
    thread_switches(&base_vol, &base_invol);
#ifdef CNIB_BREAK_PACING
    int64_t next_break = 10000000; /* the deliberately broken build (tests of the tests only) */
#endif
    for (;;) {
        int64_t now = now_ns();
        int64_t rel = now - g_t0;
        if (now - last_top - pass_asleep > max_pass) max_pass = now - last_top - pass_asleep; /* its chosen wait left out */
        pass_asleep = 0;
        /* Stall check: only a pass longer than STALL_NS can hold a stall that long; the
         * baseline is also renewed each ms so an old small gap is not charged to a new pass. */
        if (now - last_top > STALL_NS || now - base_wall > 1000000) {
            int64_t cpu = thread_cpu_ns(), vol, invol, delay = run_delay_ns(t->schedstat_fd);
            thread_switches(&vol, &invol);
            int64_t off = (now - base_wall) - (cpu - base_cpu) - asleep;
            int conts = __atomic_load_n(&g_conts, __ATOMIC_RELAXED);
            int cause = cause_of(vol - base_vol, waits, invol - base_invol, conts - base_conts);
            int64_t waited = delay >= 0 && base_delay >= 0 ? delay - base_delay : -1;
            if (now - last_top > STALL_NS && off > STALL_NS) add_stall(t, last_top - g_t0, rel, off, cause, waited);
            if (off > SHORT_NS || max_pass > SLOW_PASS_NS)
                add_interval(t, base_wall - g_t0, rel, off, max_pass, off > SHORT_NS ? cause : CAUSE_STEAL);
            base_wall = now;
            base_cpu = cpu;
            base_vol = vol;
            base_invol = invol;
            base_delay = delay;
            base_conts = conts;
            asleep = 0;
            waits = 0;
            max_pass = 0;
        }
        last_top = now;
#ifdef CNIB_BREAK_PACING
        if (rel >= next_break) { /* 300 us asleep every 10 ms of the schedule: the generator's own fault */
            struct timespec nap = {0, 300000};
            nanosleep(&nap, NULL);
            next_break += 10000000;
        }
#endif
        int64_t k_before = k;
        while (t->next_due >= 0 && t->next_due <= rel) {
            /* Everything due now goes out in one write on one connection (pipelined) while it
             * has room: on schedule that is one request per write; when the thread is behind
             * (above ~40k req/s per core, where each send() carries the request through the
             * whole veth path to the server's socket) the catch-up costs one system call, not
             * one per request. Each request's lag still counts from its own due time. */
            struct conn *c = pick(t);
            if (!c) break;  /* every connection is full or down: the request waits (its lag counts) */
            int64_t sent = now_ns() - g_t0;
            do {
                struct inflight *f = &c->fifo[(c->head + c->count) % g_pipeline];
                *f = (struct inflight){k, t->next_due, sent};
                c->count++;
                memcpy(c->out + c->out_len, g_request, g_reqlen);
                c->out_len += g_reqlen;
                struct rec *r = rec_of(t, k);
                if (r) { r->sent_ns = sent; r->conn = c->id; }
                on_sent(t, f);
                k++;
                advance(t);
            } while (t->next_due >= 0 && t->next_due <= rel && c->count < g_pipeline &&
                     c->out_len + g_reqlen <= (int)sizeof c->out);
            flush_out(t, c, now);
            rel = now_ns() - g_t0;
        }
        /* Idle until shortly before the next due time (woken at once by a response), so at low
         * rates the thread sleeps like any client; within g_spin_ns of a due time, or when a
         * send is already due, it spins. The wait is capped at 1 ms for the checks below. */
        int64_t timeout = 0;
        if (k == k_before) {
            int64_t gap = t->next_due >= 0 ? t->next_due - rel - g_spin_ns : 1000000;
            if (gap > 0) timeout = gap < 1000000 ? gap : 1000000;
        }
        int64_t sent_until = now_ns(), woke;
        int events = poll_once(t, now, timeout, &woke);
        if (timeout > 0) { asleep += woke - sent_until; asleep_total += woke - sent_until; pass_asleep = woke - sent_until; waits++; }
        if (k != k_before) t->work_ns += sent_until - now;
        if (events > 0) t->work_ns += now_ns() - woke;
        if (rel - last_reconnect_scan > 1000000) { /* once a ms: reopen broken connections */
            last_reconnect_scan = rel;
            for (int i = 0; i < t->nconns; i++) {
                struct conn *c = &t->conns[i];
                if (c->fd < 0 && now >= c->reconnect_at) {
                    t->reconnects++;
                    if (open_conn(t, c, 0) != 0) c->reconnect_at = now + 10000000;
                }
            }
        }
        if (g_stop) break;
        if (t->next_due < 0) {
            int inflight = 0;
            for (int i = 0; i < t->nconns; i++) inflight += t->conns[i].count;
            if (inflight == 0 || rel > deadline) break;
        } else if (rel > deadline || (rel > end_sched && !any_open(t))) {
            break; /* connections never came back: stop instead of waiting for the timeout */
        }
    }
    t->offcpu_ns = (now_ns() - loop_wall0) - (thread_cpu_ns() - loop_cpu0) - asleep_total;
    for (int i = 0; i < t->nconns; i++) if (t->conns[i].fd >= 0) close(t->conns[i].fd);
    close(t->epfd);
    if (t->schedstat_fd >= 0) close(t->schedstat_fd);
    for (int i = 0; i < t->nconns; i++) { /* still in flight: unanswered */
        struct conn *c = &t->conns[i];
        for (int j = 0; j < c->count; j++)
            if (c->fifo[(c->head + j) % g_pipeline].intended_ns >= g_warm_ns) t->unfinished++;
    }
    for (; t->next_due >= 0; k++, advance(t)) { /* the rest of the schedule was never sent */
        if (t->next_due < g_warm_ns) continue;
        t->not_sent++;
        struct rec *r = rec_of(t, k);
        if (r) r->status = ST_NOTSENT;
    }
    return NULL;
}

/* With --log: the records of every log_every-th request of the window, their intended times
 * filled in from a copy of the thread's schedule (the schedule itself is never stored). */
static void init_log(struct thread *t) {
    struct sched copy = t->sch;
    int64_t n = 0, first = -1;
    for (int64_t due; (due = sched_next(&copy)) >= 0; n++)
        if (first < 0 && due >= g_warm_ns) first = n;
    t->first_window = first < 0 ? n : first;
    t->nrecs = (n - t->first_window + g_log_every - 1) / g_log_every;
    t->recs = xalloc((size_t)t->nrecs, sizeof(struct rec), "the request log");
    copy = t->sch;
    for (int64_t k = 0, due; (due = sched_next(&copy)) >= 0; k++) {
        struct rec *r = rec_of(t, k);
        if (r) *r = (struct rec){due, -1, -1, ST_NONE, 0};
    }
}

static void init_hists(struct hists *h) {
    h->lat = xalloc((size_t)g_len3, sizeof(int64_t), "the histograms");
    h->svc = xalloc((size_t)g_len3, sizeof(int64_t), "the histograms");
    h->lag = xalloc((size_t)g_lenlag, sizeof(int64_t), "the histograms");
    h->sec = xalloc((size_t)(g_nsec * g_len2), sizeof(uint32_t), "the per-second histograms");
    h->sec_ok = xalloc((size_t)g_nsec, sizeof(int64_t), "the per-second counts");
    h->sec_err = xalloc((size_t)g_nsec, sizeof(int64_t), "the per-second counts");
    h->ms_sent = xalloc((size_t)g_nms, sizeof(uint32_t), "the per-ms counts");
    h->ms_sched = xalloc((size_t)g_nms, sizeof(uint32_t), "the per-ms counts");
}

/* Thread i's histograms added into thread 0's (the merge at the end). */
static void merge_hists(struct hists *into, const struct hists *h) {
    for (int i = 0; i < g_len3; i++) { into->lat[i] += h->lat[i]; into->svc[i] += h->svc[i]; }
    for (int i = 0; i < g_lenlag; i++) into->lag[i] += h->lag[i];
    for (int64_t i = 0; i < g_nsec * g_len2; i++) into->sec[i] += h->sec[i];
    for (int64_t i = 0; i < g_nsec; i++) { into->sec_ok[i] += h->sec_ok[i]; into->sec_err[i] += h->sec_err[i]; }
    for (int64_t i = 0; i < g_nms; i++) { into->ms_sent[i] += h->ms_sent[i]; into->ms_sched[i] += h->ms_sched[i]; }
    into->late += h->late;
}

/* One section of the histogram file: int64 id, int64 n, then n int64 pairs (index, count) of
 * the nonzero entries of an array of `size`-byte unsigned counts (8: int64). */
static int put_sparse(FILE *f, int64_t id, const void *arr, int size, int64_t n) {
    int64_t nz = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && (fwrite(&id, 8, 1, f) != 1 || fwrite(&nz, 8, 1, f) != 1)) return -1;
        for (int64_t i = 0; i < n; i++) {
            int64_t v = size == 8 ? ((const int64_t *)arr)[i] : size == 4 ? (int64_t)((const uint32_t *)arr)[i]
                                                                           : (int64_t)((const uint16_t *)arr)[i];
            if (!v) continue;
            if (pass == 0) { nz++; continue; }
            int64_t pair[2] = {i, v};
            if (fwrite(pair, 8, 2, f) != 2) return -1;
        }
    }
    return 0;
}

/* The merged histograms (layouts: the comment at struct hists; ids: generators/openloop.py). */
static int write_hists(const char *path, const struct hists *h) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int64_t head[8] = {0x3148494e4243LL /* "CBNIH1" */, 1, H3, H2, H1, g_nsec, g_nms, h->late};
    int bad = fwrite(head, 8, 8, f) != 8;
    bad |= put_sparse(f, 1, h->lat, 8, g_len3) | put_sparse(f, 2, h->svc, 8, g_len3) | put_sparse(f, 3, h->lag, 8, g_lenlag);
    bad |= put_sparse(f, 4, h->sec, 4, g_nsec * g_len2) | put_sparse(f, 5, h->sec_ok, 8, g_nsec);
    bad |= put_sparse(f, 6, h->sec_err, 8, g_nsec) | put_sparse(f, 7, h->ms_sent, 4, g_nms);
    bad |= put_sparse(f, 8, h->ms_sched, 4, g_nms) | put_sparse(f, 9, g_slots, 2, g_nms * g_len1);
    return (fclose(f) != 0 || bad) ? -1 : 0;
}

/* The process's peak resident memory (VmHWM, kB), -1 when /proc does not say. */
static long long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld kB", &kb) == 1) break;
    fclose(f);
    return kb;
}

static void usage(void) {
    fprintf(stderr,
            "usage: cnib-openloop --host ADDR --port N --path /small --rate R [--connections C] [--threads T]\n"
            "         [--duration S] [--warmup S] [--pipeline M] [--timeout S] [--arrival uniform|poisson]\n"
            "         [--seed N] [--cpus 0,1] [--spin-us 1000] [--log FILE] [--log-every N] [--histograms FILE]\n"
            "         [--start-at REALTIME_NS] [--version]\n");
    exit(2);
}

static double num(const char *name, const char *v, double lo, double hi) {
    char *end;
    double x = strtod(v, &end);
    if (*v == 0 || *end != 0 || !(x >= lo && x <= hi)) {
        fprintf(stderr, "cnib-openloop: --%s must be a number in [%g, %g] (got '%s')\n", name, lo, hi, v);
        exit(2);
    }
    return x;
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0) { printf("cnib-openloop %s\n", VERSION); exit(0); }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) usage();
        const char *v = argv[++i];
        a += 2;
        if (!strcmp(a, "host")) g_host = v;
        else if (!strcmp(a, "port")) g_port = (int)num(a, v, 1, 65535);
        else if (!strcmp(a, "path")) g_path = v;
        else if (!strcmp(a, "rate")) g_rate = num(a, v, 0.001, 1e8);
        else if (!strcmp(a, "connections")) g_conns = (int)num(a, v, 1, 1000000);
        else if (!strcmp(a, "threads")) g_threads = (int)num(a, v, 1, 256);
        else if (!strcmp(a, "duration")) g_duration = num(a, v, 0.001, 86400);
        else if (!strcmp(a, "warmup")) g_warmup = num(a, v, 0, 86400);
        else if (!strcmp(a, "pipeline")) g_pipeline = (int)num(a, v, 1, 65536);
        else if (!strcmp(a, "timeout")) g_timeout = num(a, v, 0.001, 3600);
        else if (!strcmp(a, "spin-us")) g_spin_ns = (int64_t)(num(a, v, 0, 1e6) * 1000);
        else if (!strcmp(a, "seed")) g_seed = (uint64_t)num(a, v, 0, 1e18);
        else if (!strcmp(a, "start-at")) {
            char *end;
            errno = 0;
            long long x = strtoll(v, &end, 10); /* ns: a double would round it to 256 ns */
            if (*v == 0 || *end != 0 || errno || x <= 0) die("--start-at must be a positive integer (realtime ns)");
            g_start_at = x;
        }
        else if (!strcmp(a, "arrival")) {
            if (strcmp(v, "uniform") && strcmp(v, "poisson")) die("--arrival must be uniform or poisson");
            g_arrival = v;
        } else if (!strcmp(a, "log")) g_log = v;
        else if (!strcmp(a, "log-every")) g_log_every = (int64_t)num(a, v, 1, 1e9);
        else if (!strcmp(a, "histograms")) g_hist = v;
        else if (!strcmp(a, "cpus")) {
            char *copy = strdup(v), *save = NULL;
            for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
                if (g_ncpus == 256) die("--cpus: too many CPUs");
                g_cpus[g_ncpus++] = (int)num("cpus", p, 0, 4095);
            }
            free(copy);
        } else usage();
    }
    g_warm_ns = (int64_t)(g_warmup * 1e9);
    g_end_ns = g_warm_ns + (int64_t)(g_duration * 1e9);
    g_nms = (g_end_ns - g_warm_ns) / 1000000 + 1;
    g_nsec = (int64_t)ceil(g_duration) + 1;
    g_len3 = hist_len(H3, LAT_HIGHEST);
    g_lenlag = hist_len(H3, LAG_HIGHEST);
    g_len2 = hist_len(H2, LAT_HIGHEST);
    g_len1 = hist_len(H1, LAT_HIGHEST);
    if (g_threads > g_conns) die("--threads must not exceed --connections (each thread needs a connection)");
    if (strlen(g_path) > 512 || g_path[0] != '/' || strpbrk(g_path, " \r\n")) die("--path must start with / and hold no spaces or line breaks");
    if (strlen(g_host) > 255 || strpbrk(g_host, " \r\n")) die("--host must hold no spaces or line breaks");
}

static void resolve(void) {
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
    char port[16];
    snprintf(port, sizeof port, "%d", g_port);
    int rc = getaddrinfo(g_host, port, &hints, &res);
    if (rc != 0) { fprintf(stderr, "cnib-openloop: cannot resolve %s: %s\n", g_host, gai_strerror(rc)); exit(2); }
    memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
    g_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    int v6 = strchr(g_host, ':') != NULL;
    g_reqlen = snprintf(g_request, sizeof g_request,
                        "GET %s HTTP/1.1\r\nHost: %s%s%s:%d\r\nUser-Agent: cnib-openloop/" VERSION "\r\n\r\n",
                        g_path, v6 ? "[" : "", g_host, v6 ? "]" : "", g_port);
    if (g_reqlen < 0 || g_reqlen >= (int)sizeof g_request) die("--path and --host make a request longer than 1023 bytes");
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    raise_nofile(g_conns);
    resolve();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct sigaction sc = {.sa_handler = on_cont, .sa_flags = SA_RESTART};
    sigaction(SIGCONT, &sc, NULL);

    struct thread *ts = xalloc((size_t)g_threads, sizeof *ts, "the threads");
    if (g_hist) g_slots = xalloc((size_t)(g_nms * g_len1), sizeof(uint16_t), "the per-ms slot histograms");
    uint32_t next_id = 0;
    for (int i = 0; i < g_threads; i++) {
        struct thread *t = &ts[i];
        t->index = i;
        t->cpu = g_ncpus ? g_cpus[i % g_ncpus] : -1;
        t->sch = (struct sched){g_seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i * 0xBF58476D1CE4E5B9ULL + 1, i, 0};
        if (g_log) init_log(t);
        if (g_hist) init_hists(&t->h);
        t->in = xalloc(INBUF, 1, "the read buffers");
        advance(t);
        t->nconns = g_conns / g_threads + (i < g_conns % g_threads);
        t->conns = xalloc((size_t)t->nconns, sizeof *t->conns, "the connections");
        for (int c = 0; c < t->nconns; c++) {
            t->conns[c].fd = -1;
            t->conns[c].id = next_id++;
            t->conns[c].fifo = xalloc((size_t)g_pipeline, sizeof(struct inflight), "the in-flight queues");
        }
    }
    for (int i = 0; i < g_threads; i++) {
        int rc = pthread_create(&ts[i].tid, NULL, run_thread, &ts[i]);
        if (rc != 0) { fprintf(stderr, "cnib-openloop: cannot start thread %d: %s\n", i, strerror(rc)); exit(2); }
    }
    while (g_ready < g_threads && !g_stop) usleep(100);
    int failed = 0;
    for (int i = 0; i < g_threads; i++) failed |= ts[i].fail;
    struct timespec rt;
    int64_t mono = now_ns();
    clock_gettime(CLOCK_REALTIME, &rt);
    int64_t realtime_now = (int64_t)rt.tv_sec * 1000000000LL + rt.tv_nsec;
    int64_t lead = 5000000; /* 5 ms from now: every thread is spinning by then */
    if (g_start_at) {
        /* The driver's common instant for several clients (version 8). Until then the threads
         * wait in epoll as before any far due time; an instant already (nearly) past or absurdly
         * far means the clients would not start together: one message, exit 2. */
        lead = g_start_at - realtime_now;
        if (lead < 1000000 || lead > 60000000000LL) {
            fprintf(stderr, "cnib-openloop: --start-at is %.1f ms from now; it must be 1 ms to 60 s ahead (the "
                    "clients would not start together)\n", lead / 1e6);
            __atomic_store_n(&g_go, -1, __ATOMIC_SEQ_CST);
            for (int i = 0; i < g_threads; i++) pthread_join(ts[i].tid, NULL);
            return 2;
        }
    }
    g_t0 = mono + lead;
    int64_t realtime_at_t0 = realtime_now + lead;
    __atomic_store_n(&g_go, failed ? -1 : 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < g_threads; i++) pthread_join(ts[i].tid, NULL);
    for (int i = 0; i < g_threads; i++) {
        if (ts[i].fail) { fprintf(stderr, "cnib-openloop: %s\n", ts[i].err); return 1; }
    }

    int64_t by_cause[NCAUSES] = {0}, intervals_dropped = 0;
    int64_t offcpu_ns = 0, stalls_dropped = 0, work_ns = 0, window = 0, sent = 0, ok = 0, http_errors = 0, conn_errors = 0, reconnects = 0, unfinished = 0, not_sent = 0;
    for (int i = 0; i < g_threads; i++) {
        struct thread *t = &ts[i];
        window += t->sent + t->not_sent;
        sent += t->sent; ok += t->ok; http_errors += t->http_errors; conn_errors += t->conn_errors;
        reconnects += t->reconnects; unfinished += t->unfinished; not_sent += t->not_sent; work_ns += t->work_ns;
        offcpu_ns += t->offcpu_ns; stalls_dropped += t->stalls_dropped; intervals_dropped += t->intervals_dropped;
        for (int c = 0; c < NCAUSES; c++) by_cause[c] += t->by_cause_ns[c];
    }
    if (g_log) {
        FILE *f = fopen(g_log, "wb");
        if (!f) { fprintf(stderr, "cnib-openloop: cannot write %s: %s\n", g_log, strerror(errno)); return 1; }
        for (int i = 0; i < g_threads; i++) {
            struct thread *t = &ts[i];
            int64_t n = t->nrecs;
            if (n > 0 && fwrite(t->recs, sizeof(struct rec), n, f) != (size_t)n) {
                fprintf(stderr, "cnib-openloop: short write to %s\n", g_log);
                return 1;
            }
        }
        if (fclose(f) != 0) { fprintf(stderr, "cnib-openloop: cannot write %s: %s\n", g_log, strerror(errno)); return 1; }
    }
    if (g_hist) {
        for (int i = 1; i < g_threads; i++) merge_hists(&ts[0].h, &ts[i].h);
        if (write_hists(g_hist, &ts[0].h) != 0) { fprintf(stderr, "cnib-openloop: cannot write %s: %s\n", g_hist, strerror(errno)); return 1; }
    }
    printf("{\"generator\": \"cnib-openloop\", \"version\": \"%s\", \"interrupted\": %s, \"log_every\": %lld, \"histograms\": %s, \"peak_rss_kb\": %lld, "
           "\"t0_realtime_ns\": %lld, \"rate\": %.6f, \"arrival\": \"%s\", \"connections\": %d, \"threads\": %d, "
           "\"pipeline\": %d, \"warmup_s\": %.6f, \"duration_s\": %.6f, \"timeout_s\": %.6f, \"record_bytes\": %zu, "
           "\"window_requests\": %lld, \"sent\": %lld, \"ok\": %lld, \"http_errors\": %lld, \"conn_errors\": %lld, "
           "\"reconnects\": %lld, \"unfinished\": %lld, \"not_sent\": %lld, \"work_s\": %.6f, "
           "\"offcpu_s\": %.6f, \"stall_ns\": %d, \"stalls_dropped\": %lld, \"stalls\": [",
           VERSION, g_stop ? "true" : "false", (long long)g_log_every, g_hist ? "true" : "false", peak_rss_kb(), (long long)realtime_at_t0, g_rate, g_arrival, g_conns, g_threads,
           g_pipeline, g_warmup, g_duration, g_timeout, sizeof(struct rec), (long long)window, (long long)sent,
           (long long)ok, (long long)http_errors, (long long)conn_errors, (long long)reconnects,
           (long long)unfinished, (long long)not_sent, work_ns / 1e9, offcpu_ns / 1e9, STALL_NS,
           (long long)stalls_dropped);
    const char *sep = "";
    for (int i = 0; i < g_threads; i++) {
        for (int j = 0; j < ts[i].nstalls; j++) {
            struct stall *st = &ts[i].stalls[j];
            printf("%s[%d, %lld, %lld, %lld, %d, %lld]", sep, i, (long long)st->start_ns, (long long)st->end_ns,
                   (long long)st->off_ns, st->cause, (long long)st->run_delay_ns);
            sep = ", ";
        }
    }
    printf("], \"stall_causes\": [\"steal\", \"preempted\", \"own\", \"stopped\"], \"stall_ns_by_cause\": [%lld, %lld, %lld, %lld], "
           "\"short_ns\": %d, \"slow_pass_ns\": %d, \"intervals_dropped\": %lld, \"intervals\": [",
           (long long)by_cause[0], (long long)by_cause[1], (long long)by_cause[2], (long long)by_cause[3], SHORT_NS, SLOW_PASS_NS,
           (long long)intervals_dropped);
    sep = "";
    for (int i = 0; i < g_threads; i++) {
        for (int j = 0; j < ts[i].nintervals; j++) {
            struct interval *iv = &ts[i].intervals[j];
            printf("%s[%d, %lld, %lld, %lld, %lld, %d]", sep, i, (long long)iv->start_ns, (long long)iv->end_ns,
                   (long long)iv->off_ns, (long long)iv->max_pass_ns, iv->cause);
            sep = ", ";
        }
    }
    printf("]}\n");
    return g_stop ? 3 : 0;
}
