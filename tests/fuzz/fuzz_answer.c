/*
 * fuzz_answer.c - libFuzzer target: arbitrary bytes as the body of a 2xx
 * answer, through classify_answer, whose scanner reads the wamid without a
 * parse tree (daemon/classify.c).
 *
 * Differential: the scanner promises the wamid cJSON would give - the
 * string data.messages[0].id of what cJSON_ParseWithLength accepts (first of
 * each key, trailing bytes ignored), "" when it accepts nothing or finds no
 * string there. Any input where the two differ aborts, and so does an
 * answer without a wamid classified sent without "success":true.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "classify.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reference(const char *body, size_t len, char *out, size_t size)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(root, "data");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(d, "messages");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(m, 0), "id");

    out[0] = '\0';
    if (cJSON_IsString(id)) /* copied as the daemon copies text from the API: as UTF-8 */
        (void)utf8_copy_valid(out, size, id->valuestring, strlen(id->valuestring));
    cJSON_Delete(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_result_t res;
    classify_result_t c;
    char want[sizeof(c.wamid)];
    char *body = malloc(size + 1); /* the engine's bodies are NUL-terminated (http.h) */

    if (body == NULL)
        return 0;
    memcpy(body, data, size);
    body[size] = '\0';
    memset(&res, 0, sizeof(res));
    res.status = 200;
    res.body = body;
    res.body_len = size;
    classify_answer(&res, &c);
    reference(body, size, want, sizeof(want));
    /* A wamid makes it sent; without one it is sent only on "success":true
     * (no_wamid), else a maybe-sent retry. */
    if (want[0] != '\0' ? c.action != CLASSIFY_SENT || c.no_wamid
                        : (c.action == CLASSIFY_SENT) != c.no_wamid)
        abort();
    if (c.action == CLASSIFY_RETRY && !c.maybe_sent && c.error.code[0] == '\0')
        abort();
    if (strcmp(c.wamid, want) != 0)
        abort();
    free(body);
    return 0;
}
