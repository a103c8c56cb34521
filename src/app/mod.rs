//! Putting the agent together: resolve the configuration, load or create the
//! identity, start the signal and HTTP threads, run the event loop. Also `-T`
//! and `-V`. `main` only maps the results of these to exit codes.
//!
//! # Files
//!
//! This file: `run` and the assembly (signals, log, lock, TLS, the threads, the
//! supervisor, the loop), and `status`. `check.rs` is `-T` and `-V`; `config.rs` is
//! what the metafile and the options resolve to (servers, identity, TLS files);
//! `datadir.rs` is the data directory's checks and lock; `error.rs` is why the agent
//! cannot run (`AppError`); `baked.rs` is what `build.rs` baked in.

mod baked;
mod check;
mod config;
mod datadir;
mod error;

use crate::agent::{Core, Facts, Start};
use crate::childlog::{ChildLogs, LogConfig};
use crate::cli::Options;
use crate::clock::{Clock, RealClock};
use crate::control::{self, local::LocalCommands};
use crate::download::DownloadLimits;
use crate::event_loop::{EventLoop, ExecOut, Exit, SelfProbation};
use crate::events::Event;
use crate::jobrun::JobRunner;
use crate::limits::Limits;
use crate::meta::{Loaded, Meta, MetaStore};
use crate::notify::{self, Notifier};
use crate::rng::Rng;
use crate::supervisor::{AtStart, NotifierFactory, Supervisor};
use crate::timers::Timers;
use crate::unpack::UnpackLimits;
use crate::{hostinfo, http, logging, reslimit, selfup, status, sys, tls};
use log::{error, info, warn};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread;

pub use check::{test_config, version_text};
use config::{file_url_roots, first_or_later_start, resolve, tls_files, FILES_DIR};
use datadir::{check_data_dir_mode, lock_data_dir, LOCK_FILE};
pub use error::AppError;

