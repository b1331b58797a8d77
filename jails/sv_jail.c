/*
 * Jail mode (FreeBSD): the task is the supervisor's child that enters the jail itself:
 * jail_attach(2) to JID, chdir(CWD) inside it, setgroups/setgid/setuid to the numeric ids
 * (GROUPS: comma list or "-"), then execvp with exactly the environment it was given. Not
 * jexec(8): it looks the user up by name in the jail's pwd.db (absent from most OCI images),
 * ignores a group override, applies the jail's login.conf over the task's environment and always
 * starts in "/" (jexec.c). --attach does the same in place for an exec session (its pid becomes
 * the command's). Also FreeBSD's process start time and reaper, used by every mode there.
 */
#include "sv.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __FreeBSD__
#include <sys/param.h> /* before sys/user.h, which needs its definitions */
#include <sys/jail.h>
#include <sys/procctl.h>
#include <sys/sysctl.h>
#include <sys/user.h>
#endif

const char *const STEPS[] = {"exec", "jail_attach", "chdir", "setgroups", "setgid", "setuid"};

#if defined(__FreeBSD__)
static int attach(int jid) { return jail_attach(jid); }

unsigned long long start_time(pid_t pid) {
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, (int)pid};
    struct kinfo_proc kp;
    size_t len = sizeof kp;
    if (sysctl(mib, 4, &kp, &len, NULL, 0) != 0 || len == 0) return 0;
    return (unsigned long long)kp.ki_start.tv_sec * 1000000ULL + (unsigned long long)kp.ki_start.tv_usec;
}

void become_subreaper(void) { procctl(P_PID, getpid(), PROC_REAP_ACQUIRE, NULL); }
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
int enter(const struct entry *e) {
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

int parse_entry(char *const args[], struct entry *e) {
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

pid_t spawn_jailed(char *const argv[], const struct entry *e, int in, int out, int err,
                   int ready_fd) {
    int step = 0;
    pid_t pid = spawn(argv, in, out, err, e, &step);
    if (pid < 0) {
        char what[1200];
        snprintf(what, sizeof what, "%s %s", STEPS[step], step == 0 ? argv[0] : e->cwd);
        start_failed(ready_fd, step == 2 || step == 0 ? what : STEPS[step], errno);
    }
    return pid;
}

int attach_main(int argc, char **argv) {
    struct entry e;
    if (argc < 6 || parse_entry(argv, &e) != 0) {
        fprintf(stderr, "xc-supervisor: --attach takes JID UID GID GROUPS CWD ARGV...\n");
        return 2;
    }
    int step = enter(&e);
    if (step == 0) execvp(argv[5], argv + 5);
    int saved = errno;
    const char *what = step == 0 ? argv[5] : step == 2 ? e.cwd : NULL;
    fprintf(stderr, "xc-supervisor: %s%s%s: %s\n", STEPS[step], what ? " " : "",
            what ? what : "", strerror(saved));
    return step == 0 && saved == ENOENT ? 127 : 126;
}
