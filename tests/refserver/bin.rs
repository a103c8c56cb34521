//! `refserver`: the reference control server as a program, for a person or a script.
//!
//! ```text
//! cargo run --example refserver -- [--listen ADDR] [--step N|none] [--files DIR] [--for SECS] [--adopt]
//! cargo run --example refserver -- --demo [--step N] [--for SECS] [--agent PATH]
//! ```
//!
//! Serves docs/protocol.md's `/agent/register` and `/agent/status`, the `/admin/...`
//! endpoints and `/files/...` (see `server.rs`), printing one line per protocol or file
//! request on stdout, until Ctrl-C or `--for SECS`.
//!
//! `--demo` also runs the BootAgent binary built beside this example
//! (`target/<profile>/bootagent`) against the server, with a fresh data directory
//! `target/demo-data`, stops it after `--for SECS` (default 30) and prints a summary.
//! It then removes the cgroup directories that appeared while the agent ran and are
//! empty now (the agent's parents of its children's cgroups): a demo leaves nothing.
//! Exit status 0 when the agent registered and reported at least once.

#[path = "server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use server::{Kind, Options, RefServer, Request};

/// `println!` that ignores write errors (a closed pipe must not panic the server).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const USAGE: &str = "\
usage: refserver [--listen ADDR] [--step N|none] [--files DIR] [--for SECS] [--adopt]
       refserver --demo [--listen ADDR] [--step N|none] [--files DIR] [--for SECS] [--agent PATH]

  --listen ADDR   address to listen on (default 127.0.0.1:8080; 127.0.0.1:0 with --demo)
  --step N|none   report interval handed out at registration, in seconds
                  (default 600; 5 with --demo); `none` leaves the field out
  --files DIR     serve DIR under /files/
  --for SECS      stop after SECS seconds (default: run until Ctrl-C; 30 with --demo)
  --adopt         accept status reports from agents registered elsewhere, as one server
                  of a cluster with a shared registry (behind a load balancer) would
  --demo          run the bootagent binary built beside this example against the server
  --agent PATH    with --demo: the agent binary to run (default target/<profile>/bootagent)
  -h, --help      this text

Admin: GET /admin lists the endpoints, e.g.
  curl -s http://ADDR/admin/agents
  curl -s -d '{\"job\":{\"action\":\"config\",\"step\":30}}' http://ADDR/admin/jobs
  curl -s -d '{\"fault\":\"500\",\"count\":3}' http://ADDR/admin/fault";

/// Command-line settings.
#[derive(Clone, Debug, Default)]
struct Args {
    listen: Option<String>,
    /// `None`: not given; `Some(None)`: `--step none`.
    step: Option<Option<u64>>,
    files: Option<PathBuf>,
    for_secs: Option<f64>,
    demo: bool,
    agent: Option<PathBuf>,
    adopt: bool,
    help: bool,
}

/// Parses the command line (`--flag value` or `--flag=value`).
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = matches!(
            flag.as_str(),
            "--listen" | "--step" | "--files" | "--for" | "--agent"
        );
        let value = if takes_value {
            match inline.or_else(|| args.next()) {
                Some(v) => v,
                None => return Err(format!("{flag} needs a value")),
            }
        } else if inline.is_some() {
            return Err(format!("{flag} takes no value"));
        } else {
            String::new()
        };
        match flag.as_str() {
            "--listen" => parsed.listen = Some(value),
            "--step" if value == "none" => parsed.step = Some(None),
            "--step" => match value.parse::<u64>() {
                Ok(n) => parsed.step = Some(Some(n)),
                Err(_) => {
                    return Err(format!(
                        "--step needs a count of seconds or `none`, not {value:?}"
                    ))
                }
            },
            "--files" => parsed.files = Some(PathBuf::from(value)),
            "--for" => match value.parse::<f64>() {
                Ok(s) if s >= 0.0 && s.is_finite() => parsed.for_secs = Some(s),
                _ => return Err(format!("--for needs a number of seconds, not {value:?}")),
            },
            "--agent" => parsed.agent = Some(PathBuf::from(value)),
            "--demo" => parsed.demo = true,
            "--adopt" => parsed.adopt = true,
            "-h" | "--help" => parsed.help = true,
            _ => return Err(format!("unknown argument {arg:?} (try --help)")),
        }
    }
    if parsed.agent.is_some() && !parsed.demo {
        return Err("--agent only makes sense with --demo".to_string());
    }
    Ok(parsed)
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("refserver: {msg}");
            std::process::exit(2);
        }
    };
    if args.help {
        say!("{USAGE}");
        return;
    }
    let code = match if args.demo { demo(&args) } else { serve(&args) } {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("refserver: {msg}");
            1
        }
    };
    std::process::exit(code);
}

