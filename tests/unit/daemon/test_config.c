/* test_config.c - config file, flags and token loading. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char dir[] = "/tmp/avp-config-XXXXXX";

/* `len` bytes of text (0: up to its NUL). */
static const char *write_file_n(const char *name, const char *text, size_t len)
{
    static char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fwrite(text, 1, len ? len : strlen(text), f) == (len ? len : strlen(text)));
    fclose(f);
    return path;
}

static const char *write_file(const char *name, const char *text)
{
    return write_file_n(name, text, 0);
}

static void test_defaults(void)
{
    config_t c;

    CHECK_EQ(config_init(&c), 0);
    CHECK_STR(c.socket, "/run/avenpingd/avenpingd.sock");
    CHECK_STR(c.state_dir, "/var/lib/avenpingd");
    CHECK_STR(c.api_base, "https://api.avenping.com");
    CHECK(c.rate_per_number == 80);
    CHECK_EQ(c.pair_rate_interval_ms, 6000);
    CHECK_EQ(c.pair_burst, 45);
    CHECK_EQ(c.max_inflight, 256);
    CHECK_EQ(c.max_inflight_per_number, 64);
    CHECK_EQ(c.request_timeout_ms, 30000);
    CHECK_EQ(c.connect_timeout_ms, 10000);
    CHECK_EQ(c.max_attempts, 10);
    CHECK_EQ(c.backoff_base_ms, 1000);
    CHECK_EQ(c.backoff_max_ms, 600000);
    CHECK_EQ(c.job_ttl_s, 86400);
    CHECK_EQ(c.retention_s, 604800);
    CHECK(!c.at_most_once);
    CHECK_EQ(c.socket_mode, 0660);
    CHECK_EQ(c.http_threads, CONFIG_HTTP_THREADS_AUTO);
    config_free(&c);
    config_free(NULL);
}

static void test_file(void)
{
    config_t c;
    char err[256];
    const char *p = write_file("ok.conf", "# comment\n\n"
                                          "socket = /tmp/x.sock  # trailing comment\n"
                                          "rate_per_number = 12.5\n"
                                          "rate.1000001 = 3\n"
                                          "delivery = at-most-once\n"
                                          "allowed_uids = 0, 1000\n"
                                          "socket_mode = 0600\n"
                                          "log_level = debug\n"
                                          "http_threads = 3\n");

    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), 0);
    CHECK_EQ(c.http_threads, 3);
    CHECK_STR(c.socket, "/tmp/x.sock");
    CHECK(c.rate_per_number == 12.5);
    CHECK(config_rate_for(&c, "1000001") == 3);
    CHECK(config_rate_for(&c, "1000002") == 12.5);
    CHECK(c.at_most_once);
    CHECK_EQ(c.n_allowed_uids, 2);
    CHECK_EQ(c.allowed_uids[1], 1000);
    CHECK_EQ(c.socket_mode, 0600);
    CHECK_EQ(c.log_level, CONFIG_LOG_DEBUG);
    config_free(&c);
    /* auto is a value of its own, not a number. */
    p = write_file("auto.conf", "http_threads = auto\n");
    CHECK_EQ(config_init(&c), 0);
    c.http_threads = 0;
    CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), 0);
    CHECK_EQ(c.http_threads, CONFIG_HTTP_THREADS_AUTO);
    config_free(&c);
    /* A UTF-8 byte order mark, CRLF lines, a base URL with a path and a
     * trailing slash, a token with surrounding whitespace in the env. */
    p = write_file("bom.conf", "\xef\xbb\xbfmax_attempts = 7\r\n"
                               "api_base = https://proxy.example/avenping/\r\n");
    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), 0);
    CHECK_EQ(c.max_attempts, 7);
    config_free(&c);
}

