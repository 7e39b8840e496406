/*
 * The dumb-increment plugin (apache-websocket's example, on POSIX threads instead of APR):
 * a client that offers the subprotocol "dumb-increment-protocol" gets a counter, one text
 * message every 50 ms, from a thread of its own; "reset\n" sets the counter back to 0. A
 * client that does not offer the protocol is declined (403).
 *
 *   cc -shared -fPIC -pthread -I include -o dumb_increment.so examples/plugins/dumb_increment.c
 *
 *   [[route]]
 *   path = "/dumb-increment"
 *   app = "plugin"
 *   plugin = "/path/to/dumb_increment.so"
 *   init = "dumb_increment_init"
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsgate_plugin.h"

typedef struct {
  const WebSocketServer *server;
  pthread_t thread;
  atomic_int counter;
  atomic_int active;
} DumbIncrement;

static void *dumb_increment_run(void *data) {
  DumbIncrement *d = data;
  const struct timespec tick = {0, 50 * 1000 * 1000};
  char buffer[32];
  while (atomic_load(&d->active)) {
    nanosleep(&tick, NULL);
    int n = snprintf(buffer, sizeof buffer, "%d", atomic_fetch_add(&d->counter, 1));
    /* Safe from this thread until on_disconnect returns (which waits for it). */
    d->server->send(d->server, MESSAGE_TYPE_TEXT, (const unsigned char *)buffer, (size_t)n);
  }
  return NULL;
}

static void *CALLBACK dumb_increment_on_connect(const WebSocketServer *server) {
  if (server == NULL || server->version != WEBSOCKET_SERVER_VERSION_1) {
    return NULL;
  }
  size_t count = server->protocol_count(server);
  size_t i;
  for (i = 0; i < count; i++) {
    const char *protocol = server->protocol_index(server, i);
    if (protocol != NULL && strcmp(protocol, "dumb-increment-protocol") == 0) {
      server->protocol_set(server, protocol);
      break;
    }
  }
  if (i == count) {
    return NULL; /* not our protocol: declined */
  }
  DumbIncrement *d = calloc(1, sizeof *d);
  if (d == NULL) {
    return NULL;
  }
  d->server = server;
  atomic_init(&d->counter, 0);
  atomic_init(&d->active, 1);
  /* A small stack: a thousand clients are a thousand threads. */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  int failed = pthread_create(&d->thread, &attr, dumb_increment_run, d);
  pthread_attr_destroy(&attr);
  if (failed) {
    free(d);
    return NULL;
  }
  return d;
}

static size_t CALLBACK dumb_increment_on_message(void *plugin_private, const WebSocketServer *server,
                                                 const int type, unsigned char *buffer, const size_t buffer_size) {
  (void)server;
  (void)type;
  DumbIncrement *d = plugin_private;
  if (d != NULL && buffer_size == 6 && memcmp(buffer, "reset\n", 6) == 0) {
    atomic_store(&d->counter, 0);
  }
  return 0;
}

static void CALLBACK dumb_increment_on_disconnect(void *plugin_private, const WebSocketServer *server) {
  (void)server;
  DumbIncrement *d = plugin_private;
  if (d != NULL) {
    atomic_store(&d->active, 0);
    pthread_join(d->thread, NULL);
    free(d);
  }
}

static WebSocketPlugin dumb_increment_plugin = {
    sizeof(WebSocketPlugin),      WEBSOCKET_PLUGIN_VERSION_0, NULL, /* destroy: the structure is static */
    dumb_increment_on_connect,    dumb_increment_on_message,  dumb_increment_on_disconnect,
};

extern EXPORT WebSocketPlugin *CALLBACK dumb_increment_init(void) { return &dumb_increment_plugin; }