/// Runs the agent until `SIGTERM` or `SIGINT` (then `Ok`: the children are stopped and
/// the metafile saved), or until an exec hand-over replaces this image with another
/// binary (a self-upgrade or its rollback), which returns only when no exec could be
/// made. The loop's event sources all gone is an error.
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
    // After an exec hand-over, SIGALRM keeps its default action until the self-upgrade
    // is settled: the alarm armed before the exec must end a new image that hangs
    // before it takes the alarm over (docs/protocol.md section 10).
    let ignored: Vec<libc::c_int> = sys::IGNORED_SIGNALS
        .into_iter()
        .filter(|&signal| signal != libc::SIGALRM || selfup::exec_marker().is_none())
        .collect();
    sys::ignore_signals(&ignored).map_err(|err| AppError::Io {
        what: "cannot ignore signals".to_string(),
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
    // The other side of an exec hand-over: the children to adopt, the clock to go on with.
    let handover = selfup::take_handover(&options.data_dir);
    // Read again under the lock: another agent may have made the identity meanwhile.
    let resolved = resolve(options, &limits)?;
    let selfup_store = selfup::Store::new(&options.data_dir);
    let mut settled = None;
    let mut settle = |meta: &mut Meta| match selfup_store.load() {
        Ok(state) => {
            let before = state.clone();
            let wall_s = RealClock::new().wall_s();
            let done = selfup::settle(state, meta, handover.as_ref(), wall_s);
            let kept = done.probation.as_ref().map(|p| p.job.clone());
            let changed = done.changed_meta;
            settled = Some((before, done));
            (changed, kept)
        }
        Err(err) => {
            warn!("self-upgrade state: {err}; left as it is");
            (false, None)
        }
    };
    let mut meta = first_or_later_start(&resolved, options, &limits, &mut settle)?;
    // Saved after the metafile: the journal's result comes first.
    let settled = match settled {
        Some((before, done)) => {
            if done.state != before {
                if let Err(err) = selfup_store.save(&done.state) {
                    warn!("cannot save the self-upgrade state: {err}");
                }
            }
            done
        }
        None => selfup::Settled::default(),
    };
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
    // The default root of file:// URLs; made here so an operator finds where to put files.
    match fs::DirBuilder::new()
        .mode(0o700)
        .create(data_dir.join(FILES_DIR))
    {
        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
            warn!(
                "cannot create {}: {err}",
                data_dir.join(FILES_DIR).display()
            )
        }
        _ => {}
    }
    info!(
        "bootagent {} {}: agent {}, data directory {}, {} server(s), first {}",
        env!("BOOT_VERSION"),
        match (&handover, &settled.probation) {
            (Some(_), Some(_)) => "took over by exec (self-upgrade on probation)",
            (Some(_), None) => "took over by exec",
            (None, _) => "starting",
        },
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
    // The console's socket: a failure leaves the agent running without it.
    let control_tx = event_tx.clone();
    match control::listen(&data_dir, control::ListenLimits::from(&limits), control_tx) {
        Ok(path) => info!("local control on {}", path.display()),
        Err(err) => warn!("local control unavailable: {}: {err}", control::SOCKET_FILE),
    }
    let notify_tx = event_tx.clone();
    let (http_tx, http_rx) = mpsc::sync_channel(1);
    http::spawn(&limits, &trust, http_rx, event_tx).map_err(|err| AppError::Io {
        what: "cannot start the HTTP thread".to_string(),
        err,
    })?;

    let clock = match &handover {
        Some(handover) => RealClock::continuing(handover.origin_ms),
        None => RealClock::new(),
    };
    let fatal = meta.fatal_this_boot(&hostinfo::boot_id());
    let notifier = notifier_factory(&data_dir, notify_tx);
    let (supervisor, child_logs) = start_supervisor(
        &data_dir,
        &limits,
        &meta,
        &fatal,
        &clock,
        handover.as_ref(),
        notifier,
    )?;
    let mut core_events = Vec::new();
    for notice in &settled.notices {
        warn!("{notice}");
        core_events.push(crate::report_event::ChildEvent::new(
            clock.wall_s(),
            "bootagent",
            crate::child::EventKind::Fatal,
            notice.clone(),
        ));
    }
    let self_probation = match (&settled.probation, &handover) {
        (Some(upgrade), Some(handover)) => {
            if let Err(err) = selfup::arm_rollback_on_alarm(handover) {
                warn!("cannot take the hang alarm over ({err}): a hang ends the process");
            }
            Some(SelfProbation {
                upgrade: upgrade.clone(),
                reported: false,
            })
        }
        _ => {
            if handover.is_some() {
                selfup::settle_handover(&data_dir);
            }
            None
        }
    };
    let facts = Facts {
        hostname: hostinfo::hostname(),
        version: hostinfo::version_string(),
        host: hostinfo::host_info(),
    };
    let mut core = Core::new(
        limits.clone(),
        facts,
        meta,
        resolved.servers,
        Rng::from_entropy(),
        clock.now_ms(),
        // The first report right after an exec hand-over goes out at once.
        if handover.is_some() {
            Start::AfterExec
        } else {
            Start::Boot
        },
    );
    let mut effects = Vec::new();
    for event in core_events {
        core.push_event(clock.now_ms(), event, &mut effects);
    }
    if !effects.is_empty() {
        if let Err(err) = resolved.store.save(core.meta()) {
            warn!("{err}");
        }
    }
    let download = DownloadLimits {
        file_url_roots: file_url_roots(&data_dir, core.meta()),
        tls: trust.clone(),
        ..DownloadLimits::new(&limits)
    };
    let unpack = UnpackLimits::new(&limits);
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
        timers: Timers::new(clock.now_ms()),
        events: event_rx,
        http: http_tx,
        log,
        local: LocalCommands::new(limits.control_clients_max),
        save_retry_ms: limits.meta_save_retry_ms,
        save_retry_at: None,
        save_failures: 0,
        data_dir: data_dir.clone(),
        self_probation,
    }
    .run();
    if let Exit::Exec(out) = exit {
        return exec_hand_over(&data_dir, &clock, &child_logs, *out);
    }
    child_logs.shutdown(); // the children are gone: drain what they wrote last
    match exit {
        Exit::Signalled(signal) => {
            info!("signal {signal}: stopped, metafile saved");
            Ok(())
        }
        Exit::ChannelsClosed | Exit::Exec(_) => Err(AppError::Io {
            what: "event loop".to_string(),
            err: io::Error::other("every event source is gone"),
        }),
    }
}

