/*
 * nfsbench: NFSv3 workloads through libnfs's synchronous API, one TCP connection, one thread.
 *
 *   nfsbench files URL_OF_DIR N SIZE [--no-commit]
 *       in a fresh subdirectory of URL_OF_DIR: create+write SIZE bytes+COMMIT+close N files,
 *       list the directory (READDIRPLUS, opendir/readdir), stat every file, open+read+verify
 *       every file, unlink every file; then rmdir the subdirectory.
 *       --no-commit: close without COMMIT (the Linux client COMMITs unstable writes at close,
 *       so the default is what `cp` onto a kernel NFS mount does).
 *   nfsbench put LOCAL_FILE URL_OF_FILE [--bs BYTES] [--no-commit]
 *       copy a local file in: WRITE requests of BS bytes (default 1 MiB, as nfs-cp), then
 *       COMMIT, close; the COMMIT is timed (durable data, like fio --end_fsync=1).
 *   nfsbench get URL_OF_FILE LOCAL_FILE [--bs BYTES] [--expect-hash HEX]
 *       copy a file out: READ requests of BS bytes written to LOCAL_FILE; the content hash is
 *       computed on the fly and compared with HEX (as printed by `nfsbench hash`).
 *   nfsbench hash LOCAL_FILE
 *       print the hash of a local file (the same 64-bit hash as put/get).
 *   nfsbench rm URL_OF_FILE
 *       remove a file.
 *
 * Each phase prints one JSON line: {"phase", "ops", "bytes", "seconds", "ops_per_s", "mib_per_s",
 * "client_cpu_s", "host_cpu_s"}; host_cpu_s is the busy time of all cores (from /proc/stat)
 * during the phase, so host_cpu_s - client_cpu_s is roughly what the server spent on an idle
 * machine; with --server-pid PID (any mode) also "server_cpu_s", the CPU time of that process.
 * Any failure prints "nfsbench: ..." with libnfs's error and exits with 1.
 *
 * URL options are libnfs's: nfs://HOST/PATH?nfsport=N&mountport=M&version=3&uid=U&gid=G.
 * The longest prefix of PATH that the server lets us MOUNT is mounted; the rest is walked
 * by LOOKUP (servers differ in whether they allow mounting a subdirectory of an export).
 *
 * Build: gcc -O2 -o nfsbench nfsbench.c -lnfs   (Debian: libnfs-dev)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

static struct nfs_context *nfs;
static char mounted[1024];  /* the export path that was MOUNTed */

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("nfsbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static const char *nerr(void) { return nfs ? nfs_get_error(nfs) : "?"; }

/* ---- timing and CPU ---- */

struct mark { double t, client, host, server; };

static int server_pid;  /* --server-pid: a local server process whose CPU time is reported */

static double server_cpu(void)
{
    if (!server_pid) return 0;
    char p[64], buf[2048];
    snprintf(p, sizeof p, "/proc/%d/stat", server_pid);
    FILE *f = fopen(p, "r");
    if (!f) die("--server-pid %d: cannot read %s", server_pid, p);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ... utime(14) stime(15) */
    if (!q || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        die("--server-pid %d: cannot parse %s", server_pid, p);
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double client_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static double host_cpu(void)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8) return 0;
    /* user nice system idle iowait irq softirq steal: busy = all but idle and iowait */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (double)busy / sysconf(_SC_CLK_TCK);
}

static struct mark start_mark(void)
{
    struct mark m = {now(), client_cpu(), host_cpu(), server_cpu()};
    return m;
}

static void report(const char *phase, struct mark m, uint64_t ops, uint64_t bytes, const char *extra)
{
    double t = now() - m.t;
    double c = client_cpu() - m.client, h = host_cpu() - m.host;
    char srv[64] = "";
    if (server_pid) snprintf(srv, sizeof srv, ", \"server_cpu_s\": %.3f", server_cpu() - m.server);
    printf("{\"phase\": \"%s\", \"ops\": %" PRIu64 ", \"bytes\": %" PRIu64
           ", \"seconds\": %.6f, \"ops_per_s\": %.1f, \"mib_per_s\": %.2f"
           ", \"client_cpu_s\": %.3f, \"host_cpu_s\": %.3f%s%s%s}\n",
           phase, ops, bytes, t, t > 0 ? ops / t : 0.0, t > 0 ? bytes / t / 1048576.0 : 0.0, c, h,
           srv, extra ? ", " : "", extra ? extra : "");
    fflush(stdout);
}

/* ---- content ---- */

/* Deterministic content of file `id` at byte offset `off` (8-byte words). */
static void fill(uint8_t *buf, size_t len, uint64_t id, uint64_t off)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t w = (off + i) >> 3;
        uint64_t x = (w + 1) * 0x9E3779B97F4A7C15ULL ^ (id + 1) * 0xC2B2AE3D27D4EB4FULL;
        x ^= x >> 29;
        buf[i] = (uint8_t)(x >> (8 * ((off + i) & 7)));
    }
}

