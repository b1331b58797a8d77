/*
 * FreeBSD memory limit: OOM kills learnt from devd's RCTL notifications.
 *
 * The jail's memory limit is an rctl memoryuse:sigkill rule with a memoryuse:devctl twin. The
 * kernel's rctl_enforce() queues, for a devctl rule, the devctl_notify() line
 *   !system=RCTL subsystem=rule type=matched rule=jail:<jail>:memoryuse:devctl=<bytes> pid=<p>
 *   ruid=<uid> jail=<jail>
 * (one line; see jails/devd.py for the Python twin of this matcher and the kernel sources it
 * follows), and devd(8) forwards each line unchanged, one packet per line, to the clients of its
 * seqpacket socket. The watch connects before the task starts, so no line of its life is missed.
 * Portable C: the Linux build runs it against the tests' fake devd socket.
 */
#include "sv.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OOM_GRACE_MS 1000
#define DEVD_MAXBUF 8192

static struct {
    int fd;
    char jail[64];
    int killed;
} oom_watch = {-1, "", 0};

static void on_sigchld(int sig) { (void)sig; }

int oom_watch_active(void) { return oom_watch.fd >= 0; }

int oom_watch_killed(void) { return oom_watch.killed; }

/* 1 when one devd packet says the memoryuse devctl rule of `jail` matched a process of it. */
int rctl_oom_line(const char *msg, size_t len, const char *jail) {
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
void oom_watch_open(const char *spec) {
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

/* A task ended by SIGKILL gets a short grace for the notification, which devd forwards after
 * the kernel queued it next to the signal. */
int reap_task_watching(pid_t pid) {
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
