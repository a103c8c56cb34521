//! Putting the agent together: resolve the configuration, load or create the
//! identity, start the signal and HTTP threads, run the event loop. Also `-T`
//! and `-V`. `main` only maps the results of these to exit codes.

use crate::addr::{self, ServerAddr};
use crate::agent::{Core, Facts};
use crate::childlog::{ChildLogs, LogConfig};
use crate::cli::Options;
use crate::clock::{Clock, RealClock};
use crate::download::DownloadLimits;
use crate::event_loop::{Event, EventLoop, Exit};
use crate::jobrun::JobRunner;
use crate::limits::Limits;
use crate::meta::{Loaded, Meta, MetaError, MetaStore};
use crate::rng::{self, Rng};
use crate::servers::Servers;
use crate::supervisor::Supervisor;
use crate::unpack::UnpackLimits;
use crate::{hostinfo, http, jobs, logging, reslimit, status, sys, tls};
use log::{info, warn};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

mod baked {
    include!(concat!(env!("OUT_DIR"), "/baked.rs"));
}

/// The lock file that keeps two agents off one data directory.
const LOCK_FILE: &str = "lock";

/// Why the agent cannot run.
#[derive(Debug)]
pub enum AppError {
    Meta(MetaError),
    NoServers,
    Io { what: String, err: io::Error },
    Locked(PathBuf),
    Unsafe(String),
    Tls(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Meta(err) => err.fmt(f),
            AppError::NoServers => f.write_str(
                "no server address: none compiled in (BOOT_SERVER_ADDR), none given with -S \
                 on the first start, none from a server",
            ),
            AppError::Io { what, err } => write!(f, "{what}: {err}"),
            AppError::Unsafe(why) => f.write_str(why),
            AppError::Tls(why) => write!(f, "TLS: {why}"),
            AppError::Locked(dir) => write!(
                f,
                "another bootagent is running with data directory {}",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for AppError {}

impl From<MetaError> for AppError {
    fn from(err: MetaError) -> Self {
        AppError::Meta(err)
    }
}

/// The compiled-in server list.
pub fn compiled_in_servers() -> Vec<ServerAddr> {
    // Validated by build.rs with the same parser; an error here cannot happen.
    addr::parse_list(baked::BAKED_SERVERS).unwrap_or_default()
}

/// `-V`.
pub fn version_text() -> String {
    let baked = match baked::BAKED_SERVERS {
        "" => "none",
        list => list,
    };
    format!(
        "bootagent {} ({})\ncompiled-in servers: {baked}\ntls: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("BOOT_TARGET"),
        if cfg!(feature = "tls") { "yes" } else { "no" },
    )
}

/// What the configuration resolves to, before anything is written.
struct Resolved {
    store: MetaStore,
    loaded: Loaded,
    servers: Servers,
    cli_ignored: bool,
}

fn resolve(options: &Options, limits: &Limits) -> Result<Resolved, AppError> {
    let store = MetaStore::new(&options.data_dir, limits.meta_bytes_max);
    let loaded = store.load()?;
    let cli = options.servers.clone().unwrap_or_default();
    let (command_line, server_given, cli_ignored) = match &loaded {
        Loaded::FirstStart => (cli, Vec::new(), false),
        Loaded::Found { meta, .. } => (
            // Persisted lists were written by us, from validated lists.
            addr::parse_list(&meta.servers_cli).unwrap_or_default(),
            addr::parse_list(&meta.servers_server).unwrap_or_default(),
            options.servers.is_some(),
        ),
    };
    let servers = Servers::new(compiled_in_servers(), command_line, server_given);
    Ok(Resolved {
        store,
        loaded,
        servers,
        cli_ignored,
    })
}

/// `-T`: prints what BootAgent would run with; true when it could run.
pub fn test_config(options: &Options, out: &mut dyn Write) -> io::Result<bool> {
    let limits = &options.limits;
    let mut problems = Vec::new();
    writeln!(out, "data directory: {}", options.data_dir.display())?;
    if let Err(why) =
        check_data_dir(&options.data_dir).and_then(|()| check_data_dir_mode(&options.data_dir))
    {
        problems.push(why);
    }
    match resolve(options, limits) {
        Err(err) => problems.push(err.to_string()),
        Ok(resolved) => {
            let step = match &resolved.loaded {
                Loaded::FirstStart => {
                    writeln!(out, "identity: none yet (first start: will register)")?;
                    limits.step_default_s
                }
                Loaded::Found { meta, recovered } => {
                    if let Some(why) = recovered {
                        writeln!(
                            out,
                            "metafile: damaged ({why}); the previous copy will be used"
                        )?;
                    }
                    let state = if meta.registered {
                        "registered"
                    } else {
                        "not yet confirmed by a report: will register"
                    };
                    writeln!(out, "identity: {} ({state})", meta.agentsn)?;
                    if !meta.tags.is_empty() {
                        writeln!(out, "tags: {}", meta.tags)?;
                    }
                    meta.step_s
                }
            };
            writeln!(out, "step: {step} s")?;
            writeln!(out, "servers, in the order of tries:")?;
            for (i, (addr, source)) in resolved.servers.ordered().iter().enumerate() {
                writeln!(out, "  {}. {addr}  [{source}]", i + 1)?;
            }
            if resolved.cli_ignored {
                writeln!(out, "-S: ignored, the metafile exists (first start only)")?;
            }
            let files = match &resolved.loaded {
                Loaded::FirstStart => tls::TlsFiles {
                    ca_file: options.ca_file.clone(),
                    client_cert: options.client_cert.clone(),
                    client_key: options.client_key.clone(),
                },
                Loaded::Found { meta, .. } => tls_files(meta),
            };
            match tls::load_with_baked(&files, baked::BAKED_CA) {
                Ok(trust) if trust.summary.is_empty() && cfg!(feature = "tls") => {
                    writeln!(out, "tls: public roots (webpki)")?
                }
                Ok(_) if !cfg!(feature = "tls") => {
                    writeln!(out, "tls: not built in (no https://)")?
                }
                Ok(trust) => writeln!(out, "tls: {}", trust.summary)?,
                Err(err) => problems.push(format!("TLS: {err}")),
            }
            if resolved.servers.is_empty() {
                problems.push(AppError::NoServers.to_string());
            }
        }
    }
    let defaults = Limits::default().entries();
    writeln!(
        out,
        "resource limits: {}",
        reslimit::describe(limits.limit_mechanism)
    )?;
    writeln!(out, "limits (-o NAME=VALUE changes one):")?;
    for ((name, value), (_, default)) in limits.entries().into_iter().zip(defaults) {
        let note = if value == default { "" } else { "  (changed)" };
        writeln!(out, "  {name} = {value}{note}")?;
    }
    if problems.is_empty() {
        writeln!(out, "ok: bootagent can run")?;
    } else {
        for problem in &problems {
            writeln!(out, "problem: {problem}")?;
        }
    }
    Ok(problems.is_empty())
}

/// A data directory that others may write to could be made to run anything: refused.
fn check_data_dir_mode(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => Err(format!(
            "data directory {} is writable by its group or others (mode {:o}): refusing; chmod 700 it",
            dir.display(),
            meta.permissions().mode() & 0o777
        )),
        _ => Ok(()),
    }
}

/// The data directory must be a writable directory, or creatable.
fn check_data_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        match probe.metadata() {
            Ok(meta) if meta.is_dir() => {
                return if sys::writable(probe) {
                    Ok(())
                } else if probe == dir {
                    Err(format!("data directory {} is not writable", dir.display()))
                } else {
                    Err(format!(
                        "cannot create {}: {} is not writable",
                        dir.display(),
                        probe.display()
                    ))
                };
            }
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            Err(_) => match probe.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                _ => return Ok(()), // relative path: the current directory
            },
        }
    }
}