/* 64-bit hash over a byte stream, streamable in any chunking. */
struct hash { uint64_t h, n; };
static void hash_update(struct hash *s, const uint8_t *p, size_t len)
{
    uint64_t h = s->h;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    s->h = h;
    s->n += len;
}
/* FNV-1a byte-wise is ~1 GB/s: too slow to hide in a copy timed at several hundred MiB/s, so
 * hash 8-byte words when aligned in the stream (every chunk but the last is a multiple of 8). */
static void hash_fast(struct hash *s, const uint8_t *p, size_t len)
{
    if ((s->n & 7) == 0) {
        uint64_t h = s->h;
        size_t words = len / 8;
        for (size_t i = 0; i < words; i++) {
            uint64_t w;
            memcpy(&w, p + 8 * i, 8);
            h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
            h ^= h >> 32;
        }
        s->h = h;
        s->n += words * 8;
        p += words * 8;
        len -= words * 8;
    }
    hash_update(s, p, len);
}
static struct hash hash_init(void) { struct hash s = {0xCBF29CE484222325ULL, 0}; return s; }

/* ---- connection ---- */

/* Mount the longest mountable prefix of the URL's path; *rel gets the remaining path ("" or
 * "/a/b"), relative to the mount. Options in the URL (ports, uid, gid) are applied. */
static void connect_url(const char *url, int want_file, char **rel, char **file)
{
    struct nfs_context *probe = nfs_init_context();
    if (!probe) die("nfs_init_context failed");
    struct nfs_url *u = want_file ? nfs_parse_url_full(probe, url) : nfs_parse_url_dir(probe, url);
    if (!u) die("bad URL %s: %s", url, nfs_get_error(probe));
    char *server = strdup(u->server);
    char *path = strdup(u->path && *u->path ? u->path : "/");
    *file = want_file ? strdup(u->file) : NULL;
    nfs_destroy_url(u);
    nfs_destroy_context(probe);

    size_t plen = strlen(path);
    while (plen > 1 && path[plen - 1] == '/') path[--plen] = 0;
    char *mnt = strdup(path);
    char *lasterr = NULL;
    for (;;) {
        nfs = nfs_init_context();
        if (!nfs) die("nfs_init_context failed");
        /* re-parse to apply the URL options to this context */
        struct nfs_url *u2 = want_file ? nfs_parse_url_full(nfs, url) : nfs_parse_url_dir(nfs, url);
        if (!u2) die("bad URL %s: %s", url, nfs_get_error(nfs));
        nfs_destroy_url(u2);
        nfs_set_dircache(nfs, 0);   /* every listing goes to the server */
        if (nfs_mount(nfs, server, mnt) == 0) break;
        if (!lasterr) lasterr = strdup(nfs_get_error(nfs));
        /* only a refusal by the MOUNT service (MNT3ERR_*) is worth retrying on a parent */
        int refused = strstr(nfs_get_error(nfs), "MNT3ERR") != NULL;
        nfs_destroy_context(nfs);
        nfs = NULL;
        char *slash = strrchr(mnt, '/');
        if (!refused || !slash || strcmp(mnt, "/") == 0)
            die("cannot mount %s:%s (%s)", server, path, lasterr);
        if (slash == mnt) mnt[1] = 0; else *slash = 0;
    }
    free(lasterr);
    snprintf(mounted, sizeof mounted, "%s", mnt);
    size_t mlen = strcmp(mnt, "/") == 0 ? 0 : strlen(mnt);
    *rel = strdup(path + mlen);
    fprintf(stderr, "nfsbench: mounted %s:%s, working in %s%s (rtmax %" PRIu64 ", wtmax %" PRIu64 ")\n",
            server, mnt, **rel ? *rel : (want_file ? "" : "/"), want_file ? *file : "",
            nfs_get_readmax(nfs), nfs_get_writemax(nfs));
    free(server);
    free(path);
    free(mnt);
}

