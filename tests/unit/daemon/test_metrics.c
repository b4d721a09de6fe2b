/* test_metrics.c - Prometheus rendering of a snapshot, and the atomic file
 * replacement. */
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "metrics.h"

static void test_histogram(void)
{
    metrics_hist_t h;

    memset(&h, 0, sizeof(h));
    metrics_hist_observe(&h, 0.001); /* first bucket */
    metrics_hist_observe(&h, 0.005); /* le is inclusive: still the first */
    metrics_hist_observe(&h, 0.3);   /* 0.5 */
    metrics_hist_observe(&h, 100);   /* +Inf */
    metrics_hist_observe(&h, -1);    /* clamped to 0 */
    metrics_hist_observe(&h, NAN);   /* clamped to 0 */
    CHECK_EQ(h.count, 6);
    CHECK_EQ(h.buckets[0], 4);
    CHECK_EQ(h.buckets[6], 1);
    CHECK(metrics_hist_bound(6) == 0.5);
    CHECK_EQ(h.buckets[METRICS_LATENCY_BOUNDS], 1);
    CHECK(fabs(h.sum - 100.306) < 1e-9);
    CHECK(isinf(metrics_hist_bound(METRICS_LATENCY_BOUNDS)));
}

/* Returns the value of the sample line starting with `prefix` + ' '. */
static double sample(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);
    const char *p = text;

    while ((p = strstr(p, prefix)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p += n;
    }
    fprintf(stderr, "no sample %s in:\n%s\n", prefix, text);
    exit(1);
}

static void test_render(void)
{
    metrics_hist_t h;
    /* The first sender was slowed down by throttles: 40/s of its 80. */
    metrics_sender_t senders[2] = {{"1000001", 40, 80, 5, 2, false},
                                   {"we\"ird\\id\n", 20, 20, 0, 0, true}};
    metrics_outcome_t outcomes[2] = {{"sent", 7}, {"fail", 1}};
    metrics_snapshot_t s;
    char *text = NULL;
    size_t len = 0;

    memset(&h, 0, sizeof(h));
    metrics_hist_observe(&h, 0.02);
    metrics_hist_observe(&h, 0.2);
    memset(&s, 0, sizeof(s));
    s.jobs[QUEUE_STATE_SENT] = 7;
    s.jobs[QUEUE_STATE_QUEUED] = 3;
    s.outcomes = outcomes;
    s.n_outcomes = 2;
    s.latency = &h;
    s.senders = senders;
    s.n_senders = 2;
    s.oldest_due_age = 12.5;
    s.submitted = 11;
    s.purged = 4;
    s.unreadable_jobs = 2;
    s.http_connects = 9;
    s.tls_handshakes = 8;
    s.version = "1.2.3";
    CHECK_EQ(metrics_render(&s, &text, &len), 0);
    CHECK(text != NULL && len == strlen(text) && text[len - 1] == '\n');
    CHECK(strstr(text, "# TYPE avenping_jobs gauge\n") != NULL);
    CHECK(sample(text, "avenping_jobs{state=\"sent\"}") == 7);
    CHECK(sample(text, "avenping_jobs{state=\"queued\"}") == 3);
    CHECK(sample(text, "avenping_jobs{state=\"uncertain\"}") == 0);
    CHECK(strstr(text, "# TYPE avenping_sends_total counter\n") != NULL);
    CHECK(sample(text, "avenping_sends_total{outcome=\"fail\"}") == 1);
    /* Requests that got no answer (connect error, timeout) are counted too,
     * as retry: the HELP must not promise HTTP answers only. */
    CHECK(strstr(text, "# HELP avenping_sends_total HTTP answers") == NULL);
    CHECK(strstr(text, "# TYPE avenping_http_request_duration_seconds histogram\n") != NULL);
    /* Buckets are cumulative. */
    CHECK(sample(text, "avenping_http_request_duration_seconds_bucket{le=\"0.01\"}") == 0);
    CHECK(sample(text, "avenping_http_request_duration_seconds_bucket{le=\"0.025\"}") == 1);
    CHECK(sample(text, "avenping_http_request_duration_seconds_bucket{le=\"0.25\"}") == 2);
    CHECK(sample(text, "avenping_http_request_duration_seconds_bucket{le=\"+Inf\"}") == 2);
    CHECK(sample(text, "avenping_http_request_duration_seconds_count") == 2);
    CHECK(fabs(sample(text, "avenping_http_request_duration_seconds_sum") - 0.22) < 1e-9);
    /* The current (adapted) rate and the configured one, each under a HELP
     * that says which it is. */
    CHECK(sample(text, "avenping_sender_rate{phone_number_id=\"1000001\"}") == 40);
    CHECK(sample(text, "avenping_sender_max_rate{phone_number_id=\"1000001\"}") == 80);
    CHECK(strstr(text, "# HELP avenping_sender_rate Configured") == NULL);
    CHECK(strstr(text, "# TYPE avenping_sender_max_rate gauge\n") != NULL);
    /* Label values are escaped: backslash, quote, newline. */
    CHECK(sample(text, "avenping_sender_paused{phone_number_id=\"we\\\"ird\\\\id\\n\"}") == 1);
    CHECK(sample(text, "avenping_oldest_due_job_age_seconds") == 12.5);
    CHECK(sample(text, "avenping_submitted_total") == 11);
    /* Every total of the `stats` op has its series. */
    CHECK(sample(text, "avenping_purged_total") == 4);
    CHECK(sample(text, "avenping_unreadable_jobs") == 2);
    CHECK(sample(text, "avenping_http_connects_total") == 9);
    CHECK(sample(text, "avenping_tls_handshakes_total") == 8);
    CHECK(strstr(text, "avenping_build_info{version=\"1.2.3\"} 1\n") != NULL);
    /* Every sample line's family has a TYPE line before it. */
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        CHECK(nl != NULL);
        if (*line != '#') {
            char fam[128], type_line[160];
            size_t n = strcspn(line, "{ ");
            CHECK(n < sizeof(fam));
            memcpy(fam, line, n);
            fam[n] = '\0';
            /* A histogram's series share its family's TYPE line. */
            if (strncmp(fam, "avenping_http_request_duration_seconds_", 39) == 0)
                fam[38] = '\0';
            snprintf(type_line, sizeof(type_line), "# TYPE %s ", fam);
            char *t = strstr(text, type_line);
            CHECK(t != NULL && t < line);
        }
        line = nl + 1;
    }
    free(text);
}