static void test_file_errors(void)
{
    static const struct {
        const char *text, *expect;
    } cases[] = {
        {"rate_per_numbr = 5\n", ":1: rate_per_numbr: unknown key"},
        {"\n\nmax_attempts = zero\n", ":3: max_attempts: expected an integer"},
        {"max_attempts\n", ":1: expected \"key = value\""},
        {"delivery = maybe\n", "delivery: expected at-least-once"},
        {"rate.abc = 5\n", "rate.abc"},
        {"socket =\n", "socket: expected a non-empty value"},
        {"max_inflight = 0\n", "max_inflight"},
        {"http_threads = 17\n", "http_threads: expected auto or an integer"},
        {"http_threads = -1\n", "http_threads"},
        {"api_base = notaurl\n", ":1: api_base: expected an http:// or https:// URL"},
        {"api_base = ftp://x\n", "api_base: expected an http://"},
        {"api_base = https://\n", "api_base: expected an http://"},
        {"api_base = http://a b\n", "api_base: expected an http://"},
        {"api_base = https://api.avenping.com/v2\n", "api_base: expected an http://"},
        {"api_base = https://api.avenping.com/V2/\n", "without /v2"},
        {"api_base = https://api.avenping.com/?x=1\n", "api_base: expected an http://"},
        {"api_base = https://user:secret@api.avenping.com\n", "or user:password@"},
        {"api_base = https://@api.avenping.com/x\n", "api_base: expected an http://"},
        /* Bad ports and hosts: accepted, every send would fail to connect
         * and the jobs retry until they expire. */
        {"api_base = http://127.0.0.1:99999\n", ":1: api_base: expected an http://"},
        {"api_base = https://api.avenping.com:44x3\n", "api_base: expected an http://"},
        {"api_base = https://api.avenping.com:0\n", "api_base: expected an http://"},
        {"api_base = http://[::1\n", "api_base: expected an http://"},
        {"api_base = http://ho%20st\n", "api_base: expected an http://"},
        {"connect_timeout_ms = 50\n", "connect_timeout_ms: expected an integer"},
        {"backoff_base_ms = 5000\nbackoff_max_ms = 100\n",
         ":2: backoff_base_ms (5000) is above backoff_max_ms (100)"},
        {"backoff_max_ms = 500\n", ":1: backoff_base_ms (1000) is above backoff_max_ms (500)"},
        {"backoff_base_ms = 2000000\nmax_attempts = 3\n",
         ":1: backoff_base_ms (2000000) is above backoff_max_ms (600000)"},
        {"rate.1000001 = -1\n", "rate.1000001: expected rate.<digits> = number in (0, 1000000]"},
        {"max_attempts = 3\nlog_level = info\nmax_attempts = 4\n",
         ":3: max_attempts: given twice (first on line 1)"},
        {"rate.1000001 = 3\nrate.1000001 = 4\n", ":2: rate.1000001: given twice"},
        {"rate_per_number = 0x10\n", "rate_per_number: expected a number"},
        {"rate_per_number = 1e3\n", "rate_per_number: expected a number"},
        {"rate_per_number = inf\n", "rate_per_number: expected a number"},
        {"rate_per_number = 1.2.3\n", "rate_per_number: expected a number"},
        {"rate_per_number = .\n", "rate_per_number: expected a number"},
        {"rate.1000001 = 0\n", "rate.1000001: 0 would lift this sender's limit"},
        {"socket_mode = 0000\n", "socket_mode: 0 would let no one but root connect"},
        {"allowed_uids = 0,,1\n", "allowed_uids: expected a comma list"},
        {"allowed_uids = 0,\n", "allowed_uids: expected a comma list"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        config_t c;
        char err[256] = "";
        const char *p = write_file("bad.conf", cases[i].text);
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), -EINVAL);
        if (strstr(err, cases[i].expect) == NULL || strstr(err, "bad.conf") == NULL) {
            fprintf(stderr, "case %zu: got \"%s\"\n", i, err);
            CHECK(0);
        }
        config_free(&c);
    }
    {
        /* The password must not be in the message either. */
        config_t c;
        char err[256] = "";
        const char *p = write_file("pw.conf", "api_base = http://u:hunter2@h/\n");
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "hunter2") == NULL);
        config_free(&c);
        CHECK_EQ(config_init(&c), 0);
        p = write_file("at.conf", "api_base = https://h.example/a@b\nconnect_timeout_ms = 2500\n");
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), 0);
        CHECK_EQ(c.connect_timeout_ms, 2500);
        config_free(&c);
        /* A directory given as the file: the reason, not "read error". */
        CHECK_EQ(config_init(&c), 0);
        CHECK(config_load_file(&c, "/", err, sizeof(err)) < 0);
        CHECK(strstr(err, "Is a directory") != NULL);
        config_free(&c);
    }
    {
        /* One rate.<id> more than CONFIG_MAX_RATE_OVERRIDES: the error
         * names the bound. */
        config_t c;
        char err[256] = "", *text, *t;
        const char *p;
        int k;

        text = malloc((CONFIG_MAX_RATE_OVERRIDES + 1) * 32);
        CHECK(text != NULL);
        t = text;
        for (k = 0; k <= CONFIG_MAX_RATE_OVERRIDES; k++)
            t += sprintf(t, "rate.%d = 5\n", 1000000 + k);
        p = write_file("many.conf", text);
        free(text);
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err,
                     "many.conf:257: rate.1000256: too many rate.<id> overrides (at most 256)") !=
              NULL);
        config_free(&c);
    }
    {
        /* One uid more than CONFIG_MAX_UIDS: the error names the bound
         * (it said "expected a comma list of numeric uids" of a list that
         * was one). */
        config_t c;
        char err[256] = "", text[CONFIG_MAX_UIDS * 8 + 32], *t = text;
        const char *p;
        int k;

        t += sprintf(t, "allowed_uids = 0");
        for (k = 1; k < CONFIG_MAX_UIDS; k++)
            t += sprintf(t, ",%d", 1000 + k);
        sprintf(t, "\n");
        p = write_file("uids.conf", text);
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), 0);
        CHECK_EQ(c.n_allowed_uids, CONFIG_MAX_UIDS);
        config_free(&c);
        sprintf(t, ",5\n");
        p = write_file("uids.conf", text);
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "uids.conf:1: allowed_uids: too many uids (at most 64)") != NULL);
        config_free(&c);
    }
    {
        config_t c;
        char err[256] = "";
        const char *p = write_file_n("nul.conf", "max_attempts = 3\0\n", 18);
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "nul.conf:1: contains a NUL byte") != NULL);
        config_free(&c);
    }
}

