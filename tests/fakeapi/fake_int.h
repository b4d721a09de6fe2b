/*
 * fake_int.h - private interface between the two halves of avp-fakeapi, the
 * fake AvenPing v2 API server used by tests and benchmarks.
 *
 * fake_logic.c is the API itself: switches, checks, fault injection, the
 * send log and the counters, as functions of a request's method, path,
 * auth headers and body. It knows nothing of sockets or libmicrohttpd, so
 * its answers can be reasoned about without a network.
 *
 * fakeapi.c is the process: command line, listening socket, the
 * libmicrohttpd glue (body buffering, latency by suspend/resume and a timer
 * thread, dropping connections) and signals.
 *
 * Threads: every fake_server_* function may be called from any thread at
 * once; the server serialises its own state with two mutexes (state, log).
 * Errors: 0 or a negative errno value.
 */
#ifndef AVP_FAKE_INT_H
#define AVP_FAKE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAKE_BODY_MAX (2u * 1024u * 1024u) /* request body limit ("2mb" as Express counts) */
#define FAKE_MAX_TOKENS 64
#define FAKE_MAX_TOKEN_LEN 512
#define FAKE_MAX_NUMBERS 256
#define FAKE_MAX_ID_LEN 63 /* phoneNumberId */
#define FAKE_MAX_DIGITS 32 /* digits of a recipient */
#define FAKE_MAX_RULES 4096
#define FAKE_MAX_LATENCY_MS 600000L
#define FAKE_PAIR_MAX 1000000 /* tracked (sender, recipient) pairs */

typedef enum fake_account {
    FAKE_ACCOUNT_OK = 0,
    FAKE_ACCOUNT_NONE,
    FAKE_ACCOUNT_PLAN_EXPIRED,
    FAKE_ACCOUNT_DEVELOPER_PLAN,
} fake_account_t;

/* The runtime switches; each one also settable through POST /_fake/control. */
typedef struct fake_config {
    long latency_ms;       /* delay of every answer to a send route */
    long me_latency_ms;    /* delay of every answer to GET /v2/me (control only) */
    double fail_rate;      /* probability of a 500 with fail_meta_code */
    long fail_meta_code;   /* default 131000 */
    double rate_limit;     /* sends/s per phoneNumberId, burst the same; 0 = off */
    long pair_interval_ms; /* one send per interval per (sender, recipient); 0 = off */
    long pair_burst;       /* bucket size of the pair limit, >= 1 */
    double reset_before;   /* probability of dropping a send unanswered, not accepted */
    double reset_after;    /* probability of dropping an accepted send's answer */
    bool token_revoked;    /* every authed route answers 401 */
    fake_account_t account;
} fake_config_t;

/* What the process was started with. Strings are borrowed during fake_server_new only. */
typedef struct fake_options {
    const char *const *tokens; /* NULL: {"test-token"} */
    size_t ntokens;
    const char *const *numbers; /* owned phoneNumberIds; NULL: 1000001..1000010 */
    size_t nnumbers;
    const char *log_path; /* NULL: no send log */
    uint64_t seed;
    fake_config_t config;
} fake_options_t;

/* Fills `cfg` with the defaults (everything off, fail_meta_code 131000, pair_burst 1). */
void fake_config_defaults(fake_config_t *cfg);

/* One complete HTTP request as the glue received it; all borrowed for the call. */
typedef struct fake_request {
    const char *method;
    const char *path;          /* without the query string */
    const char *authorization; /* "Authorization" header or NULL */
    const char *api_token;     /* "X-API-Token" header or NULL */
    const char *body;          /* NULL when empty or too big */
    size_t body_len;
    bool body_too_big; /* more than FAKE_BODY_MAX bytes arrived (and were dropped) */
} fake_request_t;

/* What to do with a request. */
typedef struct fake_answer {
    bool drop;  /* close the connection without answering */
    int status; /* HTTP status when !drop */
    char *body; /* malloc'd JSON text when !drop; the caller frees it (or hands it on) */
    size_t body_len;
    int retry_after; /* seconds for a Retry-After header, -1: none */
    long delay_ms;   /* answer (or drop) only after this long */
    bool cut; /* declare 64 more body bytes than `body` and close after it (a broken framing) */
    char location[256]; /* a Location header when not empty */
} fake_answer_t;

typedef struct fake_server fake_server_t;

/*
 * Creates the server state and opens the log (O_APPEND, created 0644).
 * `opt` and its strings are copied. On error *out is NULL and nothing leaks;
 * -EINVAL for bad options (e.g. duplicate numbers), -ENOMEM, or the open
 * error of the log.
 */
int fake_server_new(const fake_options_t *opt, fake_server_t **out);

/*
 * Decides the answer to `rq`, updating counters and writing the send log
 * (one line per accepted send, written before this returns). Never fails:
 * allocation failure becomes a dropped connection. `ans` is filled; its body
 * belongs to the caller.
 */
void fake_server_handle(fake_server_t *s, const fake_request_t *rq, fake_answer_t *ans);

/* Frees the server and closes the log. Accepts NULL. No call may be running. */
void fake_server_free(fake_server_t *s);

#endif
