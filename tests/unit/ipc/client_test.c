/*
 * client_test.c - the blocking protocol client (ipc_client.h) against a
 * scripted Unix-socket peer on a thread. One case per process (argv[1]).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc_client.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static char g_dir[64], g_path[128];

typedef void (*peer_fn)(int fd);

typedef struct peer {
    int lfd;
    peer_fn fn;
    pthread_t th;
} peer_t;

static void *peer_main(void *arg)
{
    peer_t *p = arg;
    int fd = accept(p->lfd, NULL, NULL);
    CHECK(fd >= 0);
    p->fn(fd);
    close(fd);
    return NULL;
}

static void peer_start(peer_t *p, peer_fn fn)
{
    struct sockaddr_un sa;

    snprintf(g_dir, sizeof g_dir, "/tmp/avp-client-XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    snprintf(g_path, sizeof g_path, "%s/s", g_dir);
    p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(p->lfd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    CHECK(strlen(g_path) < sizeof sa.sun_path);
    memcpy(sa.sun_path, g_path, strlen(g_path) + 1);
    CHECK(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(listen(p->lfd, 4) == 0);
    p->fn = fn;
    CHECK(pthread_create(&p->th, NULL, peer_main, p) == 0);
}

static void peer_join(peer_t *p)
{
    pthread_join(p->th, NULL);
    close(p->lfd);
    unlink(g_path);
    rmdir(g_dir);
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        CHECK(w > 0);
        s += w;
        n -= (size_t)w;
    }
}

/* Reads one line (without '\n') into buf; false at EOF. */
static bool read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    char ch;
    while (read(fd, &ch, 1) == 1) {
        if (ch == '\n') {
            buf[n] = '\0';
            return true;
        }
        if (n + 1 < cap)
            buf[n++] = ch;
    }
    return false;
}

/* --- echo: answers each request with its "op" and a counter ------------- */

static void echo_peer(int fd)
{
    char line[4096], out[4200];
    int k = 0;
    while (read_line(fd, line, sizeof line)) {
        int n = snprintf(out, sizeof out, "{\"ok\":true,\"n\":%d,\"req\":%s}\n", ++k, line);
        write_all(fd, out, (size_t)n);
    }
}

static void t_call(void)
{
    peer_t p;
    ipc_client_t *c;
    cJSON *req = cJSON_CreateObject(), *ans;
    const char *line;
    size_t len;

    peer_start(&p, echo_peer);
    CHECK(ipc_client_connect(g_path, &c) == 0);
    cJSON_AddStringToObject(req, "op", "ping");
    CHECK(ipc_client_call(c, req, 5000, &ans) == 0);
    CHECK(cJSON_GetObjectItem(ans, "n")->valueint == 1);
    CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(ans, "req"), "op")->valuestring, "ping") ==
          0);
    cJSON_Delete(ans);
    /* Pipelined: three sends, then three answers in order. */
    CHECK(ipc_client_send(c, "{\"op\":\"a\"}", 10) == 0);
    CHECK(ipc_client_send(c, "{\"op\":\"b\"}", 10) == 0);
    CHECK(ipc_client_send(c, "{\"op\":\"c\"}", 10) == 0);
    for (int i = 2; i <= 4; i++) {
        char want[64];
        CHECK(ipc_client_recv(c, 5000, &line, &len) == 0);
        snprintf(want, sizeof want, "{\"ok\":true,\"n\":%d,", i);
        CHECK(strncmp(line, want, strlen(want)) == 0 && len == strlen(line));
    }
    cJSON_Delete(req);
    ipc_client_close(c);
    peer_join(&p);
}

/* --- no deadlock: the peer writes a lot before it reads anything --------- */

#define FLOOD_LINES 40000

static void flood_peer(int fd)
{
    char line[256];
    static char blob[FLOOD_LINES * 24];
    size_t n = 0;
    for (int i = 0; i < FLOOD_LINES; i++)
        n += (size_t)sprintf(blob + n, "{\"ok\":true,\"i\":%d}\n", i);
    /* Far more than socket buffers hold: blocks until the client reads. */
    write_all(fd, blob, n);
    for (int i = 0; i < FLOOD_LINES; i++)
        CHECK(read_line(fd, line, sizeof line));
    write_all(fd, "{\"done\":true}\n", 14);
}

static void t_no_deadlock(void)
{
    peer_t p;
    ipc_client_t *c;
    const char *line;
    size_t len;
    char req[64];

    peer_start(&p, flood_peer);
    CHECK(ipc_client_connect(g_path, &c) == 0);
    /* ~1.6 MB of requests: the send blocks unless the client keeps reading
     * the peer's answers into its buffer meanwhile. */
    for (int i = 0; i < FLOOD_LINES; i++) {
        int n = snprintf(req, sizeof req, "{\"op\":\"ping\",\"id\":%d,\"pad\":\"xxxxxxx\"}", i);
        CHECK(ipc_client_send(c, req, (size_t)n) == 0);
    }
    CHECK(ipc_client_flush(c, 20000) == 0);
    for (int i = 0; i < FLOOD_LINES; i++) {
        char want[64];
        CHECK(ipc_client_recv(c, 20000, &line, &len) == 0);
        snprintf(want, sizeof want, "{\"ok\":true,\"i\":%d}", i);
        CHECK(strcmp(line, want) == 0);
    }
    CHECK(ipc_client_recv(c, 20000, &line, &len) == 0 && strcmp(line, "{\"done\":true}") == 0);
    ipc_client_close(c);
    peer_join(&p);
}

