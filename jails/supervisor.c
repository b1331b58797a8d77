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
 * On FreeBSD OOM_FILE is "rctl:<jail>:<devd socket>": the jail's memory limit is an rctl
 * memoryuse:sigkill rule with a memoryuse:devctl twin, and a "matched" notification of the twin,
 * read from devd's seqpacket socket while the task runs, marks an OOM kill (see oom_watch_*).
 * In runc mode one `runc run -d` gets the log targets as stdio (never pipes: runc would hang);
 * the container init, reparented to us (the subreaper), is the task.
 * In jail mode (FreeBSD) the task is our child that enters the jail itself: jail_attach(2) to JID,
 * chdir(CWD) inside it, setgroups/setgid/setuid to the numeric ids (GROUPS: comma list or "-"),
 * then execvp with exactly the environment we were given. Not jexec(8): it looks the user up
 * by name in the jail's pwd.db (absent from most OCI images), ignores a group override, applies
 * the jail's login.conf over the task's environment and always starts in "/" (jexec.c). --attach
 * does the same in place for an exec session (its pid becomes the command's).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <grp.h>
#include <limits.h>
#ifdef __FreeBSD__
#include <sys/param.h> /* before sys/user.h, which needs its definitions */
#include <sys/jail.h>
#include <sys/procctl.h>
#include <sys/sysctl.h>
#include <sys/user.h>
#endif

#define DRAIN_MS 5000
#define OOM_WATCH_PREFIX "rctl:" /* OOM_FILE naming a jail to watch through devd */

static const char *state_dir;
static volatile sig_atomic_t task_pid = 0;

static void die_errno(const char *what) {
    fprintf(stderr, "xc-supervisor: %s: %s\n", what, strerror(errno));
    _exit(1);
}

static void path_in_state(char *buf, size_t n, const char *leaf) {
    if ((size_t)snprintf(buf, n, "%s/%s", state_dir, leaf) >= n) {
        fprintf(stderr, "xc-supervisor: state dir path too long\n");
        _exit(1);
    }
}

/* Write STATE_DIR/leaf atomically: tmp file, rename. No fsync: a task's state never outlives a
 * reboot (the boot id marks every task of an earlier boot dead), and rename is atomic against a
 * crash of any process, which is all the plugin and its successor need. */
static int write_atomic(const char *leaf, const char *content) {
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

/* Process start time, the half of the identity that survives pid reuse. */
static unsigned long long start_time(pid_t pid) {
#ifdef __linux__
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
#elif defined(__FreeBSD__)
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, (int)pid};
    struct kinfo_proc kp;
    size_t len = sizeof kp;
    if (sysctl(mib, 4, &kp, &len, NULL, 0) != 0 || len == 0) return 0;
    return (unsigned long long)kp.ki_start.tv_sec * 1000000ULL + (unsigned long long)kp.ki_start.tv_usec;
#else
    (void)pid;
    return 0;
#endif
}

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

/* Where a jailed command runs: jail, numeric identity, working directory. */
struct entry {
    int jid;
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int ngroups;
    const char *cwd;
};

static const char *const STEPS[] = {"exec", "jail_attach", "chdir", "setgroups", "setgid", "setuid"};

#if defined(__FreeBSD__)
static int attach(int jid) { return jail_attach(jid); }
#elif defined(XC_FAKE_JAILS)
/* Test builds only (tests/fixtures/fakefreebsd.py): the fake host keeps each jail's root at
 * XC_FAKE_JAILS/<jid>/root and its host.hostname in XC_FAKE_JAILS/<jid>/hostname. Like
 * jail_attach(2) this changes the root directory (not the working directory) and the hostname
 * the process sees (a UTS namespace of its own). */
#include <sched.h>
static int attach(int jid) {
    char path[4096], host[256];
    if ((size_t)snprintf(path, sizeof path, "%s/%d/hostname", XC_FAKE_JAILS, jid) >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, host, sizeof host);
    close(fd);
    if (n < 0) return -1;
    if (unshare(CLONE_NEWUTS) != 0 || sethostname(host, (size_t)n) != 0) return -1;
    snprintf(path, sizeof path, "%s/%d/root", XC_FAKE_JAILS, jid);
    return chroot(path);
}
#else
static int attach(int jid) {
    (void)jid;
    errno = ENOSYS;
    return -1;
}
#endif

/* Enter the jail as e says; returns 0, or the failed step's index in STEPS with errno set. */
static int enter(const struct entry *e) {
    if (attach(e->jid) != 0) return 1;
    if (chdir(e->cwd) != 0) return 2;
    if (setgroups(e->ngroups, e->groups) != 0) return 3;
    if (setgid(e->gid) != 0) return 4;
    if (setuid(e->uid) != 0) return 5;
    return 0;
}

static int parse_id(const char *s, unsigned long *out) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != 0 || v > 0x7fffffffUL) return -1;
    *out = v;
    return 0;
}