/// Starts the server and prints protocol and file requests as they are answered.
fn start(args: &Args, default_listen: &str, default_step: u64) -> Result<RefServer, String> {
    if let Some(dir) = &args.files {
        if !dir.is_dir() {
            return Err(format!("--files {}: not a directory", dir.display()));
        }
    }
    let opts = Options {
        step: args.step.unwrap_or(Some(default_step)),
        files_dir: args.files.clone(),
        listen: args
            .listen
            .clone()
            .unwrap_or_else(|| default_listen.to_string()),
        adopt_unknown: args.adopt,
    };
    let srv = RefServer::start(opts.clone())
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    srv.on_request(|r| match r.kind {
        Kind::Protocol => say!("{}", server::describe(r)),
        Kind::File => say!("{}", file_line(r)),
        Kind::Admin | Kind::Other => {}
    });
    let step = opts.step.map_or("none".to_string(), |s| format!("{s} s"));
    let files = opts
        .files_dir
        .as_ref()
        .map_or(String::new(), |d| format!("; files from {}", d.display()));
    say!(
        "refserver listening on {} (step {step}{files}); try: curl -s {}/admin",
        srv.url(),
        srv.url()
    );
    Ok(srv)
}

/// One line for a `/files/` request.
fn file_line(r: &Request) -> String {
    format!(
        "{} file      {} {} → {}",
        server::clock(r.wall),
        r.method,
        r.path,
        r.status
    )
}

/// Plain server mode: run until Ctrl-C or `--for`.
fn serve(args: &Args) -> Result<i32, String> {
    let server = start(args, "127.0.0.1:8080", server::DEFAULT_STEP)?;
    match args.for_secs {
        Some(secs) => thread::sleep(Duration::from_secs_f64(secs)),
        None => loop {
            thread::sleep(Duration::from_secs(3600));
        },
    }
    print_summary(&server);
    Ok(0)
}

/// Prints what the server saw of each agent.
fn print_summary(server: &RefServer) {
    let answered = |path: &str| {
        server
            .requests_to(path)
            .iter()
            .filter(|r| r.status == 200)
            .count()
    };
    say!(
        "summary: {} register and {} status requests answered 200, {} agent(s)",
        answered("/agent/register"),
        answered("/agent/status"),
        server.agents().len()
    );
    for a in server.agents() {
        let previous = a
            .previous_sn
            .as_ref()
            .map_or(String::new(), |p| format!(" (was {p})"));
        say!(
            "  agent sn={}{previous} hostname={} registrations={} reports={} job results={} events={}",
            a.sn,
            a.hostname,
            a.registrations,
            a.reports,
            a.job_results.len(),
            a.events.len()
        );
    }
}

/// Where the demo finds the agent and keeps its data, from this binary's location
/// (`target/<profile>/examples/refserver`).
fn demo_paths(agent: Option<&Path>) -> Result<(PathBuf, PathBuf), String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let examples = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "examples"));
    let (Some(profile), Some(target)) = (
        examples.and_then(Path::parent),
        examples.and_then(Path::parent).and_then(Path::parent),
    ) else {
        return Err(format!(
            "{} is not in target/<profile>/examples/: run the demo with `cargo run --example refserver -- --demo`",
            exe.display()
        ));
    };
    let agent = agent.map_or_else(|| profile.join("bootagent"), Path::to_path_buf);
    Ok((agent, target.join("demo-data")))
}

