/* test_config.c - config file, flags and token loading. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char dir[] = "/tmp/avp-config-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
    return path;
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
    CHECK_EQ(c.max_attempts, 10);
    CHECK_EQ(c.backoff_base_ms, 1000);
    CHECK_EQ(c.backoff_max_ms, 600000);
    CHECK_EQ(c.job_ttl_s, 86400);
    CHECK_EQ(c.retention_s, 604800);
    CHECK(!c.at_most_once);
    CHECK_EQ(c.socket_mode, 0660);
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
                                          "log_level = debug\n");

    CHECK_EQ(config_init(&c), 0);
    CHECK_EQ(config_load_file(&c, p, err, sizeof(err)), 0);
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
}

static void test_flags(void)
{
    char *argv[] = {"avenpingd",   "--socket", "/a.sock", "--state-dir=/s",
                    "--log-level", "warn",     NULL};
    char *bad[] = {"avenpingd", "--token", "secret", NULL};
    char *missing[] = {"avenpingd", "--socket", NULL};
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
    CHECK_EQ(config_flags_parse(2, missing, &f, err, sizeof(err)), -EINVAL);
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
    /* The systemd credential wins over the environment. */
    snprintf(credpath, sizeof(credpath), "%s", dir);
    write_file("avenping-token", "cred-token\n");
    setenv("CREDENTIALS_DIRECTORY", credpath, 1);
    CHECK_EQ(config_token_load(&c, &tok, err, sizeof(err)), 0);
    CHECK_STR(tok, "cred-token");
    free(tok);
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
    config_free(&c);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"defaults", test_defaults},           {"file", test_file},
        {"file_errors", test_file_errors},     {"flags", test_flags},
        {"token_sources", test_token_sources},
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
