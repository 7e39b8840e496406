/*
 * The echo plugin: every message goes back to its sender, as it came.
 *
 *   cc -shared -fPIC -I include -o echo.so examples/plugins/echo.c
 *
 *   [[route]]
 *   path = "/echo"
 *   app = "plugin"
 *   plugin = "/path/to/echo.so"
 *   init = "echo_init"
 */
#include "wsgate_plugin.h"

static size_t CALLBACK echo_on_message(void *plugin_private, const WebSocketServer *server, const int type,
                                       unsigned char *buffer, const size_t buffer_size) {
  (void)plugin_private;
  if (type == MESSAGE_TYPE_TEXT || type == MESSAGE_TYPE_BINARY) {
    return server->send(server, type, buffer, buffer_size);
  }
  return 0;
}

static WebSocketPlugin echo_plugin = {
    sizeof(WebSocketPlugin), WEBSOCKET_PLUGIN_VERSION_0, NULL, /* destroy */
    NULL,                                                      /* on_connect: everyone is welcome */
    echo_on_message, NULL,                                     /* on_disconnect */
};

extern EXPORT WebSocketPlugin *CALLBACK echo_init(void) { return &echo_plugin; }
