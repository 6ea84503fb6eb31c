/*
 * lat-ctx: context switch time by lmbench lat_ctx's method. N processes in a
 * ring of pipes pass a token; each one, on receiving it, reads its own
 * working set of S KB before passing it on. The time per hop minus the cost
 * of the same pipe read/write and working-set sum in one process (no switch)
 * is the context switch time, in microseconds. (It can come out slightly
 * negative when the switch is cheaper than the noise in the overhead.)
 *
 * usage: lat-ctx [-c CPU] [-r REPS] [-m MS] -s KB N [N...]
 *   -c CPU   pin every process of the ring to this CPU (-1: no pinning; default 0)
 *   -r REPS  timed repetitions per N (median reported; default 5)
 *   -m MS    target length of one repetition in milliseconds (default 100)
 * Prints one JSON object per N on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static size_t ws_words;
static int *ws;
static volatile long sink;

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void die(const char *what) {
  fprintf(stderr, "lat-ctx: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* Read the whole working set, as lmbench's sumit does. */
static void touch(void) {
  long s = 0;
  for (size_t i = 0; i < ws_words; i++) s += ws[i];
  sink += s;
}

static void alloc_ws(size_t kb) {
  ws_words = kb * 1024 / sizeof(int);
  free(ws);
  ws = NULL;
  if (!ws_words) return;
  ws = malloc(ws_words * sizeof(int));
  if (!ws) die("malloc");
  for (size_t i = 0; i < ws_words; i++) ws[i] = (int)i;
}

static int readall(int fd, int *tok) {
  ssize_t n;
  do n = read(fd, tok, sizeof *tok);
  while (n < 0 && errno == EINTR);
  return n == (ssize_t)sizeof *tok;
}

static void writeall(int fd, int tok) {
  ssize_t n;
  do n = write(fd, &tok, sizeof tok);
  while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof tok) die("write");
}

/* A ring member: receive, touch, pass on, until EOF. */
static void member(int in, int out, size_t kb) {
  alloc_ws(kb); /* its own working set, like lmbench's per-process data */
  int tok;
  while (readall(in, &tok)) {
    touch();
    writeall(out, tok);
  }
  _exit(0);
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One process, no switch: the same pipe write/read and working-set sum (median of reps). */
static double overhead_us(double target_ms, int reps) {
  int p[2];
  if (pipe(p) < 0) die("pipe");
  int tok = 1;
  long iters = 1000;
  double samples[100];
  for (int round = -1; round < reps; round++) {
    double t0 = now_us();
    for (long i = 0; i < iters; i++) {
      writeall(p[1], tok);
      if (!readall(p[0], &tok)) die("read");
      touch();
    }
    double per = (now_us() - t0) / iters;
    if (round < 0) iters = (long)(target_ms * 1000 / (per > 0.01 ? per : 0.01)) + 1;
    else samples[round] = per;
  }
  close(p[0]);
  close(p[1]);
  return median(samples, reps);
}

int main(int argc, char **argv) {
  int cpu = 0, reps = 5, opt;
  double target_ms = 100;
  long kb = -1;
  while ((opt = getopt(argc, argv, "c:r:m:s:")) != -1) {
    switch (opt) {
      case 'c': cpu = atoi(optarg); break;
      case 'r': reps = atoi(optarg); break;
      case 'm': target_ms = atof(optarg); break;
      case 's': kb = atol(optarg); break;
      default: fprintf(stderr, "usage: lat-ctx [-c CPU] [-r REPS] [-m MS] -s KB N [N...]\n"); return 2;
    }
  }
  if (kb < 0 || optind >= argc || reps < 1 || reps > 100) {
    fprintf(stderr, "usage: lat-ctx [-c CPU] [-r REPS] [-m MS] -s KB N [N...]\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
  }
  alloc_ws((size_t)kb);
  double ovh = overhead_us(target_ms / 4, reps);

  for (int a = optind; a < argc; a++) {
    int n = atoi(argv[a]);
    if (n < 2) {
      fprintf(stderr, "lat-ctx: N must be at least 2\n");
      return 2;
    }
    /* Build the ring: parent -> child 1 -> ... -> child n-1 -> parent. */
    int first[2];
    if (pipe(first) < 0) die("pipe");
    int in = first[0];
    pid_t *kids = calloc((size_t)n, sizeof *kids);
    for (int i = 1; i < n; i++) {
      int p[2];
      if (pipe(p) < 0) die("pipe");
      pid_t k = fork();
      if (k < 0) die("fork");
      if (k == 0) {
        close(first[1]);
        close(p[0]);
        member(in, p[1], (size_t)kb);
      }
      kids[i] = k;
      close(in);
      close(p[1]);
      in = p[0];
    }
    int out = first[1], tok = 1;
    /* Warm up and calibrate: how many trips around the ring fill target_ms. */
    double t0 = now_us();
    long trips = 0;
    while (trips < 3 || now_us() - t0 < target_ms / 5) {
      writeall(out, tok);
      if (!readall(in, &tok)) die("ring broke");
      touch();
      trips++;
    }
    double per_trip = (now_us() - t0) / trips;
    long k = (long)(target_ms * 1000 / per_trip) + 1;
    double *samples = calloc((size_t)reps, sizeof *samples);
    for (int r = 0; r < reps; r++) {
      double s = now_us();
      for (long i = 0; i < k; i++) {
        writeall(out, tok);
        if (!readall(in, &tok)) die("ring broke");
        touch();
      }
      samples[r] = (now_us() - s) / ((double)k * n);
    }
    close(out);
    close(in);
    for (int i = 1; i < n; i++) waitpid(kids[i], NULL, 0);
    double sorted[100];
    memcpy(sorted, samples, sizeof(double) * (size_t)reps);
    double med = median(sorted, reps);
    double ctx = med - ovh;
    printf("{\"sizeKB\":%ld,\"procs\":%d,\"cpu\":%d,\"trips\":%ld,\"hopUs\":%.4f,\"minHopUs\":%.4f,\"overheadUs\":%.4f,\"ctxUs\":%.4f,\"samplesHopUs\":[",
           kb, n, cpu, k, med, sorted[0], ovh, ctx);
    for (int r = 0; r < reps; r++) printf("%s%.4f", r ? "," : "", samples[r]);
    printf("]}\n");
    fflush(stdout);
    free(samples);
    free(kids);
  }
  return 0;
}
