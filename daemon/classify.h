/*
 * classify.h - what an API answer means for the job that caused it.
 *
 * A pure function of the HTTP result: keyed on Meta's code when `details`
 * carries one (whatsapp-limits.md), else on AvenPing's error code and the
 * HTTP status (avenping-v2.md). No I/O, no clock.
 */
#ifndef AVP_CLASSIFY_H
#define AVP_CLASSIFY_H

#include "http.h"
#include "queue.h"

typedef enum classify_action {
    CLASSIFY_SENT = 1,         /* accepted; wamid set when the answer had one */
    CLASSIFY_FAIL,             /* permanent for this job */
    CLASSIFY_RETRY,            /* transient: exponential backoff, counts an attempt */
    CLASSIFY_RETRY_PAIR,       /* 131056: this recipient only, 4^X s */
    CLASSIFY_THROTTLE_SENDER,  /* 429 / 130429: retry and slow the sender down */
    CLASSIFY_THROTTLE_ACCOUNT, /* Graph app/account throttling: retry after minutes */
    CLASSIFY_PAUSE_SENDER,     /* sender-level: pause the number, keep its jobs */
    CLASSIFY_PAUSE_ACCOUNT,    /* account-level: pause everything, fail nothing */
    CLASSIFY_RESCHEDULE_DAY,   /* 131049: once, not before 24 h, then fail */
} classify_action_t;

/* A sender's first wait in maintenance (131057, 2494100), seconds: the
 * daemon's own, doubled while the maintenance lasts (sched_sender_hold). */
#define CLASSIFY_MAINTENANCE_S 60.0

typedef struct classify_result {
    int action;               /* classify_action_t */
    bool maybe_sent;          /* a transport failure after the request may have left */
    bool not_sent;            /* a transport failure (or a cancel) before the request left:
                                 retry freely */
    bool hold_sender;         /* CLASSIFY_RETRY of a sender in maintenance (131057, 2494100):
                                 the sender waits CLASSIFY_MAINTENANCE_S (doubling while
                                 it stays in maintenance) or min_delay when longer, not
                                 only the job; no attempt counts */
    bool needs_operator;      /* CLASSIFY_PAUSE_ACCOUNT that no probe can clear (Meta 0, 190:
                                 Meta's side of the account; GET /v2/me still answers 200) */
    bool bare_page;           /* CLASSIFY_PAUSE_ACCOUNT for a 400 or 404 without the v2 API's
                                 error envelope (a web server's page: api_base names something
                                 else) */
    double min_delay;         /* seconds the retry must wait at least (Retry-After, ...); 0 */
    queue_error_info_t error; /* filled for everything but CLASSIFY_SENT */
    char wamid[QUEUE_MAX_WAMID_LEN]; /* CLASSIFY_SENT: data.messages[0].id or "" */
    bool no_wamid; /* CLASSIFY_SENT on {"success":true} without data.messages[0].id */
} classify_result_t;

/* Classifies `res` into *out. Never fails; unknown answers are transient. */
void classify_answer(const http_result_t *res, classify_result_t *out);

/*
 * Replaces the API token wherever the answer's text repeats it (an API or a
 * proxy that echoes the Authorization header it got): every whole
 * occurrence in error.code, error.message and wamid, and a tail of one that is
 * the token's start (the text was cut at its buffer's end), become
 * "[token]". Done before anything is logged, stored or answered. `token`
 * is not kept; NULL or shorter than 4 bytes: nothing to do.
 */
void classify_result_redact(classify_result_t *c, const char *token);

/* The action's name for logs and metrics. */
const char *classify_action_name(int action);

#endif
