/*
 * The one clock of the benchmark's timed runs (bench/lib/common.sh, time_once).
 *
 * rusage OUT [NAME=VALUE...] CMD...
 *
 * Runs CMD (with those variables set, as env(1) would, without env's own start in the
 * figures) and writes "user sys maxrss_kib wall" to OUT: the CPU seconds of CMD and of
 * every descendant it waited for (wait4's rusage, microseconds), the peak RSS of the
 * largest of those processes, and the wall seconds from fork to reap. Started inside
 * the namespace (`ip netns exec NS rusage ...`), so that neither `ip` nor a shell is in
 * the figures: only the command measured. In C, not a script: the child's peak RSS
 * starts from the measuring process's own (the kernel keeps the pre-exec high-water
 * mark), which must stay small. Exits with CMD's status (128 + N for signal N, 127 when
 * it cannot start).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double secs(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: rusage OUT [NAME=VALUE...] CMD...\n");
        return 2;
    }
    int i = 2;
    for (; i < argc && argv[i][0] != '/' && argv[i][0] != '=' && strchr(argv[i], '='); i++)
        if (putenv(argv[i]) != 0) {
            perror("rusage: putenv");
            return 2;
        }
    if (i == argc) {
        fprintf(stderr, "rusage: no command\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("rusage: fork");
        return 2;
    }
    if (pid == 0) {
        execvp(argv[i], argv + i);
        fprintf(stderr, "rusage: cannot run %s: ", argv[i]);
        perror(NULL);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("rusage: wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    FILE *f = fopen(argv[1], "w");
    if (!f || fprintf(f, "%.6f %.6f %ld %.6f\n", secs(ru.ru_utime), secs(ru.ru_stime),
                      ru.ru_maxrss, wall) < 0 || fclose(f) != 0) {
        perror("rusage: write OUT");
        return 2;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