static void disconnect(void)
{
    nfs_umount(nfs);
    nfs_destroy_context(nfs);
    nfs = NULL;
}

static void write_all(struct nfsfh *fh, const uint8_t *buf, uint64_t len, const char *what)
{
    uint64_t done = 0;
    while (done < len) {
        int n = nfs_write(nfs, fh, len - done, buf + done);
        if (n < 0) die("write %s: %s", what, nerr());
        if (n == 0) die("write %s: wrote 0 bytes", what);
        done += n;
    }
}

/* ---- files ---- */

static int cmd_files(const char *url, uint64_t n, uint64_t size, int commit)
{
    char *rel, *file;
    connect_url(url, 0, &rel, &file);
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/nfsbench-%d-%ld", rel, (int)getpid(), (long)time(NULL));
    if (nfs_mkdir(nfs, dir) != 0) die("mkdir %s: %s", dir, nerr());

    uint8_t *data = malloc(size ? size : 1), *got = malloc(size + 1);
    if (!data || !got) die("out of memory");
    /* the number of LOOKUPs per path operation depends on the depth below the mount */
    int depth = 0;
    for (const char *c = dir; *c; c++) depth += *c == '/';
    char extra[1500];
    snprintf(extra, sizeof extra,
             "\"file_size\": %" PRIu64 ", \"commit\": %s, \"mounted\": \"%s\", \"dir_depth\": %d",
             size, commit ? "true" : "false", mounted, depth);

    /* create + write + (commit) + close */
    struct mark m = start_mark();
    for (uint64_t i = 0; i < n; i++) {
        struct nfsfh *fh;
        snprintf(path, sizeof path, "%s/f%07" PRIu64, dir, i);
        fill(data, size, i, 0);
        if (nfs_create(nfs, path, O_WRONLY | O_CREAT | O_EXCL, 0644, &fh) != 0)
            die("create %s: %s", path, nerr());
        write_all(fh, data, size, path);
        if (commit && size && nfs_fsync(nfs, fh) != 0) die("commit %s: %s", path, nerr());
        if (nfs_close(nfs, fh) != 0) die("close %s: %s", path, nerr());
    }
    report("create", m, n, n * size, extra);

    /* list: READDIRPLUS via opendir/readdir; check names and sizes */
    m = start_mark();
    struct nfsdir *dh;
    if (nfs_opendir(nfs, dir, &dh) != 0) die("opendir %s: %s", dir, nerr());
    uint64_t seen = 0;
    struct nfsdirent *e;
    while ((e = nfs_readdir(nfs, dh)) != NULL) {
        if (!strcmp(e->name, ".") || !strcmp(e->name, "..")) continue;
        if (e->name[0] != 'f') die("list %s: unexpected entry %s", dir, e->name);
        if (e->size != size)
            die("list %s: %s has size %" PRIu64 ", expected %" PRIu64, dir, e->name, e->size, size);
        seen++;
    }
    nfs_closedir(nfs, dh);
    if (seen != n) die("list %s: %" PRIu64 " entries, expected %" PRIu64, dir, seen, n);
    report("list", m, n, 0, extra);

    /* stat every file by path */
    m = start_mark();
    for (uint64_t i = 0; i < n; i++) {
        struct nfs_stat_64 st;
        snprintf(path, sizeof path, "%s/f%07" PRIu64, dir, i);
        if (nfs_stat64(nfs, path, &st) != 0) die("stat %s: %s", path, nerr());
        if (st.nfs_size != size) die("stat %s: size %" PRIu64 ", expected %" PRIu64, path,
                                     (uint64_t)st.nfs_size, size);
    }
    report("stat", m, n, 0, extra);

    /* open + read + verify + close */
    m = start_mark();
    for (uint64_t i = 0; i < n; i++) {
        struct nfsfh *fh;
        snprintf(path, sizeof path, "%s/f%07" PRIu64, dir, i);
        if (nfs_open(nfs, path, O_RDONLY, &fh) != 0) die("open %s: %s", path, nerr());
        uint64_t done = 0;
        for (;;) {
            int r = nfs_read(nfs, fh, size + 1 - done, got + done);
            if (r < 0) die("read %s: %s", path, nerr());
            if (r == 0) break;
            done += r;
            if (done > size) die("read %s: longer than %" PRIu64 " bytes", path, size);
        }
        if (done != size) die("read %s: %" PRIu64 " bytes, expected %" PRIu64, path, done, size);
        fill(data, size, i, 0);
        if (memcmp(data, got, size) != 0) die("read %s: content differs from what was written", path);
        if (nfs_close(nfs, fh) != 0) die("close %s: %s", path, nerr());
    }
    report("read", m, n, n * size, extra);

    /* unlink */
    m = start_mark();
    for (uint64_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/f%07" PRIu64, dir, i);
        if (nfs_unlink(nfs, path) != 0) die("unlink %s: %s", path, nerr());
    }
    report("unlink", m, n, 0, extra);

    if (nfs_rmdir(nfs, dir) != 0) die("rmdir %s: %s", dir, nerr());
    disconnect();
    return 0;
}

