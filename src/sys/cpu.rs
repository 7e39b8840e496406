//! A process's CPU time from `/proc/PID/stat` (user and system, in seconds): what the load
//! generator reports for itself and for the server it loads.

use std::time::Duration;

/// User and system CPU time of process `pid` (`None`: this process), or `None` when it is gone.
pub fn times(pid: Option<u32>) -> Option<(Duration, Duration)> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `rest` starts at field 3.
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    let hz = clock_ticks_per_second();
    let secs = |t: u64| Duration::from_secs_f64(t as f64 / hz as f64);
    Some((secs(ticks(14)?), secs(ticks(15)?)))
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system and has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // spins on the real clock
mod tests {
    #[test]
    fn this_process_has_spent_some_time() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (user, system) = super::times(None).unwrap();
        assert!(user + system > std::time::Duration::ZERO, "{x}");
        assert!(super::times(Some(u32::MAX)).is_none());
    }
}
