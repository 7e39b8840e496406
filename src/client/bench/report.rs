//! The run's summary: text lines of `key=value`, or one JSON object.

use hdrhistogram::Histogram;

use super::{BenchArgs, Mode};

/// The run's results, printed as text or JSON.
pub(super) struct Summary<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) mode: Mode,
    pub(super) depth: u32,
    pub(super) threads: usize,
    pub(super) secs: f64,
    /// Echoes (fan-out: deliveries) in the window.
    pub(super) msgs: u64,
    pub(super) bytes: u64,
    /// WebSocket bytes read and written in the window (frame headers included).
    pub(super) wire: (u64, u64),
    /// User and system nanoseconds per message.
    pub(super) client: Option<(f64, f64)>,
    pub(super) server: Option<(f64, f64)>,
    pub(super) latency: Option<Histogram<u64>>,
    pub(super) late: u64,
    pub(super) rounds: u64,
    pub(super) compressed: usize,
    pub(super) ok: bool,
}

/// The percentiles reported, by name.
const PERCENTILES: [(&str, f64); 4] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9)];

impl Summary<'_> {
    pub(super) fn print(&self) {
        let a = self.args;
        let frames = if a.text { "text" } else { "binary" };
        let rate = self.msgs as f64 / self.secs;
        let count = if self.mode == Mode::Fanout { "deliveries" } else { "msgs" };
        if a.json {
            let ns =
                |x: Option<(f64, f64)>| x.map(|(u, s)| serde_json::json!({"user_ns_per_msg": u, "sys_ns_per_msg": s}));
            let mut summary = serde_json::json!({
                "mode": a.mode, "connections": a.connections, "size": a.size, "depth": self.depth,
                "frames": frames, "compressed_connections": self.compressed, "threads": self.threads,
                "payload": a.payload, "seconds": self.secs, "bytes": self.bytes,
                "wire_in_bytes": self.wire.0, "wire_out_bytes": self.wire.1,
                "client": ns(self.client), "server": ns(self.server), "ok": self.ok,
            });
            summary[count] = self.msgs.into();
            summary[format!("{count}_per_s")] = rate.into();
            if let Some(h) = &self.latency {
                let mut l = serde_json::Map::new();
                for (name, q) in PERCENTILES {
                    l.insert(format!("{name}_us"), h.value_at_percentile(q).into());
                }
                l.insert("max_us".into(), h.max().into());
                l.insert("samples".into(), h.len().into());
                summary["latency"] = l.into();
                summary["rate"] = a.rate.into();
                summary["late_sends"] = self.late.into();
            }
            if self.mode == Mode::Fanout {
                summary["rounds"] = self.rounds.into();
                summary["publishers"] = a.publishers.unwrap_or(a.connections).into();
            }
            println!("{summary}");
            return;
        }
        println!(
            "mode={} conns={} size={} depth={} frames={frames} compressed={} threads={} secs={:.2} {count}={} {count}_per_s={rate:.0}",
            a.mode, a.connections, a.size, self.depth, self.compressed, self.threads, self.secs, self.msgs
        );
        if self.mode == Mode::Fanout {
            println!("rounds={} publishers={}", self.rounds, a.publishers.unwrap_or(a.connections));
        }
        if let Some(h) = &self.latency {
            let mut line = format!("rate={} samples={}", a.rate.unwrap_or(0.0), h.len());
            for (name, q) in PERCENTILES {
                line += &format!(" {name}_us={}", h.value_at_percentile(q));
            }
            println!("{line} max_us={} late_sends={}", h.max(), self.late);
        }
        let per = self.msgs.max(1) as f64;
        println!(
            "payload={} payload_bytes_per_msg={:.0} wire_in_bytes_per_msg={:.0} wire_out_bytes_per_msg={:.0}",
            a.payload,
            self.bytes as f64 / per,
            self.wire.0 as f64 / per,
            self.wire.1 as f64 / per
        );
        if let Some((u, s)) = self.client {
            println!("client_usr_ns_per_msg={u:.0} client_sys_ns_per_msg={s:.0}");
        }
        if let Some((u, s)) = self.server {
            let cpu_pct = (u + s) * self.msgs as f64 / self.secs / 1e7;
            println!("server_usr_ns_per_msg={u:.0} server_sys_ns_per_msg={s:.0} server_cpu_pct={cpu_pct:.1}");
        }
        if !self.ok {
            println!("result=failed (the reason is on standard error)");
        }
    }
}