/* ---- big file ---- */

static int cmd_put(const char *local, const char *url, uint64_t bs, int commit)
{
    char *rel, *file;
    connect_url(url, 1, &rel, &file);
    char path[4200];
    snprintf(path, sizeof path, "%s%s", rel, file);
    int fd = open(local, O_RDONLY);
    if (fd < 0) die("open %s: %s", local, strerror(errno));
    uint8_t *buf = malloc(bs);
    if (!buf) die("out of memory");
    struct hash h = hash_init();

    struct mark m = start_mark();
    struct nfsfh *fh;
    if (nfs_create(nfs, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &fh) != 0)
        die("create %s: %s", path, nerr());
    uint64_t total = 0, ops = 0;
    for (;;) {
        ssize_t r = read(fd, buf, bs);
        if (r < 0) die("read %s: %s", local, strerror(errno));
        if (r == 0) break;
        hash_fast(&h, buf, r);
        write_all(fh, buf, r, path);
        total += r;
        ops++;
    }
    if (commit && nfs_fsync(nfs, fh) != 0) die("commit %s: %s", path, nerr());
    if (nfs_close(nfs, fh) != 0) die("close %s: %s", path, nerr());
    char extra[160];
    snprintf(extra, sizeof extra, "\"bs\": %" PRIu64 ", \"commit\": %s, \"hash\": \"%016" PRIx64 "\"",
             bs, commit ? "true" : "false", h.h);
    report("copy_in", m, ops, total, extra);
    close(fd);
    disconnect();
    return 0;
}

static int cmd_get(const char *url, const char *local, uint64_t bs, const char *expect)
{
    char *rel, *file;
    connect_url(url, 1, &rel, &file);
    char path[4200];
    snprintf(path, sizeof path, "%s%s", rel, file);
    int fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) die("open %s: %s", local, strerror(errno));
    uint8_t *buf = malloc(bs);
    if (!buf) die("out of memory");
    struct hash h = hash_init();

    struct mark m = start_mark();
    struct nfsfh *fh;
    if (nfs_open(nfs, path, O_RDONLY, &fh) != 0) die("open %s: %s", path, nerr());
    uint64_t total = 0, ops = 0;
    for (;;) {
        /* fill the buffer completely so the hash sees 8-byte-aligned chunks */
        uint64_t got = 0;
        while (got < bs) {
            int r = nfs_read(nfs, fh, bs - got, buf + got);
            if (r < 0) die("read %s: %s", path, nerr());
            if (r == 0) break;
            got += r;
        }
        if (got == 0) break;
        hash_fast(&h, buf, got);
        for (uint64_t off = 0; off < got;) {
            ssize_t w = write(fd, buf + off, got - off);
            if (w < 0) die("write %s: %s", local, strerror(errno));
            off += w;
        }
        total += got;
        ops++;
        if (got < bs) break;
    }
    if (nfs_close(nfs, fh) != 0) die("close %s: %s", path, nerr());
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, h.h);
    char extra[160];
    snprintf(extra, sizeof extra, "\"bs\": %" PRIu64 ", \"hash\": \"%s\", \"verified\": %s", bs, hex,
             expect ? "true" : "false");
    if (expect && strcasecmp(expect, hex) != 0)
        die("get %s: content hash %s, expected %s (%" PRIu64 " bytes read)", path, hex, expect, total);
    report("copy_out", m, ops, total, extra);
    if (close(fd) != 0) die("close %s: %s", local, strerror(errno));
    disconnect();
    return 0;
}