/// Hands the children over to another binary by exec, on this (the main) thread.
/// Returns only when no exec could be made: a failed exec to a new version execs
/// this binary again, which reports the upgrade failed (errcode 6) and adopts the
/// children; when even that fails, BootAgent ends and init starts it again.
fn exec_hand_over(
    data_dir: &Path,
    clock: &RealClock,
    child_logs: &ChildLogs,
    out: ExecOut,
) -> Result<(), AppError> {
    use std::os::fd::IntoRawFd;
    let logs = child_logs
        .hand_over()
        .into_iter()
        .map(|(path, fd)| (path, fd.into_raw_fd()))
        .collect();
    let token = crate::rng::uuid_v4().unwrap_or_else(|_| format!("{}", clock.now_ms()));
    let plan = out.plan;
    let mut handover = selfup::Handover {
        token,
        direction: plan.direction,
        origin_ms: clock.origin_ms(),
        children: out.children,
        logs,
        job: plan.job.clone(),
        probation_until_ms: (plan.direction == selfup::Direction::Forward).then(|| {
            clock
                .now_ms()
                .saturating_add(plan.probation_s.saturating_mul(1000))
        }),
        previous: plan.previous.clone(),
        // This binary, which a rollback would run again, takes them.
        previous_notify_sockets: true,
        reason: None,
        forced_rollback: None,
    };
    info!(
        "exec {} ({} child(ren) handed over)",
        plan.program.display(),
        handover.children.len()
    );
    let err = selfup::exec(data_dir, &handover, &plan);
    error!("cannot exec {}: {err}", plan.program.display());
    if plan.direction == selfup::Direction::Forward {
        handover.direction = selfup::Direction::Rollback;
        handover.reason = Some(format!("cannot start {}: {err}", plan.program.display()));
        let back = selfup::ExecPlan {
            program: PathBuf::from("/proc/self/exe"),
            direction: selfup::Direction::Rollback,
            job: None,
            probation_s: 0,
            previous: None,
            notify_sockets: true, // this very binary
        };
        let again = selfup::exec(data_dir, &handover, &back);
        error!("cannot exec this binary again either: {again}");
    }
    Err(AppError::Io {
        what: format!("exec {}", plan.program.display()),
        err,
    })
}

/// Ends what a killed predecessor's children left running (or adopts them, after an
/// exec hand-over), then finds the children on disk and starts those that should run.
/// Starts the sd_notify thread when a child first needs it: its messages reach the
/// loop over `events`; one refused because the channel is full is offered again.
fn notifier_factory(data_dir: &Path, events: SyncSender<Event>) -> NotifierFactory {
    let tag = notify::tag_for(data_dir);
    Box::new(move || {
        let events = events.clone();
        let deliver = Box::new(move |message| {
            !matches!(
                events.try_send(Event::Notify(message)),
                Err(TrySendError::Full(_))
            )
        });
        Notifier::start(&tag, deliver)
    })
}

