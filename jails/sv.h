/*
 * Internal interface between the units of xc-supervisor (see supervisor.c for what it does):
 *   supervisor.c   main: arguments, fork/session, log targets, task.json, reap, exit.json
 *   sv_linux.c     Linux: runc mode, cgroup OOM counter, /proc start time, subreaper
 *   sv_jail.c      jail mode and --attach (FreeBSD, or the fake host's stand-in), FreeBSD
 *                  start time and reaper
 *   sv_oomwatch.c  FreeBSD memory limit: OOM kills learnt from devd's RCTL notifications
 * jails/supervisor.py compiles all of them together into one binary. Every unit includes this
 * header first: it defines _GNU_SOURCE, which must precede every system header.
 */
#ifndef XC_SV_H
#define XC_SV_H

#define _GNU_SOURCE
#include <sys/types.h>
#include <stddef.h>

#define OOM_WATCH_PREFIX "rctl:" /* OOM_FILE naming a jail to watch through devd */

/* supervisor.c: the task's state directory and the shared process helpers. */
extern const char *state_dir;
void path_in_state(char *buf, size_t n, const char *leaf);
int write_atomic(const char *leaf, const char *content);
/* Report a failed start (STATE_DIR/start_error, "1" on ready_fd) and exit. */
void start_failed(int ready_fd, const char *what, int err) __attribute__((noreturn));
struct entry;
/* fork+exec (entering the jail first when e is given); returns the pid, or -1 with errno set and
 * *step the failed step (index in STEPS), reported through a pipe by the child. */
pid_t spawn(char *const argv[], int in, int out, int err, const struct entry *e, int *step);
int wait_exact(pid_t pid);

/* Per OS (sv_linux.c, sv_jail.c): the half of a process's identity that survives pid reuse, and
 * becoming the reaper of the task's orphans. */
unsigned long long start_time(pid_t pid);
void become_subreaper(void);

/* sv_linux.c */
long oom_kills(const char *path);
/* `runc run -d` the container RUNC ROOT BUNDLE NAME (args[0..3]); the container init's pid, or
 * start_failed. */
pid_t run_runc(char *const args[], int in, int out, int err, int ready_fd);

/* sv_jail.c: where a jailed command runs: jail, numeric identity, working directory. */
struct entry {
    int jid;
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int ngroups;
    const char *cwd;
};
extern const char *const STEPS[];
int enter(const struct entry *e);
/* JID UID GID GROUPS CWD; -1 on malformed input. */
int parse_entry(char *const args[], struct entry *e);
/* Start argv in the jail; its pid, or start_failed. */
pid_t spawn_jailed(char *const argv[], const struct entry *e, int in, int out, int err,
                   int ready_fd);
/* --attach JID UID GID GROUPS CWD ARGV... (argv after "--attach"): returns only on failure. */
int attach_main(int argc, char **argv);

/* sv_oomwatch.c */
int rctl_oom_line(const char *msg, size_t len, const char *jail);
void oom_watch_open(const char *spec);
int oom_watch_active(void);
int oom_watch_killed(void);
/* Reap until the task itself exits, reading devd meanwhile; its wait status (-1: no child). */
int reap_task_watching(pid_t pid);

#endif