/* JID UID GID GROUPS CWD; -1 on malformed input. */
static int parse_entry(char *const args[], struct entry *e) {
    unsigned long v;
    memset(e, 0, sizeof *e);
    if (parse_id(args[0], &v) != 0) return -1;
    e->jid = (int)v;
    if (parse_id(args[1], &v) != 0) return -1;
    e->uid = (uid_t)v;
    if (parse_id(args[2], &v) != 0) return -1;
    e->gid = (gid_t)v;
#ifdef __FreeBSD__
    /* Before FreeBSD 15, setgroups(2) takes the effective gid as the first entry. */
    e->groups[e->ngroups++] = e->gid;
#endif
    if (strcmp(args[3], "-") != 0) {
        char buf[1024];
        if ((size_t)snprintf(buf, sizeof buf, "%s", args[3]) >= sizeof buf) return -1;
        for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            if (e->ngroups >= (int)(sizeof e->groups / sizeof e->groups[0])) return -1;
            if (parse_id(tok, &v) != 0) return -1;
            e->groups[e->ngroups++] = (gid_t)v;
        }
    }
    e->cwd = args[4];
    return e->cwd[0] == '/' ? 0 : -1;
}

static void child_stdio(int in, int out, int err) {
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
}

/* fork+exec (entering the jail first when e is given); returns the pid, or -1 with errno set and
 * *step the failed step (index in STEPS), reported through a pipe by the child. */
