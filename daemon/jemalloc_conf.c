/*
 * jemalloc_conf.c - jemalloc's options for avenpingd, linked only when the
 * daemon is linked with jemalloc (daemon/CMakeLists.txt).
 *
 * jemalloc reads `malloc_conf` once, at its first allocation; the
 * MALLOC_CONF environment variable still overrides it.
 *
 * Why: an ingest burst (a campaign of a million jobs) leaves tens of MiB of
 * freed pages behind (request blocks, commit batches). Without background
 * threads jemalloc returns them only while the program allocates, so a daemon
 * that goes quiet with its jobs queued for later kept them for good. A
 * background thread (one is enough) purges them on time, off the event loop;
 * dirty_decay_ms 1000 (default 10000) lets it happen within about a second.
 */
const char *malloc_conf = "background_thread:true,max_background_threads:1,dirty_decay_ms:1000";
