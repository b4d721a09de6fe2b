/*
 * http_int.h - the HTTP engine's internals that its unit tests reach
 * (daemon/http.c). Not for the daemon's other modules: they use http.h.
 */
#ifndef AVP_HTTP_INT_H
#define AVP_HTTP_INT_H

#include <curl/curl.h>
#include <stdbool.h>

/* How a failed transfer counts: HTTP_ENOTSENT when nothing of the request
 * can have reached the server (libcurl never about to write it, sends == 0;
 * no byte written, reqsize == 0; over HTTP/2, h2: every copy written was a
 * stream the server refused - libcurl gave up after refusals, errbuf
 * "Connection died, tried N times...", or the connection it opened to send
 * a refused stream again failed before the request was written there,
 * `reconnect`), else HTTP_EMAYBESENT - also a connect failure after a
 * write (HTTP/1.x: libcurl's resend of a request whose reused connection
 * closed without an answer). `sends`: the times the prereq callback ran for
 * it; `reqsize`: CURLINFO_REQUEST_SIZE; `reconnect`: a socket was opened for
 * it after its last write; errbuf may be NULL; `rc` is read only with it. */
int http__failure_class(bool h2, CURLcode rc, const char *errbuf, unsigned sends, long reqsize,
                        bool reconnect);

#endif
