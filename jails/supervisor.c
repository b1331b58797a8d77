/*
 * xc-supervisor: the per-task process that owns one task for its whole life.
 *
 * Why C: it stays resident once per task, so it must cost little memory (a Python interpreter is
 * about 10 MiB; this is well under 1 MiB). It is compiled on first use by jails/supervisor.py.
 *
 *   xc-supervisor STATE_DIR STDOUT STDERR OOM_FILE exec ARGV...
 *   xc-supervisor STATE_DIR STDOUT STDERR OOM_FILE runc RUNC ROOT BUNDLE NAME
 *   xc-supervisor STATE_DIR STDOUT STDERR OOM_FILE jail JID UID GID GROUPS CWD ARGV...
 *   xc-supervisor --attach JID UID GID GROUPS CWD ARGV...
 *
 * The launched process forks the supervisor proper (its own session, a subreaper) and exits 0 once
 * the task runs (STATE_DIR/task.json written) or 1 if it could not be started (STATE_DIR/start_error
 * written), so its caller gets a synchronous answer and the supervisor outlives the caller.
 * STDOUT/STDERR are opened here, never by the caller: FIFOs are opened O_RDWR so that a late (or
 * absent) reader never blocks the start; regular files are appended to.
 * When the task exits the supervisor writes STATE_DIR/exit.json atomically (tmp, rename):
 * {"exit_code", "signal", "oom_killed", "finished_at"}. A signalled task reports
 * exit_code 128+signal, as Nomad's executor does. OOM_FILE ("-" for none) is the memory cgroup's
 * memory.oom_control (v1) or memory.events (v2); a non-zero "oom_kill" count marks an OOM kill.
 * On FreeBSD OOM_FILE is "rctl:<jail>:<devd socket>": a "matched" notification of the jail's
 * memoryuse:devctl rule, read from devd's seqpacket socket while the task runs, marks an OOM kill.
 * This file is main and the parts every mode shares; runc mode is in sv_linux.c, jail mode and
 * --attach in sv_jail.c, the devd watch in sv_oomwatch.c (sv.h lists them).
 */
#include "sv.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define DRAIN_MS 5000

const char *state_dir;
static volatile sig_atomic_t task_pid = 0;

static void die_errno(const char *what) {
    fprintf(stderr, "xc-supervisor: %s: %s\n", what, strerror(errno));
    _exit(1);
}

void path_in_state(char *buf, size_t n, const char *leaf) {
    if ((size_t)snprintf(buf, n, "%s/%s", state_dir, leaf) >= n) {
        fprintf(stderr, "xc-supervisor: state dir path too long\n");
        _exit(1);
    }
}

/* Write STATE_DIR/leaf atomically: tmp file, rename. No fsync: a task's state never outlives a
 * reboot (the boot id marks every task of an earlier boot dead), and rename is atomic against a
 * crash of any process, which is all the plugin and its successor need. */
int write_atomic(const char *leaf, const char *content) {
    char tmp[4096], dst[4096];
    path_in_state(dst, sizeof dst, leaf);
    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", state_dir, leaf) >= sizeof tmp) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t len = strlen(content), off = 0;
    while (off < len) {
        ssize_t w = write(fd, content + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) return -1;
    if (rename(tmp, dst) != 0) return -1;
    return 0;
}

#if !defined(__linux__) && !defined(__FreeBSD__)
/* Neither Linux (sv_linux.c) nor FreeBSD (sv_jail.c): no start time, no reaper. */
unsigned long long start_time(pid_t pid) {
    (void)pid;
    return 0;
}

void become_subreaper(void) {}
#endif

static int open_log(const char *path) {
    struct stat st;
    int fd;
    if (stat(path, &st) == 0 && S_ISFIFO(st.st_mode))
        /* O_RDWR on a FIFO never blocks waiting for a reader (Linux and FreeBSD). */
        fd = open(path, O_RDWR | O_CLOEXEC);
    else
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    return fd;
}

static void child_stdio(int in, int out, int err) {
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
}

pid_t spawn(char *const argv[], int in, int out, int err, const struct entry *e, int *step) {
    int p[2];
    *step = 0;
    if (pipe2(p, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(p[0]);
        child_stdio(in, out, err);
        int failed[2] = {0, 0};
        if (e != NULL) failed[1] = enter(e);
        if (failed[1] == 0) execvp(argv[0], argv);
        failed[0] = errno;
        ssize_t w = write(p[1], failed, sizeof failed);
        (void)w;
        _exit(127);
    }
    close(p[1]);
    int failed[2] = {0, 0};
    ssize_t r;
    do r = read(p[0], failed, sizeof failed);
    while (r < 0 && errno == EINTR);
    close(p[0]);
    if (r == (ssize_t)sizeof failed) {
        int st;
        waitpid(pid, &st, 0);
        *step = failed[1];
        errno = failed[0];
        return -1;
    }
    return pid;
}

int wait_exact(pid_t pid) {
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, 0);
        if (r == pid) return st;
        if (r < 0 && errno != EINTR) return -1;
    }
}