/* --- framing: split writes, CRLF, EOF ------------------------------------ */

static void split_peer(int fd)
{
    write_all(fd, "{\"a\":1}\r", 8);
    usleep(20000);
    write_all(fd, "\n{\"b\":", 6);
    usleep(20000);
    write_all(fd, "2}\n{\"c\":3}\n", 11);
    usleep(20000);
    write_all(fd, "{\"partial\":", 11);
    /* then EOF */
}

static void t_framing(void)
{
    peer_t p;
    ipc_client_t *c;
    const char *line;
    size_t len;

    peer_start(&p, split_peer);
    CHECK(ipc_client_connect(g_path, &c) == 0);
    CHECK(ipc_client_recv(c, 5000, &line, &len) == 0 && strcmp(line, "{\"a\":1}") == 0);
    CHECK(len == 7);
    CHECK(ipc_client_recv(c, 5000, &line, &len) == 0 && strcmp(line, "{\"b\":2}") == 0);
    /* The third line arrived with the second: it is buffered. */
    CHECK(ipc_client_buffered(c) == 1);
    CHECK(ipc_client_recv(c, 5000, &line, &len) == 0 && strcmp(line, "{\"c\":3}") == 0);
    /* An unfinished last line at EOF is not a line. */
    CHECK(ipc_client_recv(c, 5000, &line, &len) == IPC_CLIENT_ECLOSED);
    CHECK(ipc_client_recv(c, 5000, &line, &len) == IPC_CLIENT_ECLOSED);
    ipc_client_close(c);
    peer_join(&p);
}

/* --- bounds and errors ----------------------------------------------------- */

static void long_peer(int fd)
{
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof chunk);
    /* More than IPC_CLIENT_MAX_LINE without a newline; the client gives up
     * and closes, so a failed write is expected. */
    for (size_t sent = 0; sent <= IPC_CLIENT_MAX_LINE + sizeof chunk; sent += sizeof chunk)
        if (send(fd, chunk, sizeof chunk, MSG_NOSIGNAL) <= 0)
            return;
}

static void t_long_line(void)
{
    peer_t p;
    ipc_client_t *c;
    const char *line;
    size_t len;

    peer_start(&p, long_peer);
    CHECK(ipc_client_connect(g_path, &c) == 0);
    CHECK(ipc_client_recv(c, 10000, &line, &len) == -EMSGSIZE);
    ipc_client_close(c);
    peer_join(&p);
}

static void silent_peer(int fd)
{
    char line[64];
    (void)read_line(fd, line, sizeof line); /* until the client closes */
}

static void t_timeout(void)
{
    peer_t p;
    ipc_client_t *c;
    const char *line;
    size_t len;

    peer_start(&p, silent_peer);
    CHECK(ipc_client_connect(g_path, &c) == 0);
    CHECK(ipc_client_recv(c, 100, &line, &len) == -ETIMEDOUT);
    ipc_client_close(c);
    peer_join(&p);
    CHECK(ipc_client_connect("/nonexistent/avp.sock", &c) == -ENOENT && c == NULL);
    CHECK(strcmp(ipc_client_strerror(IPC_CLIENT_ECLOSED), "the daemon closed the connection") == 0);
}

/* --- answers, then close: the answers stay readable --------------------- */

static void five_then_close(int fd)
{
    char line[4096], out[64];
    for (int k = 1; k <= 5 && read_line(fd, line, sizeof line); k++) {
        int n = snprintf(out, sizeof out, "{\"ok\":true,\"n\":%d}\n", k);
        write_all(fd, out, (size_t)n);
    }
    shutdown(fd, SHUT_WR);
}

static void t_answers_then_close(void)
{
    peer_t p;
    ipc_client_t *c;
    const char *line;
    size_t len;
    static char big[1000];
    int rc = 0;

    memset(big, 'x', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '}';
    peer_start(&p, five_then_close);
    CHECK(ipc_client_connect(g_path, &c) == 0);
    for (int i = 0; i < 5; i++)
        CHECK(ipc_client_send(c, "{\"op\":\"ping\"}", 13) == 0);
    CHECK(ipc_client_flush(c, 5000) == 0);
    peer_join(&p); /* answered and closed */
    for (int i = 0; i < 3000 && rc == 0; i++)
        rc = ipc_client_send(c, big, sizeof big);
    for (int k = 1; k <= 5; k++) {
        char want[32];
        snprintf(want, sizeof want, "{\"ok\":true,\"n\":%d}", k);
        rc = ipc_client_recv(c, 5000, &line, &len);
        if (rc != 0)
            fprintf(stderr, "answer %d: %s\n", k, ipc_client_strerror(rc));
        CHECK(rc == 0 && strcmp(line, want) == 0);
    }
    rc = ipc_client_recv(c, 5000, &line, &len);
    CHECK(rc != 0 && rc != -ETIMEDOUT);
    ipc_client_close(c);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } cases[] = {{"call", t_call},       {"no_deadlock", t_no_deadlock},
                 {"framing", t_framing}, {"long_line", t_long_line},
                 {"timeout", t_timeout}, {"answers_then_close", t_answers_then_close}};
    int ran = 0;

    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)
            continue;
        cases[i].fn();
        printf("ok %s\n", cases[i].name);
        ran++;
    }
    return ran ? 0 : 1;
}
