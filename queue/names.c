/*
 * names.c - names of states, types and priorities, and error descriptions.
 */
#include "queue.h"

#include <errno.h>
#include <string.h>

static const char *const state_names[QUEUE_STATE_MAX + 1] = {
    [QUEUE_STATE_QUEUED] = "queued",       [QUEUE_STATE_SENDING] = "sending",
    [QUEUE_STATE_RETRYING] = "retrying",   [QUEUE_STATE_SENT] = "sent",
    [QUEUE_STATE_FAILED] = "failed",       [QUEUE_STATE_EXPIRED] = "expired",
    [QUEUE_STATE_CANCELLED] = "cancelled", [QUEUE_STATE_UNCERTAIN] = "uncertain",
};

static const char *const type_names[QUEUE_TYPE_MAX + 1] = {
    [QUEUE_TYPE_TEXT] = "text",         [QUEUE_TYPE_MEDIA] = "media",
    [QUEUE_TYPE_LOCATION] = "location", [QUEUE_TYPE_INTERACTIVE] = "interactive",
    [QUEUE_TYPE_SMART] = "smart",       [QUEUE_TYPE_TEMPLATE] = "template",
};

static const char *const prio_names[] = {
    [QUEUE_PRIO_HIGH] = "high",
    [QUEUE_PRIO_NORMAL] = "normal",
    [QUEUE_PRIO_BULK] = "bulk",
};

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Index 0 of state_names and type_names is NULL: no value 0 exists. */
static const char *name_of(const char *const *names, int n, int v)
{
    if (v < 0 || v >= n || names[v] == NULL)
        return "unknown";
    return names[v];
}

static int parse_in(const char *const *names, int n, const char *s)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < n; i++)
        if (names[i] != NULL && strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *queue_state_name(int state)
{
    return name_of(state_names, NELEM(state_names), state);
}

const char *queue_type_name(int type)
{
    return name_of(type_names, NELEM(type_names), type);
}

const char *queue_priority_name(int prio)
{
    return name_of(prio_names, NELEM(prio_names), prio);
}

int queue_state_parse(const char *s)
{
    return parse_in(state_names, NELEM(state_names), s);
}

int queue_type_parse(const char *s)
{
    return parse_in(type_names, NELEM(type_names), s);
}

int queue_priority_parse(const char *s)
{
    return parse_in(prio_names, NELEM(prio_names), s);
}

bool queue_state_is_final(int state)
{
    return state == QUEUE_STATE_SENT || state == QUEUE_STATE_FAILED ||
           state == QUEUE_STATE_EXPIRED || state == QUEUE_STATE_CANCELLED ||
           state == QUEUE_STATE_UNCERTAIN;
}

bool queue_err_full(int err)
{
    return err == QUEUE_EFULL || err == -ENOSPC || err == QUEUE_ELOWDISK;
}

const char *queue_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case QUEUE_ENOTFOUND:
        return "no such job or key";
    case QUEUE_EDUPLICATE:
        return "idempotency key already taken";
    case QUEUE_ELOCKED:
        return "state directory is locked by another process";
    case QUEUE_ESCHEMA:
        return "state directory written by an incompatible version";
    case QUEUE_ECORRUPT:
        return "corrupt record or database";
    case QUEUE_EFULL:
        return "the map is at its maximum size (map_size_max_mb)";
    case QUEUE_EINVAL:
        return "invalid argument";
    case QUEUE_ESTATE:
        return "transition not allowed from the job's state";
    case QUEUE_ELOWDISK:
        return "the disk of the state dir is below disk_min_free_mb (plus room to finish the "
               "accepted jobs)";
    case QUEUE_EFORMAT:
        return "data.mdb is not an LMDB file this build can read (another LMDB data format or "
               "byte order, or not LMDB at all)";
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        /* strerrordesc_np returns static text and is thread-safe. */
        const char *s = strerrordesc_np(-err);
        if (s != NULL)
            return s;
    }
    return "unknown error";
}