/// Runs the agent until `SIGTERM` or `SIGINT`.
pub fn run(options: &Options) -> Result<(), AppError> {
    let limits = options.limits.clone();
    // Signals first, before any other thread exists, so every thread inherits
    // the blocked-signal state the handler expects.
    let mut signals = signal_hook::iterator::Signals::new([
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGCHLD,
    ])
    .map_err(|err| AppError::Io {
        what: "cannot install signal handlers".to_string(),
        err,
    })?;
    let log = logging::init(
        logging::level(options.verbosity),
        options.log_file.as_deref(),
        limits.log_file_bytes_max,
        limits.log_files_max,
    )
    .map_err(|err| AppError::Io {
        what: format!(
            "cannot open log file {}",
            options
                .log_file
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        ),
        err,
    })?;

    let resolved = resolve(options, &limits)?;
    if resolved.servers.is_empty() {
        return Err(AppError::NoServers);
    }
    resolved.store.create_dir()?;
    check_data_dir_mode(&options.data_dir).map_err(AppError::Unsafe)?;
    let _lock = lock_data_dir(&options.data_dir)?;
    // Read again under the lock: another agent may have made the identity meanwhile.
    let resolved = resolve(options, &limits)?;
    let meta = first_or_later_start(&resolved, options, &limits)?;
    let trust = tls::load_with_baked(&tls_files(&meta), baked::BAKED_CA).map_err(AppError::Tls)?;
    if !trust.summary.is_empty() {
        info!("TLS: {}", trust.summary);
    }
    let data_dir = options
        .data_dir
        .canonicalize()
        .map_err(|err| AppError::Io {
            what: format!("data directory {}", options.data_dir.display()),
            err,
        })?;
    info!(
        "bootagent {} starting: agent {}, data directory {}, {} server(s), first {}",
        env!("CARGO_PKG_VERSION"),
        meta.agentsn,
        options.data_dir.display(),
        resolved.servers.ordered().len(),
        resolved
            .servers
            .current()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );

    let (event_tx, event_rx) = mpsc::sync_channel::<Event>(limits.loop_channel_max);
    let signal_tx = event_tx.clone();
    let jobs_tx = event_tx.clone();
    thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_tx.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })
        .map_err(|err| AppError::Io {
            what: "cannot start the signal thread".to_string(),
            err,
        })?;
    let (http_tx, http_rx) = mpsc::sync_channel(1);
    http::spawn(&limits, &trust, http_rx, event_tx).map_err(|err| AppError::Io {
        what: "cannot start the HTTP thread".to_string(),
        err,
    })?;

    let clock = RealClock::new();
    let (supervisor, child_logs) = start_supervisor(&data_dir, &limits, &meta, &clock)?;
    let facts = Facts {
        hostname: hostinfo::hostname(),
        version: hostinfo::version_string(),
        host: hostinfo::host_info(),
    };
    let core = Core::new(
        limits.clone(),
        facts,
        meta,
        resolved.servers,
        Rng::from_entropy(),
        clock.now_ms(),
    );
    let download = DownloadLimits {
        bytes_max: limits.download_bytes_max,
        stall_ms: limits.download_stall_ms,
        connect_timeout_ms: limits.connect_timeout_ms,
        tls: trust.clone(),
        ..DownloadLimits::default()
    };
    let unpack = UnpackLimits {
        bytes_max: limits.download_bytes_max.saturating_mul(4),
        ..UnpackLimits::default()
    };
    let jobs =
        JobRunner::start(&data_dir, download, unpack, jobs_tx).map_err(|err| AppError::Io {
            what: "cannot start the job worker".to_string(),
            err,
        })?;
    let exit = EventLoop {
        core,
        supervisor,
        jobs,
        store: &resolved.store,
        state_file: data_dir.join(status::STATE_FILE),
        clock: &clock,
        events: event_rx,
        http: http_tx,
        log,
    }
    .run();
    child_logs.shutdown(); // the children are gone: drain what they wrote last
    match exit {
        Exit::Signalled(signal) => {
            info!("signal {signal}: stopped, metafile saved");
            Ok(())
        }
        Exit::ChannelsClosed => Err(AppError::Io {
            what: "event loop".to_string(),
            err: io::Error::other("every event source is gone"),
        }),
    }
}