static void test_flags(void)
{
    char *argv[] = {"avenpingd",   "--socket", "/a.sock", "--state-dir=/s",
                    "--log-level", "warn",     NULL};
    char *bad[] = {"avenpingd", "--token", "secret", NULL};
    char *missing[] = {"avenpingd", "--socket", NULL};
    char *swallowed[] = {"avenpingd", "--config", "--token-file", "t", NULL};
    config_flags_t f;
    config_t c;
    char err[256];

    CHECK_EQ(config_flags_parse(6, argv, &f, err, sizeof(err)), 0);
    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_flags_apply(&c, &f, err, sizeof(err)), 0);
    CHECK_STR(c.socket, "/a.sock");
    CHECK_STR(c.state_dir, "/s");
    CHECK_EQ(c.log_level, CONFIG_LOG_WARN);
    config_free(&c);
    /* No flag takes the token; an unknown flag is refused, without echoing
     * anything after it. */
    CHECK_EQ(config_flags_parse(3, bad, &f, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "secret") == NULL);
    {
        char *eq[] = {"avenpingd", "--token=secret", NULL};
        char *bare[] = {"avenpingd", "secret", NULL};
        CHECK_EQ(config_flags_parse(2, eq, &f, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "secret") == NULL && strstr(err, "\"--token\"") != NULL);
        CHECK_EQ(config_flags_parse(2, bare, &f, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "secret") == NULL && strstr(err, "argument #1") != NULL);
    }
    CHECK_EQ(config_flags_parse(2, missing, &f, err, sizeof(err)), -EINVAL);
    CHECK_EQ(config_flags_parse(4, swallowed, &f, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "--config needs a value") != NULL);
    /* --api-base is checked like the key; good ones pass. */
    {
        char *api[] = {"avenpingd", "--api-base", "notaurl", NULL};
        char *good[] = {"avenpingd", "--api-base", "HTTPS://api.example.com:8443/base", NULL};
        CHECK_EQ(config_flags_parse(3, api, &f, err, sizeof(err)), 0);
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_flags_apply(&c, &f, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "--api-base: expected an http:// or https:// URL") != NULL);
        {
            char *port[] = {"avenpingd", "--api-base=http://127.0.0.1:99999", NULL};
            CHECK_EQ(config_flags_parse(2, port, &f, err, sizeof(err)), 0);
            CHECK_EQ(config_flags_apply(&c, &f, err, sizeof(err)), -EINVAL);
            CHECK(strstr(err, "--api-base: expected") != NULL);
        }
        CHECK_EQ(config_flags_parse(3, good, &f, err, sizeof(err)), 0);
        CHECK_EQ(config_flags_apply(&c, &f, err, sizeof(err)), 0);
        CHECK_STR(c.api_base, "HTTPS://api.example.com:8443/base");
        /* An IPv6 host with a port and a path prefix is fine. */
        {
            char *v6[] = {"avenpingd", "--api-base=http://[::1]:8080/x", NULL};
            CHECK_EQ(config_flags_parse(2, v6, &f, err, sizeof(err)), 0);
            CHECK_EQ(config_flags_apply(&c, &f, err, sizeof(err)), 0);
        }
        config_free(&c);
    }
}