static pid_t spawn(char *const argv[], int in, int out, int err, const struct entry *e, int *step) {
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

static int wait_exact(pid_t pid) {
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

static long oom_kills(const char *path) {
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

/* ---- FreeBSD memory limit: OOM kills learnt from devd's RCTL notifications -----------------
 * The kernel's rctl_enforce() queues, for a devctl rule, the devctl_notify() line
 *   !system=RCTL subsystem=rule type=matched rule=jail:<jail>:memoryuse:devctl=<bytes> pid=<p>
 *   ruid=<uid> jail=<jail>
 * (one line; see jails/devd.py for the Python twin of this matcher and the kernel sources it
 * follows), and devd(8) forwards each line unchanged, one packet per line, to the clients of its
 * seqpacket socket. The watch connects before the task starts, so no line of its life is missed. */
#define OOM_GRACE_MS 1000
#define DEVD_MAXBUF 8192

static struct {
    int fd;
    char jail[64];
    int killed;
} oom_watch = {-1, "", 0};

static void on_sigchld(int sig) { (void)sig; }

/* 1 when one devd packet says the memoryuse devctl rule of `jail` matched a process of it. */
static int rctl_oom_line(const char *msg, size_t len, const char *jail) {
    static const char head[] = "!system=RCTL subsystem=rule type=matched ";
    char buf[1024], want[128];
    if (len >= sizeof buf) return 0;
    memcpy(buf, msg, len);
    buf[len] = 0;
    while (len > 0 && buf[len - 1] == '\n') buf[--len] = 0;
    if (strncmp(buf, head, sizeof head - 1) != 0 || strchr(buf, '\n') != NULL) return 0;
    if ((size_t)snprintf(want, sizeof want, "jail:%s:memoryuse:devctl=", jail) >= sizeof want)
        return 0;
    int rule_ok = 0, jail_ok = 0, rules = 0, jails = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf + sizeof head - 1, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (strncmp(tok, "rule=", 5) == 0) {
            const char *amount = tok + 5 + strlen(want);
            rules++;
            rule_ok = strncmp(tok + 5, want, strlen(want)) == 0 && *amount != 0 &&
                      strspn(amount, "0123456789") == strlen(amount);
        } else if (strncmp(tok, "jail=", 5) == 0) {
            jails++;
            jail_ok = strcmp(tok + 5, jail) == 0;
        }
    }
    /* A key given twice is not a line the kernel wrote (a jail name with spaces could try). */
    return rules == 1 && jails == 1 && rule_ok && jail_ok;
}

/* Connect to devd for "rctl:<jail>:<socket>". Without devd the limit still kills; the kill is
 * then reported as a plain SIGKILL, and the plugin's fingerprint says why (driver.xc.devd). */
static void oom_watch_open(const char *spec) {
    if (strncmp(spec, OOM_WATCH_PREFIX, strlen(OOM_WATCH_PREFIX)) != 0) return;
    const char *jail = spec + strlen(OOM_WATCH_PREFIX), *colon = strchr(jail, ':');
    if (!colon || (size_t)(colon - jail) >= sizeof oom_watch.jail) return;
    memcpy(oom_watch.jail, jail, (size_t)(colon - jail));
    oom_watch.jail[colon - jail] = 0;
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(colon + 1) >= sizeof sun.sun_path) return;
    strcpy(sun.sun_path, colon + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        close(fd);
        return;
    }
    oom_watch.fd = fd;
    /* SIGCHLD stays blocked except inside ppoll, so a task exit always interrupts the wait. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
}

/* Read what devd sent within timeout_ms (-1: until a signal); 0 once devd hung up. */
static int oom_watch_poll(int timeout_ms) {
    struct pollfd pfd = {oom_watch.fd, POLLIN, 0};
    sigset_t open_mask;
    sigprocmask(SIG_SETMASK, NULL, &open_mask);
    sigdelset(&open_mask, SIGCHLD);
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    int n = ppoll(&pfd, 1, timeout_ms < 0 ? NULL : &ts, &open_mask);
    if (n <= 0) return 1;
    char msg[DEVD_MAXBUF];
    for (;;) {
        ssize_t r = recv(oom_watch.fd, msg, sizeof msg, MSG_DONTWAIT);
        if (r > 0) {
            if (rctl_oom_line(msg, (size_t)r, oom_watch.jail)) oom_watch.killed = 1;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 1;
        close(oom_watch.fd); /* devd went away (restart): the rest of this life is unwatched */
        oom_watch.fd = -1;
        return 0;
    }
}

/* Reap until the task itself exits, reading devd meanwhile; its wait status (-1: no child). A
 * task ended by SIGKILL gets a short grace for the notification, which devd forwards after the
 * kernel queued it next to the signal. */
static int reap_task_watching(pid_t pid) {
    sigset_t open_mask;
    sigprocmask(SIG_SETMASK, NULL, &open_mask);
    sigdelset(&open_mask, SIGCHLD);
    int status, st;
    for (;;) {
        pid_t r = waitpid(-1, &st, WNOHANG);
        if (r == pid) {
            status = st;
            break;
        }
        if (r > 0) continue;
        if (r < 0 && errno == ECHILD) return -1;
        if (oom_watch.fd >= 0)
            oom_watch_poll(-1);
        else
            sigsuspend(&open_mask);
    }
    for (int waited = 0; oom_watch.fd >= 0 && !oom_watch.killed && WIFSIGNALED(status) &&
                         WTERMSIG(status) == SIGKILL && waited < OOM_GRACE_MS;
         waited += 50)
        oom_watch_poll(50);
    if (oom_watch.fd >= 0) oom_watch_poll(0);
    return status;
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

static void start_failed(int ready_fd, const char *what, int err) {
    char msg[1024], esc[2048], body[2304];
    snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
    json_escape(esc, sizeof esc, msg);
    snprintf(body, sizeof body, "{\"error\": \"%s\"}\n", esc);
    write_atomic("start_error", body);
    ssize_t w = write(ready_fd, "1", 1);
    (void)w;
    _exit(1);
}

static pid_t read_pid_file(const char *path) {
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1) pid = -1;
    fclose(f);
    return (pid_t)pid;
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
    if (argc >= 8 && strcmp(argv[1], "--attach") == 0) {
        /* An exec session: enter the jail and become the command. */
        struct entry e;
        if (parse_entry(argv + 2, &e) != 0) {
            fprintf(stderr, "xc-supervisor: --attach takes JID UID GID GROUPS CWD ARGV...\n");
            return 2;
        }
        int step = enter(&e);
        if (step == 0) execvp(argv[7], argv + 7);
        int saved = errno;
        const char *what = step == 0 ? argv[7] : step == 2 ? e.cwd : NULL;
        fprintf(stderr, "xc-supervisor: %s%s%s: %s\n", STEPS[step], what ? " " : "",
                what ? what : "", strerror(saved));
        return step == 0 && saved == ENOENT ? 127 : 126;
    }
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
#ifdef __linux__
    /* Orphans of the task (the container init once `runc run -d` exits) are reparented to us. */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
#elif defined(__FreeBSD__)
    procctl(P_PID, getpid(), PROC_REAP_ACQUIRE, NULL);
#endif
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
        pid = spawn(argv + 11, devnull, out, err, &jail_entry, &step);
        if (pid < 0) {
            char what[1200];
            snprintf(what, sizeof what, "%s %s", STEPS[step], step == 0 ? argv[11] : jail_entry.cwd);
            start_failed(ready[1], step == 2 || step == 0 ? what : STEPS[step], errno);
        }
    } else if (!is_runc) {
        pid = spawn(argv + 6, devnull, out, err, NULL, &step);
        if (pid < 0) start_failed(ready[1], argv[6], errno);
    } else {
        char pidfile[4096], logfile[4096];
        path_in_state(pidfile, sizeof pidfile, "init.pid");
        path_in_state(logfile, sizeof logfile, "runc.log");
        /* One `runc run -d` (create and start in one process: a start costs one runc exec,
         * not two). The container's init is reparented to us (subreaper) when runc exits, so
         * even an init that is already gone stays a zombie we reap and record below. */
        char *run[] = {argv[6], "--root", argv[7], "--log", logfile, "--log-format", "json",
                       "run", "-d", "--bundle", argv[8], "--pid-file", pidfile, argv[9], NULL};
        pid_t c = spawn(run, devnull, out, err, NULL, &step);
        if (c < 0) start_failed(ready[1], argv[6], errno);
        int st = wait_exact(c);
        if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            start_failed(ready[1], "runc run failed (see runc.log)", EINVAL);
        pid = read_pid_file(pidfile);
        if (pid <= 0) start_failed(ready[1], "runc run wrote no pid file", ENOENT);
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
    if (oom_watch.fd >= 0) {
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
    int oom = oom_kills(oom_file) > 0 || oom_watch.killed;
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