/// The TLS files in force: those persisted at the first start (the metafile of a
/// first start is made from this start's options).
fn tls_files(meta: &Meta) -> tls::TlsFiles {
    let path = |path: &Option<String>| path.as_ref().map(PathBuf::from);
    tls::TlsFiles {
        ca_file: path(&meta.ca_file),
        client_cert: path(&meta.client_cert),
        client_key: path(&meta.client_key),
    }
}

/// Clears what a killed predecessor left running, then finds the children on
/// disk and starts those that should run.
fn start_supervisor(
    data_dir: &Path,
    limits: &Limits,
    meta: &Meta,
    clock: &RealClock,
) -> Result<(Supervisor, ChildLogs), AppError> {
    let leftovers = sys::kill_marked_processes(&Supervisor::marker(data_dir));
    if leftovers > 0 {
        warn!("killed {leftovers} process(es) left running by a previous BootAgent");
    }
    let logs_dir = data_dir.join("logs");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&logs_dir)
        .map_err(|err| AppError::Io {
            what: format!("cannot create {}", logs_dir.display()),
            err,
        })?;
    let logs = ChildLogs::start(LogConfig {
        file_bytes_max: limits.child_log_bytes_max,
        files_max: limits.child_log_files_max,
        ..LogConfig::default()
    })
    .map_err(|err| AppError::Io {
        what: "cannot start the child log thread".to_string(),
        err,
    })?;
    let mechanism = reslimit::detect(limits.limit_mechanism); // logs what it chose, and why
    let cpus = hostinfo::host_info().cpus;
    let mut supervisor = Supervisor::new(
        data_dir,
        mechanism,
        Some(logs.clone()),
        cpus,
        clock.now_ms(),
    );
    for skipped in supervisor.discover(&meta.stopped, clock.now_ms(), clock.wall_s()) {
        warn!("{skipped}");
    }
    Ok((supervisor, logs))
}