/* Values Prometheus spells its own way: NaN, +Inf, -Inf (printf's nan
 * and inf are not valid sample values). */
static void test_render_special(void)
{
    metrics_sender_t senders[1] = {{"1000001", INFINITY, -INFINITY, 0, 0, false}};
    metrics_snapshot_t s;
    char *text = NULL;
    size_t len = 0;

    memset(&s, 0, sizeof(s));
    s.senders = senders;
    s.n_senders = 1;
    s.oldest_due_age = NAN;
    s.version = "1";
    CHECK_EQ(metrics_render(&s, &text, &len), 0);
    CHECK(strstr(text, "avenping_oldest_due_job_age_seconds NaN\n") != NULL);
    CHECK(strstr(text, "avenping_sender_rate{phone_number_id=\"1000001\"} +Inf\n") != NULL);
    CHECK(strstr(text, "avenping_sender_max_rate{phone_number_id=\"1000001\"} -Inf\n") != NULL);
    CHECK(strstr(text, " nan\n") == NULL && strstr(text, " inf\n") == NULL);
    free(text);
}

static void test_write_file(void)
{
    char dir[] = "/tmp/avp-metrics-XXXXXX", path[64], tmp[80], buf[64];
    struct stat st;
    FILE *f;
    size_t n;

    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/m.prom", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK_EQ(metrics_write_file(path, "a 1\nb 2\n", 8), 0);
    CHECK_EQ(metrics_write_file(path, "c 3\n", 4), 0); /* replaced, not appended */
    f = fopen(path, "r");
    CHECK(f != NULL);
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    CHECK_EQ(n, 4);
    CHECK(memcmp(buf, "c 3\n", 4) == 0);
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    CHECK(access(tmp, F_OK) != 0); /* the temporary file was renamed */
    {
        /* Readable by the collector under the unit's UMask=0077 too. */
        mode_t old = umask(077);
        CHECK_EQ(metrics_write_file(path, "d 4\n", 4), 0);
        umask(old);
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
    }
    /* A directory that does not exist: an error, nothing left behind. */
    snprintf(path, sizeof(path), "%s/nope/m.prom", dir);
    CHECK(metrics_write_file(path, "x", 1) < 0);
    snprintf(path, sizeof(path), "%s/m.prom", dir);
    unlink(path);
    CHECK(rmdir(dir) == 0);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"histogram", test_histogram},
        {"render", test_render},
        {"render_special", test_render_special},
        {"write_file", test_write_file},
    };
    return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
