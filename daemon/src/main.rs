//! `accessd`: arguments → tracing → config → run → exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use accessd::aws::startup;
use accessd::gateway::{ConfigSource, Overrides};
use accessd::keys::secrets::SecretsKey;
use accessd::store::NewAuditEvent;
use accessd::{RunError, Signals};
use clap::{Parser, Subcommand, ValueEnum};
use gatehouse_config::Config;
use gatehouse_config::file::DEFAULT_CONFIG_PATH;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code for an invalid config (EX_USAGE from sysexits.h).
const EXIT_CONFIG: u8 = 64;

/// The gatehouse access gateway: WireGuard split tunnels, an SSH jump host
/// and an enrollment portal, under one policy and one audit log.
///
/// Examples:
///   accessd --config /etc/gatehouse/gatehouse.toml
///   accessd check-config /etc/gatehouse/gatehouse.toml
///   accessd restore /var/backups/gatehouse-2026-11-25.db   (accessd stopped)
///
/// Signals: SIGHUP re-reads the config (an invalid file is refused and the
/// running config stays); SIGTERM or SIGINT stop cleanly.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// The config file.
    #[arg(long, short, global = true, env = "GATEHOUSE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Use this state directory instead of the config's gateway.state_dir.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve the admin API on this socket instead of the config's admin.socket.
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file and exit: 0 when valid, 64 with every problem
    /// (file:line:column: key: message) when not.
    CheckConfig {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
    },
    /// Put a backup made by `accessctl backup` in place of the state
    /// directory's database, with accessd stopped.
    ///
    /// The backup is checked first (SQLite integrity, a known schema, an
    /// unbroken audit chain); then the database, its WAL, the audit head
    /// and the audit mirror are moved aside as `<name>.replaced-<unix time>`
    /// (never deleted), the backup goes in place, and the audit head and
    /// mirror are rebuilt from it. Refused while accessd answers on its
    /// admin socket.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Anchor the audit log anew at its last record, with accessd stopped:
    /// for when the anchor file (`audit.head` in the state directory) is
    /// lost and no backup of it is left.
    ///
    /// accessd refuses to start without the anchor, since records cut from
    /// the log's end would go unseen. First compare the log with a copy
    /// kept elsewhere (the audit mirror your log shipper sends); this
    /// command checks the whole chain from its first record, prints the
    /// record it anchors at, and refuses a chain that does not verify.
    AuditAnchor,
    /// Print the accessd(8) man page (roff), for packaging.
    #[command(hide = true)]
    Manpage,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::CheckConfig { file }) = &args.command {
        return check_config(file.as_ref().unwrap_or(&args.config));
    }
    if let Some(Command::Manpage) = &args.command {
        return print_manpage();
    }
    init_tracing(args.log_format);
    let source = || ConfigSource {
        path: args.config.clone(),
        overrides: Overrides {
            state_dir: args.state_dir.clone(),
            admin_socket: args.admin_socket.clone(),
        },
    };
    if let Some(Command::Restore { file }) = &args.command {
        return restore(&source(), file);
    }
    if let Some(Command::AuditAnchor) = &args.command {
        return audit_anchor(&source());
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(async_workers());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let source = ConfigSource {
        path: args.config,
        overrides: Overrides {
            state_dir: args.state_dir,
            admin_socket: args.admin_socket,
        },
    };
    match runtime.block_on(serve(source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(err)) => {
            tracing::error!("{err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads of the async runtime (SSH relays, portal, admin API):
/// half the cores, at least one. The WireGuard data plane runs on two
/// threads of its own, and SQLite and argon2 on blocking threads. Idle
/// workers are what a busy one wakes for every relayed SSH packet, in case
/// there is work to steal; on two cores, one worker cut the jump host's CPU
/// per GiB by a fifth to a third (`tests/bench/ssh-bench.sh`). The
/// `TOKIO_WORKER_THREADS` environment variable overrides it.
fn async_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

async fn serve(source: ConfigSource) -> Result<(), RunError> {
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let watcher = shutdown.clone();
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the config");
                    // A reload already queued covers this one too.
                    let _ = reload_tx.try_send(());
                }
                _ = terminate.recv() => { tracing::info!("SIGTERM"); break; }
                _ = interrupt.recv() => { tracing::info!("SIGINT"); break; }
                () = watcher.cancelled() => break,
            }
        }
        watcher.cancel();
    });
    let result = accessd::run(source, Signals { reload: reload_rx }, shutdown.clone()).await;
    shutdown.cancel();
    let _ = signals.await;
    result
}

fn signal_error(err: std::io::Error) -> RunError {
    RunError::Signals(err)
}