fn start_supervisor(
    data_dir: &Path,
    limits: &Limits,
    meta: &Meta,
    fatal: &BTreeSet<String>,
    clock: &RealClock,
    handover: Option<&selfup::Handover>,
    notifier: NotifierFactory,
) -> Result<(Supervisor, ChildLogs), AppError> {
    let logs_dir = data_dir.join("logs");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&logs_dir)
        .map_err(|err| AppError::Io {
            what: format!("cannot create {}", logs_dir.display()),
            err,
        })?;
    let logs = ChildLogs::start(LogConfig::new(limits)).map_err(|err| AppError::Io {
        what: "cannot start the child log thread".to_string(),
        err,
    })?;
    let mechanism = reslimit::detect(limits.limit_mechanism); // logs what it chose, and why
                                                              // A cgroup per child even without limits, unless the operator chose no cgroups.
    let track = match limits.limit_mechanism {
        reslimit::Choice::Proc => None,
        _ => match reslimit::detect_tracking(&mechanism) {
            Ok(track) => track,
            Err(reasons) => {
                info!("no tracking cgroup for children: {reasons}");
                None
            }
        },
    };
    if let Some(track) = &track {
        info!(
            "children's processes tracked in cgroups under {}",
            track.dir.display()
        );
    }
    let cpus = hostinfo::host_info().cpus;
    let mut supervisor = Supervisor::new(data_dir, mechanism, track, Some(logs.clone()), cpus);
    supervisor.set_limits(limits);
    supervisor.set_notifier(notifier);
    // The exec hand-over of a self-upgrade (docs/protocol.md section 10) is the one start
    // that adopts the children instead.
    match (AtStart::decide(handover.is_some()), handover) {
        (AtStart::EndLeftovers, _) | (AtStart::Adopt, None) => {
            let leftovers = supervisor.end_leftovers();
            if leftovers > 0 {
                warn!("killed {leftovers} process(es) left running by a previous BootAgent");
            }
        }
        (AtStart::Adopt, Some(handover)) => {
            for (path, fd) in &handover.logs {
                match sys::adopt_fd(*fd) {
                    Some(fd) => {
                        if let Err(err) = logs.attach(path.clone(), fd) {
                            warn!("{err}");
                        }
                    }
                    None => warn!("hand-over: log pipe {fd} of {} is gone", path.display()),
                }
            }
            let adopted = supervisor.adopt(
                handover.children.clone(),
                &meta.stopped,
                clock.now_ms(),
                clock.wall_s(),
            );
            info!("hand-over: adopted {adopted} running child process(es)");
        }
    }
    // Fatal in this boot stays fatal; after a reboot every child gets a fresh start.
    let mut not_started = meta.stopped.clone();
    not_started.extend(fatal.iter().cloned());
    for skipped in supervisor.discover(&not_started, clock.now_ms(), clock.wall_s()) {
        warn!("{skipped}");
    }
    for name in fatal {
        if !meta.stopped.contains(name) {
            info!("agent {name}: fatal before BootAgent restarted in this boot; not started");
            supervisor.hold_fatal(name);
        }
    }
    // Children that ended during the exec: their SIGCHLD came before our handler.
    supervisor.on_sigchld(clock.now_ms(), clock.wall_s());
    Ok((supervisor, logs))
}

/// `bootagent status [NAME]`: the table of children (or of one); returns the exit code.
pub fn status(options: &Options, name: Option<&str>, out: &mut dyn Write) -> io::Result<u8> {
    let running = match File::open(options.data_dir.join(LOCK_FILE)) {
        Ok(file) => !sys::try_lock_exclusive(&file)?, // got it: nobody holds it
        Err(_) => false,
    };
    // The tags the server gave at registration, above the whole table (read only).
    if name.is_none() {
        let store = MetaStore::new(&options.data_dir, options.limits.meta_bytes_max);
        if let Ok(Loaded::Found { meta, .. }) = store.load() {
            if !meta.tags.is_empty() {
                writeln!(out, "tags: {}", meta.tags)?;
            }
        }
    }
    status::print(
        &options.data_dir,
        running,
        RealClock::new().wall_s(),
        name,
        out,
    )
}
