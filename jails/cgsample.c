/*
 * Batch reader of Linux cgroup sample files, for jails/cgbatch.py (loaded with ctypes).
 *
 * A TaskStats tick samples every running task at once; in Python each task's few preads and
 * the parsing of their numbers cost more than the reads themselves. xc_cg_sample reads the
 * files of n cgroups (descriptors kept open by jails.cgroups.OpenFiles, -1 for a file that
 * does not exist) and parses exactly what CgroupPaths._sample_v1/_sample_v2 parse, with the
 * same rules: a "key value" line counts only when the value is all ASCII digits, a one-number
 * file is what Python's int() accepts of it (whitespace around an optionally signed number),
 * anything else reads as the Python default (numbers as the kernel writes them: no "_").
 *
 * Output per cgroup, XC_CG_SLOTS numbers: status (0, or 1 when a read failed: the caller
 * samples that cgroup again the slow way, which reopens its files), six values, and the
 * CLOCK_REALTIME nanoseconds taken before its reads (Python's time.time_ns()):
 *   v1: user ticks, system ticks, cpuacct.usage, total_rss (else rss), memory.usage_in_bytes,
 *       memory.max_usage_in_bytes
 *   v2: user_usec, system_usec, usage_usec, anon, memory.current, memory.peak
 */

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XC_CG_SLOTS 8
#define STAT_SIZE 16384 /* as jails.cgroups.OpenFiles: a stat file may be long */
#define NUM_SIZE 64     /* the one-number files */

/* The whole file at fd (up to size bytes); 0 bytes for fd -1; -1 when the read failed. */
static long read_fd(int fd, char *buf, long size)
{
    if (fd < 0)
        return 0;
    ssize_t got;
    do {
        got = pread(fd, buf, (size_t)size, 0);
    } while (got < 0 && errno == EINTR);
    return got < 0 ? -1 : (long)got;
}

/* Python's bytes.isdigit() and int() of such bytes (non-empty, ASCII digits). */
static int digits(const char *p, const char *end, long long *out)
{
    if (p == end)
        return 0;
    long long v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 1;
}

/* jails.cgroups._field: the value of the first "key value" line (the line after "key " up to
 * the newline must be all digits, else dflt). */
static long long field(const char *buf, long len, const char *key, long long dflt)
{
    size_t kl = strlen(key);
    const char *end = buf + len;
    for (const char *p = buf; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) >= kl + 1 && memcmp(p, key, kl) == 0 && p[kl] == ' ') {
            long long v;
            return digits(p + kl + 1, le, &v) ? v : dflt;
        }
        p = le + 1;
    }
    return dflt;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* jails.cgroups._int_of(...) or 0: int() of the whole content, 0 when it is not a number. */
static long long number(const char *buf, long len)
{
    const char *p = buf, *end = buf + len;
    while (p < end && is_space(*p))
        p++;
    while (end > p && is_space(end[-1]))
        end--;
    int neg = 0;
    if (p < end && (*p == '+' || *p == '-')) {
        neg = *p == '-';
        p++;
    }
    long long v;
    if (!digits(p, end, &v))
        return 0;
    return neg ? -v : v;
}

static int one_number(int fd, long long *out)
{
    char num_buf[NUM_SIZE];
    long got = read_fd(fd, num_buf, NUM_SIZE);
    if (got < 0)
        return -1;
    *out = number(num_buf, got);
    return 0;
}

/* version 1: 5 descriptors per cgroup (cpuacct.stat, cpuacct.usage, memory.stat,
 * memory.usage_in_bytes, memory.max_usage_in_bytes); version 2: 4 (cpu.stat, memory.stat,
 * memory.current, memory.peak). Returns 0, or -1 for an unknown version. */
int xc_cg_sample(int version, int n, const int *fds, long long *out)
{
    if (version != 1 && version != 2)
        return -1;
    int per = version == 1 ? 5 : 4;
    char stat_buf[2][STAT_SIZE]; /* on the stack: callers in several threads share nothing */
    for (int i = 0; i < n; i++) {
        const int *f = fds + (long)per * i;
        long long *o = out + (long)XC_CG_SLOTS * i;
        memset(o, 0, sizeof(long long) * XC_CG_SLOTS);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        o[7] = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
        long cpu = read_fd(f[0], stat_buf[0], STAT_SIZE);
        long mem = read_fd(f[version == 1 ? 2 : 1], stat_buf[1], STAT_SIZE);
        if (cpu < 0 || mem < 0) {
            o[0] = 1;
            continue;
        }
        int bad = 0;
        if (version == 1) {
            o[1] = field(stat_buf[0], cpu, "user", 0);
            o[2] = field(stat_buf[0], cpu, "system", 0);
            bad |= one_number(f[1], &o[3]);
            long long rss = field(stat_buf[1], mem, "total_rss", -1);
            o[4] = rss >= 0 ? rss : field(stat_buf[1], mem, "rss", 0);
            bad |= one_number(f[3], &o[5]);
            bad |= one_number(f[4], &o[6]);
        } else {
            o[1] = field(stat_buf[0], cpu, "user_usec", 0);
            o[2] = field(stat_buf[0], cpu, "system_usec", 0);
            o[3] = field(stat_buf[0], cpu, "usage_usec", 0);
            o[4] = field(stat_buf[1], mem, "anon", 0);
            bad |= one_number(f[2], &o[5]);
            bad |= one_number(f[3], &o[6]);
        }
        o[0] = bad ? 1 : 0;
    }
    return 0;
}