fn print_manpage() -> ExitCode {
    use clap::CommandFactory as _;
    let page = clap_mangen::Man::new(Args::command()).section("8");
    match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot write the man page: {err}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            // [store]'s TLS rules and password file, without connecting.
            let store = match config.store.as_ref().map(accessd::store::postgres::check) {
                Some(Err(err)) => {
                    eprintln!("{}: {err}", path.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
                Some(Ok(db)) => format!(", shared store {db}"),
                None => String::new(),
            };
            // The shared secrets key file: there, private, 32 bytes.
            if let Some(Err(err)) = config
                .gateway
                .secrets_key_file
                .as_deref()
                .map(SecretsKey::load_file)
            {
                eprintln!("{}: {err}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            #[expect(clippy::print_stdout, reason = "check-config reports to the terminal")]
            {
                println!(
                    "{}: ok ({} groups{store})",
                    path.display(),
                    config.groups.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The store options of the config, for a command that needs accessd
/// stopped, with the secrets key loaded as accessd loads it (from SSM with
/// `[aws]`), and the audit record to write when it was stored in SSM now;
/// the exit code to return when it cannot go on.
fn options_with_accessd_stopped(
    source: &ConfigSource,
) -> Result<(accessd::store::StoreOptions, Option<NewAuditEvent>), ExitCode> {
    let config = source.load().map_err(|err| {
        eprintln!("{err}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    if std::os::unix::net::UnixStream::connect(&config.admin.socket).is_ok() {
        eprintln!(
            "accessd is running (its admin socket {} answers): stop it first (systemctl stop accessd)",
            config.admin.socket.display()
        );
        return Err(ExitCode::FAILURE);
    }
    let (secrets, stored) = secrets_key(&config).map_err(|err| {
        eprintln!("cannot load the secrets key: {err:#}");
        ExitCode::FAILURE
    })?;
    let options =
        accessd::store::StoreOptions::from_config(&config, Arc::new(secrets)).map_err(|err| {
            eprintln!("{err}");
            ExitCode::from(EXIT_CONFIG)
        })?;
    Ok((options, stored))
}

/// The secrets key, as `accessd` loads it at start. Nothing is applied
/// offline, so AWS out of reach falls back on the local copy even with
/// `aws.apply_on_start`.
fn secrets_key(config: &Config) -> anyhow::Result<(SecretsKey, Option<NewAuditEvent>)> {
    use anyhow::Context as _;
    let mut config = config.clone();
    if let Some(aws) = &mut config.aws {
        aws.apply_on_start = false;
    }
    let state_dir = config.gateway.state_dir.clone();
    accessd::store::create_state_dir(&state_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let aws = startup::connect(&config).await?;
        Ok(startup::secrets_key(&config, &aws, &state_dir).await?)
    })
}

/// Writes the record of a secrets key stored in SSM by an offline command.
fn audit_stored_key(store: &accessd::store::Store, stored: Option<NewAuditEvent>) {
    if let Some(record) = stored
        && let Err(err) = store.write_blocking(|w| w.audit(record).map(drop))
    {
        eprintln!("warning: cannot audit storing the secrets key in SSM: {err}");
    }
}

fn audit_anchor(source: &ConfigSource) -> ExitCode {
    let (options, stored) = match options_with_accessd_stopped(source) {
        Ok(options) => options,
        Err(code) => return code,
    };
    let store = match accessd::store::Store::open_anchoring_anew(&options) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("cannot open the store: {err}");
            return ExitCode::FAILURE;
        }
    };
    audit_stored_key(&store, stored);
    let report = store.read_blocking(|r| r.verify_audit());
    match report {
        Ok(report) if report.intact => {
            let head = store.read_blocking(|r| r.audit_last()).ok().flatten();
            #[expect(clippy::print_stdout, reason = "the command reports to the terminal")]
            {
                match head {
                    Some(head) => println!(
                        "anchored the audit log at record {} (hash {}); {} record(s) verified from the first",
                        head.seq, head.hash, report.records
                    ),
                    None => println!("the audit log is empty: nothing to anchor"),
                }
            }
            ExitCode::SUCCESS
        }
        Ok(report) => {
            let problem = report.problem.map(|p| p.message).unwrap_or_default();
            eprintln!("not anchored: the audit chain does not verify: {problem}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("cannot verify the audit log: {err}");
            ExitCode::FAILURE
        }
    }
}

fn restore(source: &ConfigSource, file: &std::path::Path) -> ExitCode {
    let (options, stored) = match options_with_accessd_stopped(source) {
        Ok(options) => options,
        Err(code) => return code,
    };
    match accessd::store::backup::restore(&options, file, accessd::time_fmt::now_unix()) {
        Ok(report) => {
            if stored.is_some() {
                match accessd::store::Store::open(&options) {
                    Ok(store) => audit_stored_key(&store, stored),
                    Err(err) => {
                        eprintln!("warning: cannot audit storing the secrets key in SSM: {err}")
                    }
                }
            }
            let restored = &report.restored;
            #[expect(clippy::print_stdout, reason = "restore reports to the terminal")]
            {
                println!(
                    "restored {} into {}: {} user(s), {} device(s), {} audit record(s), chain head seq {}",
                    file.display(),
                    options.state_dir.display(),
                    restored.users,
                    restored.devices,
                    restored.audit_records,
                    restored.head.as_ref().map_or(0, |h| h.seq),
                );
                for path in &report.moved_aside {
                    println!("kept the replaced file as {}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("restore refused: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