/* The token typed where a path, a key or an option goes is not echoed;
 * typos of real names still are. */
static void test_no_echo(void)
{
    const char *tok = "avp_SECRET_7f3a9c2e1b5d4e";
    char line[128], err[256];
    config_flags_t f;
    config_t c;
    char *token = NULL;
    const char *texts[] = {"avp_SECRET_7f3a9c2e1b5d4e==\n", "rate.avp_SECRET_7f3a = 5\n",
                           "7f3a9c2e1b5d4e7f3a9c2e1b5d4e7f3a = 1\n"};

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        CHECK_EQ(config_init(&c), 0);
        CHECK(config_load_file(&c, write_file("e.conf", texts[i]), err, sizeof(err)) != 0);
        CHECK(strstr(err, "SECRET") == NULL && strstr(err, "7f3a9c") == NULL);
        CHECK(strstr(err, "e.conf:1: unknown key (") != NULL);
        config_free(&c);
    }
    CHECK_EQ(config_init(&c), 0);
    CHECK(config_load_file(&c, write_file("e.conf", "max_inflihgt = 5\n"), err, sizeof(err)) != 0);
    CHECK(strstr(err, "max_inflihgt: unknown key") != NULL); /* a typo is named */
    /* A key in the wrong case: the key it means is named, not what was typed
     * (a "rate.<id>" with capitals stays unnamed: its tail could be the token). */
    CHECK(config_load_file(&c, write_file("e.conf", "Max_Inflight = 5\n"), err, sizeof(err)) != 0);
    CHECK(strstr(err, "e.conf:1: unknown key: keys are spelt in lower case (max_inflight)") !=
          NULL);
    CHECK(config_load_file(&c, write_file("e.conf", "API_BASE = http://x\n"), err, sizeof(err)) !=
          0);
    CHECK(strstr(err, "(api_base)") != NULL);
    CHECK(config_load_file(&c, write_file("e.conf", "Rate.AVP_SECRET = 5\n"), err, sizeof(err)) !=
          0);
    CHECK(strstr(err, "SECRET") == NULL && strstr(err, "secret") == NULL);
    CHECK(strstr(err, "e.conf:1: unknown key (") != NULL);
    CHECK(config_load_file(&c, write_file("e.conf", "Max_Whatever = 5\n"), err, sizeof(err)) != 0);
    CHECK(strstr(err, "e.conf:1: unknown key (12 characters") != NULL);
    CHECK(config_load_file(&c, tok, err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "SECRET") == NULL && strstr(err, "not shown") != NULL);
    CHECK(config_load_file(&c, "/nonexistent/avenpingd.conf", err, sizeof(err)) == -ENOENT);
    CHECK(strstr(err, "/nonexistent/avenpingd.conf") != NULL); /* a path is named */
    snprintf(line, sizeof(line), "token_file = %s\n", tok);
    CHECK_EQ(config_load_file(&c, write_file("e.conf", line), err, sizeof(err)), 0);
    CHECK(config_token_load(&c, &token, err, sizeof(err)) == -ENOENT && token == NULL);
    CHECK(strstr(err, "SECRET") == NULL && strstr(err, "token file (") != NULL);
    /* A long token given as the file (a JWT): the name is too long for a
     * path (ENAMETOOLONG), and is not shown; nor is one with '/' in it
     * (base64), whose part after it is longer than any file name. */
    {
        char longtok[400];
        memset(longtok, 'S', sizeof(longtok) - 1);
        longtok[sizeof(longtok) - 1] = '\0';
        memcpy(longtok, "eyJ.SECRET.", 11);
        free(c.token_file);
        c.token_file = strdup(longtok);
        CHECK(config_token_load(&c, &token, err, sizeof(err)) == -ENAMETOOLONG && token == NULL);
        CHECK(strstr(err, "SECRET") == NULL && strstr(err, "SSSS") == NULL);
        CHECK(strstr(err, "not shown") != NULL);
        CHECK(config_load_file(&c, longtok, err, sizeof(err)) == -ENAMETOOLONG);
        CHECK(strstr(err, "SECRET") == NULL && strstr(err, "not shown") != NULL);
        longtok[3] = '/';
        free(c.token_file);
        c.token_file = strdup(longtok);
        CHECK(config_token_load(&c, &token, err, sizeof(err)) == -ENOENT && token == NULL);
        CHECK(strstr(err, "SECRET") == NULL && strstr(err, "not shown") != NULL);
        CHECK(config_load_file(&c, longtok, err, sizeof(err)) == -ENOENT);
        CHECK(strstr(err, "SECRET") == NULL && strstr(err, "not shown") != NULL);
    }
    config_free(&c);
    {
        char opt[64];
        char *argv[] = {"avenpingd", opt, NULL};
        snprintf(opt, sizeof(opt), "-t%s", tok);
        CHECK_EQ(config_flags_parse(2, argv, &f, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "SECRET") == NULL && strstr(err, "unknown option (") != NULL);
        snprintf(opt, sizeof(opt), "--%s", tok);
        CHECK_EQ(config_flags_parse(2, argv, &f, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "SECRET") == NULL);
        snprintf(opt, sizeof(opt), "--sokcet=/x");
        CHECK_EQ(config_flags_parse(2, argv, &f, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "\"--sokcet\"") != NULL);
    }
}