static int cmd_hash(const char *local)
{
    int fd = open(local, O_RDONLY);
    if (fd < 0) die("open %s: %s", local, strerror(errno));
    size_t bs = 1 << 20;
    uint8_t *buf = malloc(bs);
    struct hash h = hash_init();
    for (;;) {
        size_t got = 0;
        while (got < bs) {
            ssize_t r = read(fd, buf + got, bs - got);
            if (r < 0) die("read %s: %s", local, strerror(errno));
            if (r == 0) break;
            got += r;
        }
        if (got == 0) break;
        hash_fast(&h, buf, got);
        if (got < bs) break;
    }
    printf("%016" PRIx64 "\n", h.h);
    close(fd);
    return 0;
}

static int cmd_rm(const char *url)
{
    char *rel, *file;
    connect_url(url, 1, &rel, &file);
    char path[4200];
    snprintf(path, sizeof path, "%s%s", rel, file);
    if (nfs_unlink(nfs, path) != 0) die("unlink %s: %s", path, nerr());
    disconnect();
    return 0;
}

static uint64_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    uint64_t mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1ULL << 10; end++; break;
    case 'm': case 'M': mult = 1ULL << 20; end++; break;
    case 'g': case 'G': mult = 1ULL << 30; end++; break;
    }
    if (end == s || *end || v < 0) die("bad size %s", s);
    return (uint64_t)(v * mult);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: nfsbench files URL_OF_DIR N SIZE [--no-commit]\n"
            "       (every mode also takes --server-pid PID: report that process's CPU time)\n"
            "       nfsbench put LOCAL_FILE URL_OF_FILE [--bs BYTES] [--no-commit]\n"
            "       nfsbench get URL_OF_FILE LOCAL_FILE [--bs BYTES] [--expect-hash HEX]\n"
            "       nfsbench hash LOCAL_FILE\n"
            "       nfsbench rm URL_OF_FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 3) usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    int commit = 1;
    uint64_t bs = 1 << 20;
    const char *expect = NULL;
    char *pos[8];
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-commit")) commit = 0;
        else if (!strcmp(argv[i], "--bs") && i + 1 < argc) bs = parse_size(argv[++i]);
        else if (!strcmp(argv[i], "--expect-hash") && i + 1 < argc) expect = argv[++i];
        else if (!strcmp(argv[i], "--server-pid") && i + 1 < argc) server_pid = atoi(argv[++i]);
        else if (argv[i][0] == '-' && argv[i][1] == '-') usage();
        else if (npos < 8) pos[npos++] = argv[i];
        else usage();
    }
    if (bs == 0 || bs > (1ULL << 30)) die("bad --bs");
    if (!strcmp(pos[0], "files") && npos == 4)
        return cmd_files(pos[1], parse_size(pos[2]), parse_size(pos[3]), commit);
    if (!strcmp(pos[0], "put") && npos == 3) return cmd_put(pos[1], pos[2], bs, commit);
    if (!strcmp(pos[0], "get") && npos == 3) return cmd_get(pos[1], pos[2], bs, expect);
    if (!strcmp(pos[0], "hash") && npos == 2) return cmd_hash(pos[1]);
    if (!strcmp(pos[0], "rm") && npos == 2) return cmd_rm(pos[1]);
    usage();
    return 2;
}
