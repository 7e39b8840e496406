//! `app = "demo"`: the embedded HTML page that tries echo and chat from a browser. Plain
//! HTTP, no WebSocket: the connection serves it while reading requests.

use crate::http::response::Response;

/// The page, compiled in.
pub const PAGE: &str = include_str!("../http/demo.html");

/// The response to a GET (or HEAD) of a demo route.
pub fn page(keep_alive: bool, head_only: bool) -> Response<'static> {
    Response {
        status: 200,
        headers: &[("Cache-Control", "no-cache")],
        content_type: "text/html; charset=utf-8",
        body: PAGE.as_bytes(),
        keep_alive,
        head_only,
    }
}