static void test_token_sources(void)
{
    config_t c;
    char err[256], *tok = NULL, credpath[300];

    CHECK_EQ(config_init(&c), 0);
    unsetenv("CREDENTIALS_DIRECTORY");
    unsetenv("AVENPING_TOKEN");
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -ENOENT);
    setenv("AVENPING_TOKEN", "env-token", 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
    CHECK_STR(tok, "env-token");
    free(tok);
    /* Surrounding whitespace is dropped, as from a file; inner is refused. */
    setenv("AVENPING_TOKEN", " env-token\t\n", 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
    CHECK_STR(tok, "env-token");
    free(tok);
    setenv("AVENPING_TOKEN", "env token", 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "env token") == NULL && strstr(err, "AVENPING_TOKEN") != NULL);
    setenv("AVENPING_TOKEN", " \n", 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -ENODATA);
    /* At most 4095 characters (what the HTTP engine takes), from the
     * environment or a file, a line end after it allowed: a 4096-byte
     * token was taken from the environment and refused by the engine,
     * and a file of 4095 and a newline was refused. */
    {
        static char longtok[4100];
        const char *tf;
        memset(longtok, 'a', 4096);
        longtok[4096] = '\0';
        setenv("AVENPING_TOKEN", longtok, 1);
        CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -EFBIG);
        CHECK(strstr(err, "longer than 4095 characters") != NULL && strstr(err, "aaaa") == NULL);
        longtok[4095] = '\0';
        setenv("AVENPING_TOKEN", longtok, 1);
        CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
        CHECK_EQ(strlen(tok), 4095);
        free(tok);
        unsetenv("AVENPING_TOKEN");
        memcpy(longtok + 4095, "\r\n", 3);
        tf = write_file("long-token", longtok);
        c.token_file = strdup(tf);
        CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
        CHECK_EQ(strlen(tok), 4095);
        free(tok);
        longtok[4095] = 'a';
        memcpy(longtok + 4096, "\n", 2);
        write_file("long-token", longtok);
        CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -EFBIG);
        CHECK(strstr(err, "longer than 4095 characters") != NULL);
        free(c.token_file);
        c.token_file = NULL;
    }
    setenv("AVENPING_TOKEN", "env-token", 1);
    /* The systemd credential wins over the environment. */
    snprintf(credpath, sizeof(credpath), "%s", dir);
    write_file("avenping-token", "cred-token\n");
    setenv("CREDENTIALS_DIRECTORY", credpath, 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
    CHECK_STR(tok, "cred-token");
    free(tok);
    /* A credential that cannot be looked at (here its directory is a
     * file; for a service user, a directory it may not search) is an
     * error, not skipped for the environment's token. */
    snprintf(credpath, sizeof(credpath), "%s", write_file("notadir", "x\n"));
    setenv("CREDENTIALS_DIRECTORY", credpath, 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -ENOTDIR);
    CHECK(tok == NULL && strstr(err, "notadir/avenping-token: Not a directory") != NULL);
    snprintf(credpath, sizeof(credpath), "%s", dir);
    setenv("CREDENTIALS_DIRECTORY", credpath, 1);
    /* token_file wins over both; whitespace around it is stripped. */
    c.token_file = strdup(write_file("tok", "  file-token \n"));
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
    CHECK_STR(tok, "file-token");
    free(tok);
    write_file("tok", "\n\n");
    CHECK(config_token_load(&c, &tok, err, sizeof(err)) != 0);
    CHECK(strstr(err, "empty") != NULL);
    write_file("tok", "two words");
    CHECK(config_token_load(&c, &tok, err, sizeof(err)) != 0);
    CHECK(strstr(err, "two") == NULL); /* never echo the token */
    /* A FIFO (no writer) is refused at once instead of blocking the
     * daemon; so is a config file that is one. */
    {
        char fifo[400];
        config_t c2;

        snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
        CHECK_EQ(mkfifo(fifo, 0600), 0);
        free(c.token_file);
        c.token_file = strdup(fifo);
        CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), -ENOTSUP);
        CHECK(strstr(err, "not a regular file") != NULL);
        CHECK_EQ(config_init(&c2), 0);
        CHECK_EQ(config_load_file(&c2, fifo, err, sizeof(err)), -ENOTSUP);
        CHECK(strstr(err, "not a regular file") != NULL);
        config_free(&c2);
        unlink(fifo);
    }
    config_free(&c);
}

