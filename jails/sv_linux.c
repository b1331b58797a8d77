/*
 * Linux: runc mode, the memory cgroup's OOM kill counter, and the /proc start time and
 * subreaper every Linux mode uses.
 *
 * In runc mode one `runc run -d` gets the log targets as stdio (never pipes: runc would hang);
 * the container init, reparented to us (the subreaper), is the task. OOM_FILE ("-" for none) is
 * the memory cgroup's memory.oom_control (v1) or memory.events (v2); a non-zero "oom_kill" count
 * marks an OOM kill.
 */
#include "sv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#ifdef __linux__
unsigned long long start_time(pid_t pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    /* comm may contain spaces and parens: fields restart after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p) return 0;
    p += 2; /* field 3 */
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p ? strtoull(p, NULL, 10) : 0;
}

/* Orphans of the task (the container init once `runc run -d` exits) are reparented to us. */
void become_subreaper(void) { prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }
#endif

long oom_kills(const char *path) {
    if (strcmp(path, "-") == 0 || strncmp(path, OOM_WATCH_PREFIX, strlen(OOM_WATCH_PREFIX)) == 0)
        return 0;
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    char line[256];
    long n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "oom_kill ", 9) == 0) n = strtol(line + 9, NULL, 10);
    }
    fclose(f);
    return n;
}

static pid_t read_pid_file(const char *path) {
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1) pid = -1;
    fclose(f);
    return (pid_t)pid;
}

pid_t run_runc(char *const args[], int in, int out, int err, int ready_fd) {
    char pidfile[4096], logfile[4096];
    path_in_state(pidfile, sizeof pidfile, "init.pid");
    path_in_state(logfile, sizeof logfile, "runc.log");
    /* One `runc run -d` (create and start in one process: a start costs one runc exec, not
     * two). The container's init is reparented to us (subreaper) when runc exits, so even an
     * init that is already gone stays a zombie we reap and record. */
    char *run[] = {args[0], "--root", args[1], "--log", logfile, "--log-format", "json",
                   "run", "-d", "--bundle", args[2], "--pid-file", pidfile, args[3], NULL};
    int step = 0;
    pid_t c = spawn(run, in, out, err, NULL, &step);
    if (c < 0) start_failed(ready_fd, args[0], errno);
    int st = wait_exact(c);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        start_failed(ready_fd, "runc run failed (see runc.log)", EINVAL);
    pid_t pid = read_pid_file(pidfile);
    if (pid <= 0) start_failed(ready_fd, "runc run wrote no pid file", ENOENT);
    return pid;
}
