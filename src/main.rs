//! The `wsgate` binary: CLI, config load, logging setup, `Server::run` — nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wsgate::config::{parse_listen, Config, Listener};
use wsgate::route::Route;
use wsgate::server::Server;
use wsgate::sys::rlimit::raise_fd_limit;
use wsgate::tls::{CertFiles, TlsSettings};

/// A WebSocket gateway and message broker for the low-latency edge.
///
/// With no config file and no flags it serves 127.0.0.1:8080 with the echo app at /echo and
/// a demo page at /. Flags override the file.
#[derive(Parser, Debug, Clone)]
#[command(name = "wsgate", version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (TOML); see conf/wsgate.toml and wsgate.toml(5).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (repeatable), e.g. 127.0.0.1:8080 or [::1]:8080; replaces the file's.
    #[arg(short = 'l', long = "listen", value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<std::net::SocketAddr>,
    /// Route (repeatable) PATH=TARGET, e.g. /echo=echo, /=demo, /site=static:DIR,
    /// /app=unix:/run/app.sock or /p=plugin:LIB.so#INIT; adds to or replaces the file's.
    #[arg(long = "route", value_name = "PATH=TARGET")]
    routes: Vec<String>,
    /// Serve the files under DIR at / (GET and HEAD; index.html for a directory), next to
    /// the WebSocket routes; the same as --route /=static:DIR.
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Certificate chain (PEM) for TLS: makes every -l listener (or, without -l, every
    /// listener) serve https:// and wss://. Needs --tls-key.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Reactor threads: a number, or "auto" (the CPUs this process may run on); replaces the
    /// file's `workers`.
    #[arg(short = 'w', long = "workers", value_name = "N|auto", value_parser = wsgate::config::parse_workers)]
    workers: Option<usize>,
    /// After binding the listeners, drop root privileges to USER (its group, no others).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
    /// Check the configuration (certificates included), print a summary and exit (0 if valid).
    #[arg(long = "check-config")]
    check_config: bool,
    /// More logging (-v debug, -vv trace).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Less logging (-q warnings and errors only, -qq errors only).
    #[arg(short = 'q', long = "quiet", action = clap::ArgAction::Count)]
    quiet: u8,
}

/// Besides serving (the default).
#[derive(clap::Subcommand, Debug, Clone)]
enum Command {
    /// A WebSocket client on standard input and output: each line is sent as a message and
    /// each message received is printed as a line (see wsgate(1)).
    Client(wsgate::client::terminal::ClientArgs),
    /// A load generator: closed-loop or pipelined echo over N connections, every echo checked.
    Bench(wsgate::client::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Client(args)) => return ExitCode::from(wsgate::client::terminal::run(args)),
        Some(Command::Bench(args)) => {
            // Thousands of connections need as many descriptors as the hard limit allows.
            raise_fd_limit();
            return ExitCode::from(wsgate::client::bench::run(args));
        }
        None => {}
    }
    init_logging(&cli);
    let config = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        for l in &config.listen {
            if let Some(tls) = &l.tls {
                if let Err(e) = wsgate::tls::build_server_config(tls) {
                    eprintln!("wsgate: listener {}: {e}", l.addr);
                    return ExitCode::from(2);
                }
            }
        }
        println!("configuration OK");
        println!("{}", summary(&config));
        return ExitCode::SUCCESS;
    }
    let fd_limit = raise_fd_limit();
    let mut server = match Server::bind(&config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(1);
        }
    };
    if cli.config.is_some() {
        // SIGHUP reads the file again, with the same command-line overrides.
        let cli = cli.clone();
        server.reload_with(Box::new(move || build_config(&cli)));
    }
    if let Some(user) = &config.user {
        if let Err(e) = wsgate::sys::privileges::drop_to(user) {
            log::error!("{e}");
            return ExitCode::from(1);
        }
        log::info!("running as user {user}");
    } else if wsgate::sys::privileges::is_root() && config.routes.iter().any(|r| r.backend.is_some()) {
        log::error!("refusing to run as root with backend routes: set user = \"...\" in [server] or -u USER");
        return ExitCode::from(1);
    }
    let addrs: Vec<String> =
        server.local_addrs().iter().map(|(a, tls)| format!("{a}{}", if *tls { " (tls)" } else { "" })).collect();
    if let Some(url) = server.admin_url() {
        log::info!("admin API, /metrics and the dashboard on {url}");
    }
    log::info!("wsgate {} listening on {}", env!("CARGO_PKG_VERSION"), addrs.join(", "));
    log::info!("{}; open-file limit {}", summary(&config), fd_limit.map_or("unknown".into(), |n| n.to_string()));
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn build_config(cli: &Cli) -> Result<Config, String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::embedded_default(),
    };
    if !cli.listen.is_empty() {
        config.listen = cli.listen.iter().map(|a| Listener::plain(*a)).collect();
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        let settings = TlsSettings { default: CertFiles { cert: cert.clone(), key: key.clone() }, sni: Vec::new() };
        for l in &mut config.listen {
            l.tls = Some(settings.clone());
        }
    }
    if cli.user.is_some() {
        config.user = cli.user.clone();
    }
    if let Some(n) = cli.workers {
        config.workers = n;
    }
    if let Some(dir) = &cli.static_dir {
        config.add_route(Route::static_files("/", dir, config.limits)?)?;
    }
    for spec in &cli.routes {
        let route = Route::from_cli(spec, config.limits)?;
        config.add_route(route)?;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn summary(config: &Config) -> String {
    let routes: Vec<String> = config.routes.iter().map(|r| format!("{} ({})", r.path, r.app.name())).collect();
    let listeners: Vec<String> = config.listen.iter().map(|l| format!("{} ({})", l.addr, l.scheme())).collect();
    format!(
        "listeners: {}; routes: {}; {} worker(s){}; max_connections {} (per process); max message {} bytes",
        listeners.join(", "),
        routes.join(", "),
        config.workers,
        if config.workers > 1 {
            match config.balance {
                wsgate::config::Balance::ReusePort => " sharing each port (SO_REUSEPORT)",
                wsgate::config::Balance::Handoff => ", worker 0 handing connections to the least loaded",
            }
        } else {
            ""
        },
        config.max_connections,
        config.limits.max_message_size
    )
}

fn init_logging(cli: &Cli) {
    let level = match (cli.verbose, cli.quiet) {
        (0, 0) => log::LevelFilter::Info,
        (1, _) => log::LevelFilter::Debug,
        (v, _) if v >= 2 => log::LevelFilter::Trace,
        (_, 1) => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).format_target(false).format_timestamp_millis();
    // RUST_LOG, when set, refines the level per module.
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.init();
}
