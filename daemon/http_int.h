/*
 * http_int.h - the HTTP engine's internals that its unit tests reach
 * (daemon/http.c). Not for the daemon's other modules: they use http.h.
 */
#ifndef AVP_HTTP_INT_H
#define AVP_HTTP_INT_H

#include <curl/curl.h>
#include <stdbool.h>

/* How a failed transfer counts: HTTP_ENOTSENT when nothing of the request
 * can have reached the server (connect or name resolution failed; libcurl
 * never about to write it, sends == 0; no byte written, reqsize == 0; over
 * HTTP/2, h2, libcurl gave up on a stream the server refused each time,
 * errbuf "Connection died, tried N times…"), else HTTP_EMAYBESENT. `sends`:
 * the times the prereq callback ran for it; `reqsize`: CURLINFO_REQUEST_SIZE;
 * errbuf may be NULL. */
int http__failure_class(bool h2, CURLcode rc, const char *errbuf, unsigned sends, long reqsize);

#endif
