/*
 * wsgate_plugin.h: the C plugin interface of wsgate.
 *
 * Binary- and source-compatible with apache-websocket's plugin interface (plugin structure
 * version 0, server structure version 1): a plugin written for apache-websocket builds against
 * this header unchanged, as long as it does not need `request`, which returns NULL here (wsgate
 * has no Apache request; read the request's headers with `header_get`).
 *
 * A plugin is a shared library exporting one init function that returns its WebSocketPlugin
 * (usually a static structure). A route names the library and the function:
 *
 *   [[route]]
 *   path = "/echo"
 *   app = "plugin"
 *   plugin = "/usr/lib/wsgate/echo.so"
 *   init = "echo_init"
 *
 * What wsgate guarantees (see wsgate.toml(5), PLUGINS):
 *
 * - Callbacks run on plugin threads (`plugin_threads` per route and worker, 4 by default),
 *   never on the threads that serve connections, so a callback may block: it delays only the
 *   connections of its own plugin thread.
 * - The callbacks of one connection are never concurrent and come in order: on_connect, then
 *   on_message for each text or binary message, then on_disconnect exactly once if
 *   on_connect accepted. Callbacks of different connections may run at the same time (as in
 *   Apache): state shared between connections needs a lock.
 * - `send` and `close` may be called from any thread between on_connect returning and
 *   on_disconnect returning. Afterwards they do nothing (and return 0); the server structure
 *   stays readable for 60 seconds after on_disconnect returned, so a plugin thread that
 *   sends once too many does no harm. A plugin must stop its own threads by then.
 * - The library is loaded and its init function called once per process, when the
 *   configuration is read. It is unloaded only when the process exits (`destroy`, if set,
 *   is called then, after every callback returned). A crash inside a plugin is a crash of
 *   the whole server: for isolation, run the code as a backend (`backend = "unix:..."`).
 */

#ifndef WSGATE_PLUGIN_H
#define WSGATE_PLUGIN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Calling convention and export marks, as apache-websocket spells them (both empty here). */
#ifndef EXPORT
#define EXPORT
#endif
#ifndef CALLBACK
#define CALLBACK
#endif

/* Message types: on_message's and send's `type`. */
#define MESSAGE_TYPE_INVALID -1
#define MESSAGE_TYPE_TEXT 0
#define MESSAGE_TYPE_BINARY 128
#define MESSAGE_TYPE_CLOSE 255
#define MESSAGE_TYPE_PING 256
#define MESSAGE_TYPE_PONG 257

/* Apache's request; wsgate has none (`request` returns NULL). */
struct request_rec;

struct _WebSocketServer;
/* Opaque: wsgate's per-connection state. */
struct _WebSocketState;

typedef struct request_rec *(CALLBACK *WS_Request)(const struct _WebSocketServer *server);
/* The request header `key` (case-insensitive), or NULL. Valid until on_connect returns. */
typedef const char *(CALLBACK *WS_Header_Get)(const struct _WebSocketServer *server, const char *key);
/* Adds a header to the 101 response (in on_connect only). */
typedef void(CALLBACK *WS_Header_Set)(const struct _WebSocketServer *server, const char *key, const char *value);
/* The subprotocols the client offered (Sec-WebSocket-Protocol), in its order. */
typedef size_t(CALLBACK *WS_Protocol_Count)(const struct _WebSocketServer *server);
typedef const char *(CALLBACK *WS_Protocol_Index)(const struct _WebSocketServer *server, const size_t index);
/* Chooses the subprotocol answered (in on_connect only; one the client offered). */
typedef void(CALLBACK *WS_Protocol_Set)(const struct _WebSocketServer *server, const char *protocol);
/* Queues a message: MESSAGE_TYPE_TEXT (valid UTF-8, or it is refused), BINARY, PING or PONG
   (at most 125 bytes), or CLOSE (a 2-byte code and a UTF-8 reason, or nothing for 1000: the
   close handshake begins). Returns `buffer_size` when queued, 0 when not (before on_connect
   returned, after close or on_disconnect, refused, or the server's queue full). */
typedef size_t(CALLBACK *WS_Send)(const struct _WebSocketServer *server, const int type,
                                  const unsigned char *buffer, const size_t buffer_size);
/* Begins the close handshake (code 1000). */
typedef void(CALLBACK *WS_Close)(const struct _WebSocketServer *server);

#define WEBSOCKET_SERVER_VERSION_1 1

typedef struct _WebSocketServer {
  unsigned int size;
  unsigned int version;
  struct _WebSocketState *state;
  WS_Request request;
  WS_Header_Get header_get;
  WS_Header_Set header_set;
  WS_Protocol_Count protocol_count;
  WS_Protocol_Index protocol_index;
  WS_Protocol_Set protocol_set;
  WS_Send send;
  WS_Close close;
} WebSocketServer;

struct _WebSocketPlugin;

typedef struct _WebSocketPlugin *(CALLBACK *WS_Init)(void);
/* Called once, at exit, if set. */
typedef void(CALLBACK *WS_Destroy)(struct _WebSocketPlugin *plugin);
/* Runs before the 101 answer: returns the plugin's private pointer for the connection, or NULL
   to decline it (the client gets 403 Forbidden). Optional: without it every client is
   accepted, with a NULL private pointer. */
typedef void *(CALLBACK *WS_OnConnect)(const WebSocketServer *server);
/* A whole message (text is valid UTF-8). The buffer is valid until the call returns. The
   return value is ignored. Required. */
typedef size_t(CALLBACK *WS_OnMessage)(void *plugin_private, const WebSocketServer *server, const int type,
                                       unsigned char *buffer, const size_t buffer_size);
/* The connection is gone; after it returns, `server` is no longer valid. Optional. */
typedef void(CALLBACK *WS_OnDisconnect)(void *plugin_private, const WebSocketServer *server);

#define WEBSOCKET_PLUGIN_VERSION_0 0

typedef struct _WebSocketPlugin {
  unsigned int size;
  unsigned int version;
  WS_Destroy destroy;
  WS_OnConnect on_connect;
  WS_OnMessage on_message;
  WS_OnDisconnect on_disconnect;
} WebSocketPlugin;

#ifdef __cplusplus
}
#endif

#endif /* WSGATE_PLUGIN_H */