/* Loads `text` as a config file over the defaults into *c. */
static void load_text(config_t *c, const char *name, const char *text)
{
    char err[256] = "";

    CHECK_EQ(config_init(c), 0);
    if (config_load_file(c, write_file(name, text), err, sizeof(err)) != 0) {
        fprintf(stderr, "load_text: %s\n", err);
        CHECK(0);
    }
}

/* Finds `key` among the n changes; -1 when absent, else its live flag. */
static int change_of(const config_change_t *ch, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ch[i].key, key) == 0)
            return ch[i].live;
    return -1;
}

static void test_diff_none(void)
{
    const char *text = "rate_per_number = 5\nrate.1000001 = 3\nrate.1000002 = 4\n"
                       "allowed_uids = 0, 1000\nsocket = /tmp/a.sock\n";
    config_t a, b;

    load_text(&a, "a.conf", text);
    load_text(&b, "b.conf", text);
    CHECK_EQ(config_diff(&a, &b, NULL, 0), 0);
    config_free(&b);
    /* Order does not matter for rate overrides and uid lists. */
    load_text(&b, "b.conf",
              "socket = /tmp/a.sock\nrate.1000002 = 4\nrate.1000001 = 3\n"
              "allowed_uids = 1000,0\nrate_per_number = 5\n");
    CHECK_EQ(config_diff(&a, &b, NULL, 0), 0);
    config_free(&a);
    config_free(&b);
}