/// Demo mode: run the agent against the server for a while, then report.
fn demo(args: &Args) -> Result<i32, String> {
    let (agent_path, data_dir) = demo_paths(args.agent.as_deref())?;
    if !agent_path.is_file() {
        return Err(format!(
            "no agent binary at {}: run `cargo build` first (or give --agent PATH)",
            agent_path.display()
        ));
    }
    // A fresh data directory each time: the agent persists its first server list
    // (docs/protocol.md §5), and this run's port is new.
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .map_err(|e| format!("cannot reset {}: {e}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;

    // A child agent for the demo: a single executable (docs/protocol.md §9), served
    // by the reference server and installed by a job once the agent registered.
    let files = data_dir.with_file_name("demo-files");
    std::fs::create_dir_all(&files)
        .map_err(|e| format!("cannot create {}: {e}", files.display()))?;
    let package = files.join("hello-1.0");
    std::fs::write(&package, DEMO_CHILD)
        .map_err(|e| format!("cannot write {}: {e}", package.display()))?;
    let demo_args = Args {
        files: Some(files.clone()),
        ..args.clone()
    };
    let server = start(&demo_args, "127.0.0.1:0", 5)?;
    say!(
        "demo: running {} -S {} -D {}",
        agent_path.display(),
        server.addr(),
        data_dir.display()
    );
    let cgroups_before = cgroup_dirs();
    let mut child = Command::new(&agent_path)
        .arg("-S")
        .arg(server.addr())
        .arg("-D")
        .arg(&data_dir)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", agent_path.display()))?;

    let run_for = Duration::from_secs_f64(args.for_secs.unwrap_or(30.0));
    let end = Instant::now() + run_for;
    let mut early_exit = None;
    let mut job_queued = false;
    while Instant::now() < end {
        if !job_queued {
            if let Some(agent) = server.agents().into_iter().find(|a| a.reports > 0) {
                let job = json!({
                    "id": "demo-install-hello",
                    "action": "install",
                    "name": "hello",
                    "url": format!("{}/files/hello-1.0", server.url()),
                    "checksum": format!("SHA256:{}", sha256_hex(DEMO_CHILD.as_bytes())),
                    "version": "1.0",
                });
                say!(
                    "demo: queueing a job for {}: install the child agent `hello`",
                    agent.sn
                );
                server.queue_job(&agent.sn, job);
                job_queued = true;
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                early_exit = Some(status);
                break;
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("cannot watch the agent: {e}")),
        }
    }
    match early_exit {
        Some(status) => say!("demo: the agent exited early: {status}"),
        None => match stop_agent(&mut child) {
            Some(status) => say!("demo: agent stopped: {status}"),
            None => say!("demo: could not get the agent's exit status"),
        },
    }

    remove_new_cgroups(&cgroups_before);
    print_summary(&server);
    let answered = |path: &str| server.requests_to(path).iter().any(|r| r.status == 200);
    let installed = server.agents().iter().any(|a| {
        a.job_results
            .get("demo-install-hello")
            .is_some_and(|r| r["errcode"] == 0)
    });
    let log = data_dir.join("logs").join("hello.log");
    if let Ok(text) = std::fs::read_to_string(&log) {
        say!("demo: the child's output, from {}:", log.display());
        for line in text.lines().take(5) {
            say!("  {line}");
        }
    }
    if answered("/agent/register") && answered("/agent/status") && installed {
        say!("demo: OK (the agent registered, reported, and installed and ran a child agent)");
        Ok(0)
    } else {
        say!("demo: FAILED (no register and status exchange, or the child was not installed)");
        Ok(1)
    }
}

/// The demo's child agent: says hello now and then, on its log.
const DEMO_CHILD: &str = "#!/bin/sh\n\
# A child agent of the BootAgent demo.\n\
while :; do echo \"hello from $BOOT_AGENT_NAME $BOOT_AGENT_VERSION, pid $$\"; sleep 5; done\n";

/// Lowercase hex SHA256, as a job's `checksum` wants it.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where cgroup hierarchies are mounted, and how deep and how many directories the
/// demo looks at (a host's tree is a few hundred).
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_DEPTH_MAX: usize = 8;
const CGROUP_DIRS_MAX: usize = 100_000;

/// Every directory under `CGROUP_ROOT`, within the bounds above.
fn cgroup_dirs() -> std::collections::BTreeSet<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    let mut pending = vec![(PathBuf::from(CGROUP_ROOT), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // file_type does not follow symlinks: a link is never walked into.
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) && found.len() < CGROUP_DIRS_MAX {
                found.insert(entry.path());
                if depth + 1 < CGROUP_DEPTH_MAX {
                    pending.push((entry.path(), depth + 1));
                }
            }
        }
    }
    found
}

/// Removes the cgroup directories that are new since `before`, deepest first. The
/// kernel refuses to remove a cgroup that still holds a process or a cgroup, so only
/// empty ones go.
fn remove_new_cgroups(before: &std::collections::BTreeSet<PathBuf>) {
    let mut new: Vec<PathBuf> = cgroup_dirs().difference(before).cloned().collect();
    new.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    let mut removed = 0;
    for dir in &new {
        match std::fs::remove_dir(dir) {
            Ok(()) => removed += 1,
            Err(e) => say!("demo: cgroup {} is left: {e}", dir.display()),
        }
    }
    if removed > 0 {
        say!("demo: removed the {removed} empty cgroup directories the agent made");
    }
}

/// Sends SIGTERM to the agent, waits up to 5 s, then kills it.
fn stop_agent(child: &mut Child) -> Option<ExitStatus> {
    say!("demo: sending SIGTERM to the agent (pid {})", child.id());
    let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
    // SAFETY: kill(2) on the pid of our own child; no memory effects.
    if pid <= 1 || unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        say!("demo: SIGTERM to {} failed", child.id());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(_) => break,
        }
    }
    say!("demo: the agent did not stop within 5 s: killing it");
    let _ = child.kill();
    child.wait().ok()
}