/// `bootagent status`: the table of children; returns the exit code.
pub fn status(options: &Options, out: &mut dyn Write) -> io::Result<u8> {
    let running = match File::open(options.data_dir.join(LOCK_FILE)) {
        Ok(file) => !sys::try_lock_exclusive(&file)?, // got it: nobody holds it
        Err(_) => false,
    };
    status::print(&options.data_dir, running, RealClock::new().wall_s(), out)
}

/// On a first start, makes and saves a new identity; later, loads the saved one.
fn first_or_later_start(
    resolved: &Resolved,
    options: &Options,
    limits: &Limits,
) -> Result<Meta, AppError> {
    match &resolved.loaded {
        Loaded::Found { meta, recovered } => {
            if let Some(why) = recovered {
                warn!("metafile was damaged ({why}); using the previous copy");
                resolved.store.save(meta)?;
            }
            if resolved.cli_ignored {
                info!("-S ignored: the server list of the first start is persisted");
            }
            if options.ca_file.is_some() || options.client_cert.is_some() {
                info!("-C/--client-cert ignored: the TLS files of the first start are persisted");
            }
            let mut meta = (**meta).clone();
            let interrupted = jobs::fail_interrupted(&mut meta);
            if interrupted > 0 {
                warn!(
                    "{interrupted} job(s) were interrupted by the last stop; reporting them failed"
                );
                resolved.store.save(&meta)?;
            }
            Ok(meta)
        }
        Loaded::FirstStart => {
            let sn = rng::uuid_v4().map_err(|err| AppError::Io {
                what: "cannot read random bytes for the agent SN".to_string(),
                err,
            })?;
            let cli = options.servers.as_deref().unwrap_or_default();
            let mut meta = Meta::new(sn, addr::format_list(cli), limits.step_default_s);
            let absolute = |path: &Option<PathBuf>| {
                path.as_deref()
                    .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
                    .map(|p| p.to_string_lossy().into_owned())
            };
            meta.ca_file = absolute(&options.ca_file);
            meta.client_cert = absolute(&options.client_cert);
            meta.client_key = absolute(&options.client_key);
            resolved.store.save(&meta)?;
            info!("first start: new agent SN {}", meta.agentsn);
            Ok(meta)
        }
    }
}

fn lock_data_dir(dir: &Path) -> Result<File, AppError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|err| AppError::Io {
            what: format!("cannot open {}", path.display()),
            err,
        })?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(AppError::Locked(dir.to_path_buf())),
        Err(err) => Err(AppError::Io {
            what: format!("cannot lock {}", path.display()),
            err,
        }),
    }
}