static void test_diff_classes(void)
{
    config_change_t ch[64];
    config_t a, b;
    size_t n;

    load_text(&a, "a.conf", "rate_per_number = 5\nrate.1000001 = 3\nlog_level = info\n");
    load_text(&b, "b.conf",
              "rate_per_number = 50\nrate.1000001 = 30\nlog_level = debug\n"
              "pair_burst = 10\nmax_attempts = 3\nbackoff_base_ms = 5\nglobal_rate = 7\n"
              "socket = /tmp/other.sock\nmax_connections = 5\nrequest_timeout_ms = 1000\n"
              "delivery = at-most-once\nallowed_uids = 1000\napi_base = http://x\n"
              "token_file = /tmp/tok\n");
    n = config_diff(&a, &b, ch, 64);
    CHECK_EQ(n, 14);
    CHECK_EQ(change_of(ch, n, "rate_per_number"), 1);
    CHECK_EQ(change_of(ch, n, "rate.<phoneNumberId>"), 1);
    CHECK_EQ(change_of(ch, n, "log_level"), 1);
    CHECK_EQ(change_of(ch, n, "pair_burst"), 1);
    CHECK_EQ(change_of(ch, n, "max_attempts"), 1);
    CHECK_EQ(change_of(ch, n, "backoff_base_ms"), 1);
    CHECK_EQ(change_of(ch, n, "global_rate"), 1);
    CHECK_EQ(change_of(ch, n, "token_file"), 1);
    CHECK_EQ(change_of(ch, n, "socket"), 0);
    CHECK_EQ(change_of(ch, n, "max_connections"), 0);
    CHECK_EQ(change_of(ch, n, "request_timeout_ms"), 0);
    CHECK_EQ(change_of(ch, n, "delivery"), 0);
    CHECK_EQ(change_of(ch, n, "allowed_uids"), 0);
    CHECK_EQ(change_of(ch, n, "api_base"), 0);
    CHECK_EQ(change_of(ch, n, "state_dir"), -1);
    /* A short buffer still gets the full count. */
    CHECK_EQ(config_diff(&a, &b, ch, 2), 14);
    /* An override that disappears is a change too. */
    config_free(&b);
    load_text(&b, "b.conf", "rate_per_number = 5\nlog_level = info\n");
    n = config_diff(&a, &b, ch, 64);
    CHECK_EQ(n, 1);
    CHECK_STR(ch[0].key, "rate.<phoneNumberId>");
    config_free(&a);
    config_free(&b);
}

