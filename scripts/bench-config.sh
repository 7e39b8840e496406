# Sourced by the measuring scripts: writes the wsgate configuration they all measure, so a
# figure from one script means the same server as a figure from another.
#   bench_config FILE PORT
# Routes: /echo and / (tcpkali asks for "/") echo, /chat a chat room that echoes to its
# sender too (as uWebSockets' room peer does), /deflate an echo with shared compressors.
bench_config() {
  cat >"$1" <<EOT
[server]
listen = ["127.0.0.1:$2"]
max_connections = 20000
[[route]]
path = "/echo"
app = "echo"
[[route]]
path = "/"
app = "echo"
[[route]]
path = "/chat"
app = "chat"
exclude_sender = false
[[route]]
path = "/deflate"
app = "echo"
compression = "shared"
EOT
}