static void forward(int sig) {
    if (task_pid > 0) kill((pid_t)task_pid, sig);
}

static void json_escape(char *dst, size_t n, const char *src) {
    size_t j = 0;
    for (size_t i = 0; src[i] && j + 7 < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '"' || c == '\\') {
            dst[j++] = '\\';
            dst[j++] = (char)c;
        } else if (c < 0x20) {
            j += (size_t)snprintf(dst + j, n - j, "\\u%04x", c);
        } else {
            dst[j++] = (char)c;
        }
    }
    dst[j] = 0;
}

void start_failed(int ready_fd, const char *what, int err) {
    char msg[1024], esc[2048], body[2304];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
    json_escape(esc, sizeof esc, msg);
    snprintf(body, sizeof body, "{\"error\": \"%s\"}\n", esc);
    write_atomic("start_error", body);
    ssize_t w = write(ready_fd, "1", 1);
    (void)w;
    _exit(1);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--start-time") == 0) {
        /* Identity probe for hosts without /proc (FreeBSD): same units as task.json. */
        unsigned long long t = start_time((pid_t)strtol(argv[2], NULL, 10));
        if (t == 0) return 1;
        printf("%llu\n", t);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "--rctl-oom-match") == 0) {
        /* The devd line matcher on its own, for table tests: JAIL LINE -> "1" or "0". */
        printf("%d\n", rctl_oom_line(argv[3], strlen(argv[3]), argv[2]));
        return 0;
    }
    if (argc >= 8 && strcmp(argv[1], "--attach") == 0)
        return attach_main(argc - 2, argv + 2); /* an exec session: becomes the command */
    if (argc < 7) {
        fprintf(stderr, "usage: xc-supervisor STATE_DIR STDOUT STDERR OOM_FILE exec ARGV... | "
                        "runc RUNC ROOT BUNDLE NAME | jail JID UID GID GROUPS CWD ARGV...\n");
        return 2;
    }
    state_dir = argv[1];
    const char *out_path = argv[2], *err_path = argv[3], *oom_file = argv[4], *mode = argv[5];
    int is_runc = strcmp(mode, "runc") == 0, is_jail = strcmp(mode, "jail") == 0;
    if (!is_runc && !is_jail && strcmp(mode, "exec") != 0) {
        fprintf(stderr, "xc-supervisor: unknown mode %s\n", mode);
        return 2;
    }
    if (is_runc && argc != 10) {
        fprintf(stderr, "xc-supervisor: runc mode takes RUNC ROOT BUNDLE NAME\n");
        return 2;
    }
    struct entry jail_entry;
    if (is_jail && (argc < 12 || parse_entry(argv + 6, &jail_entry) != 0)) {
        fprintf(stderr, "xc-supervisor: jail mode takes JID UID GID GROUPS CWD ARGV...\n");
        return 2;
    }

    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) die_errno("pipe");
    pid_t sup = fork();
    if (sup < 0) die_errno("fork");
    if (sup > 0) {
        /* The launcher: report whether the task started, then leave the supervisor behind. */
        close(ready[1]);
        char c = '1';
        ssize_t r;
        do r = read(ready[0], &c, 1);
        while (r < 0 && errno == EINTR);
        return (r == 1 && c == '0') ? 0 : 1;
    }
    close(ready[0]);
    setsid();
    if (chdir("/") != 0) die_errno("chdir /");
    become_subreaper();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    int fwd[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++) sigaction(fwd[i], &sa, NULL);

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) start_failed(ready[1], "open /dev/null", errno);
    /* Hold nothing of the caller's stdio: a caller reading our stderr must see EOF when the
     * launcher exits. Failures from here on are reported through STATE_DIR files. */
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    int out = open_log(out_path);
    if (out < 0) start_failed(ready[1], out_path, errno);
    int err = open_log(err_path);
    if (err < 0) start_failed(ready[1], err_path, errno);

    pid_t pid;
    int step = 0;
    if (!is_runc) oom_watch_open(oom_file); /* before the task exists: no notification missed */
    if (is_jail) {
        pid = spawn_jailed(argv + 11, &jail_entry, devnull, out, err, ready[1]);
    } else if (!is_runc) {
        pid = spawn(argv + 6, devnull, out, err, NULL, &step);
        if (pid < 0) start_failed(ready[1], argv[6], errno);
    } else {
        pid = run_runc(argv + 6, devnull, out, err, ready[1]);
    }
    task_pid = pid;
    /* FIFO ends stay open until the end: output written while the reader is late or briefly
     * gone stays in the pipe instead of being discarded with the last writer. */
    struct stat st_out, st_err;
    int out_fifo = fstat(out, &st_out) == 0 && S_ISFIFO(st_out.st_mode);
    int err_fifo = fstat(err, &st_err) == 0 && S_ISFIFO(st_err.st_mode);
    if (!out_fifo) close(out);
    if (!err_fifo) close(err);

    char body[512];
    snprintf(body, sizeof body,
             "{\"supervisor_pid\": %d, \"supervisor_start\": %llu, \"pid\": %d, \"pid_start\": %llu}\n",
             (int)getpid(), start_time(getpid()), (int)pid, start_time(pid));
    if (write_atomic("task.json", body) != 0) {
        int e = errno;
        kill(pid, SIGKILL);
        start_failed(ready[1], "write task.json", e);
    }

    close(devnull);

    ssize_t w = write(ready[1], "0", 1);
    (void)w;
    close(ready[1]);

    /* Reap everything reparented to us; the task's own status is the one we record. */
    int status = 0;
    if (oom_watch_active()) {
        status = reap_task_watching(pid);
    } else {
        for (;;) {
            int st;
            pid_t r = waitpid(-1, &st, 0);
            if (r == pid) {
                status = st;
                break;
            }
            if (r < 0 && errno == ECHILD) {
                status = -1;
                break;
            }
        }
    }
    task_pid = 0;
    int code, sig = 0;
    if (status == -1) {
        code = -1;
    } else if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
        code = 128 + sig;
    } else {
        code = WEXITSTATUS(status);
    }
    int oom = oom_kills(oom_file) > 0 || oom_watch_killed();
    struct timeval tv;
    gettimeofday(&tv, NULL);
    snprintf(body, sizeof body,
             "{\"exit_code\": %d, \"signal\": %d, \"oom_killed\": %s, \"finished_at\": %ld.%06ld}\n",
             code, sig, oom ? "true" : "false", (long)tv.tv_sec, (long)tv.tv_usec);
    if (write_atomic("exit.json", body) != 0) die_errno("write exit.json");
    /* Give a late log reader up to DRAIN_MS to take what the task wrote into the FIFOs. */
    signal(SIGTERM, SIG_DFL);
    for (int waited = 0; waited < DRAIN_MS; waited += 20) {
        int pending = 0, n = 0;
        if (out_fifo && ioctl(out, FIONREAD, &n) == 0) pending += n;
        if (err_fifo && ioctl(err, FIONREAD, &n) == 0) pending += n;
        if (pending == 0) break;
        usleep(20 * 1000);
    }
    /* Remaining reparented orphans are reaped by init once we exit. */
    return 0;
}