static void test_apply_live(void)
{
    config_change_t ch[64];
    config_t a, b;
    size_t n;

    load_text(&a, "a.conf", "rate_per_number = 5\nrate.1000001 = 3\nmax_inflight = 10\n");
    load_text(&b, "b.conf",
              "rate_per_number = 50\nrate.1000002 = 7\nmax_inflight = 20\nlog_level = warn\n"
              "socket = /tmp/other.sock\nmax_connections = 5\nhttp2 = no\n"
              "token_file = /tmp/tok\nshutdown_timeout_ms = 1234\n");
    CHECK_EQ(config_apply_live(&a, &b), 0);
    /* Live keys took the new values... */
    CHECK(a.rate_per_number == 50);
    CHECK(config_rate_for(&a, "1000001") == 50);
    CHECK(config_rate_for(&a, "1000002") == 7);
    CHECK_EQ(a.max_inflight, 20);
    CHECK_EQ(a.log_level, CONFIG_LOG_WARN);
    CHECK_EQ(a.shutdown_timeout_ms, 1234);
    CHECK_STR(a.token_file, "/tmp/tok");
    CHECK(a.token_file != b.token_file); /* a copy, owned by a */
    /* ...restart keys kept the running ones... */
    CHECK_STR(a.socket, "/run/avenpingd/avenpingd.sock");
    CHECK_EQ(a.max_connections, 1024);
    CHECK(a.http2);
    /* ...so the next diff reports exactly the restart keys, again. */
    n = config_diff(&a, &b, ch, 64);
    CHECK_EQ(n, 3);
    for (size_t i = 0; i < n; i++)
        CHECK(!ch[i].live);
    CHECK_EQ(change_of(ch, n, "socket"), 0);
    CHECK_EQ(change_of(ch, n, "max_connections"), 0);
    CHECK_EQ(change_of(ch, n, "http2"), 0);
    /* Unsetting a live string key applies too. */
    config_free(&b);
    CHECK_EQ(config_init(&b), 0);
    CHECK_EQ(config_apply_live(&a, &b), 0);
    CHECK(a.token_file == NULL);
    config_free(&a);
    config_free(&b);
}

/* ca_file: missing, not a file or without a PEM certificate is refused,
 * naming file, key and path. */
static void test_ca_file(void)
{
    config_t c;
    char err[512];
    char text[300];

    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_ca_file_check(&c, err, sizeof(err)), 0); /* unset: the system's CAs */
    CHECK_EQ(config_load_file(&c, write_file("ca.conf", "ca_file = /nonexistent/ca.pem\n"), err,
                              sizeof(err)),
             0);
    CHECK_EQ(config_ca_file_check(&c, err, sizeof(err)), -ENOENT);
    CHECK(strstr(err, "ca.conf: ca_file /nonexistent/ca.pem: No such file or directory") != NULL);
    config_free(&c);
    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_load_file(&c, write_file("ca.conf", "ca_file = /\n"), err, sizeof(err)), 0);
    CHECK_EQ(config_ca_file_check(&c, err, sizeof(err)), -EISDIR);
    CHECK(strstr(err, "ca_file /: Is a directory") != NULL);
    config_free(&c);
    snprintf(text, sizeof(text), "ca_file = %s\n",
             write_file("ca.pem", "# bundle\n-----BEGIN CERTIFICATE-----\nMIIB\n"
                                  "-----END CERTIFICATE-----\n"));
    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_load_file(&c, write_file("ca.conf", text), err, sizeof(err)), 0);
    CHECK_EQ(config_ca_file_check(&c, err, sizeof(err)), 0);
    config_free(&c);
    /* Empty, or not a certificate: every TLS connect would fail. */
    for (int i = 0; i < 2; i++) {
        snprintf(text, sizeof(text), "ca_file = %s\n",
                 write_file("ca.pem", i == 0 ? "" : "-----BEGIN PRIVATE KEY-----\nMIIB\n"));
        CHECK_EQ(config_init(&c), 0);
        CHECK_EQ(config_load_file(&c, write_file("ca.conf", text), err, sizeof(err)), 0);
        CHECK_EQ(config_ca_file_check(&c, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "ca.pem: no PEM certificate in it") != NULL);
        config_free(&c);
    }
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"defaults", test_defaults},
        {"file", test_file},
        {"file_errors", test_file_errors},
        {"flags", test_flags},
        {"token_sources", test_token_sources},
        {"diff_none", test_diff_none},
        {"diff_classes", test_diff_classes},
        {"apply_live", test_apply_live},
        {"no_echo", test_no_echo},
        {"ca_file", test_ca_file},
    };
    int rc;

    CHECK(mkdtemp(dir) != NULL);
    rc = test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
    {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
    }
    return rc;
}
