//! A simulation of the whole agent, after TigerBeetle's VOPR: the real loop, core,
//! supervisor, job runner and metafile, under a clock that moves only when the loop
//! sleeps (`Clock::wait`), with a fake control server and fake children (the
//! supervisor's `Processes` seam) driven by one seeded generator, for a simulated
//! month. The server goes down for minutes to days, answers 503 with `Retry-After`,
//! 401, 500 and garbage, is slow, and floods the agent with jobs; children crash at
//! random, some in loops, some ignore `SIGTERM`; the wall clock starts in 1970 and
//! jumps. Checked all along and at the end:
//!
//! - two status reports that got an HTTP answer are never less than 1 s apart (the
//!   first report after a registration aside, docs/protocol.md section 3);
//! - no job result and no event is delivered again once a report carrying it was
//!   answered 200, and none is lost: every job sent has its result acknowledged or
//!   counted in a `dropped` event, every crash its event;
//! - no registration beyond the first, but after a rejection (401) that asks for one;
//! - memory stays bounded: the events and results of a report never exceed their
//!   bounds;
//! - every deadline is met: the loop never spins at one instant, and while the server
//!   is healthy a report is answered at least every step and a half.
//!
//! A failure names its seed; `SIM_SEED=N cargo test --lib simulation` runs that one
//! again (`SIM_SEEDS=K` runs K seeds, `SIM_DAYS=D` another length).
//! (Compiled only under `#[cfg(test)]`.)

use crate::agent::{Core, Facts, Outcome, Start};
use crate::clock::Clock;
use crate::control::local::LocalCommands;
use crate::download::DownloadLimits;
use crate::event_loop::{EventLoop, Exit};
use crate::events::Event;
use crate::http::Exchange;
use crate::jobrun::JobRunner;
use crate::limits::Limits;
use crate::meta::{Meta, MetaStore};
use crate::reslimit::Mechanism;
use crate::rng::Rng;
use crate::servers::Servers;
use crate::supervisor::{Processes, Supervisor};
use crate::sys::{Reaped, SpawnSpec};
use crate::timers::Timers;
use crate::unpack::UnpackLimits;
use crate::wheel::Millis;
use crate::wire::HostInfo;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};

const SECOND: Millis = 1_000;
const MINUTE: Millis = 60 * SECOND;
const HOUR: Millis = 60 * MINUTE;
const DAY: Millis = 24 * HOUR;
/// The children of the simulated host.
const CHILDREN: [&str; 4] = ["web", "db", "flaky", "stubborn"];
/// The last stretch of the month: a healthy server, no crash, no job, so that
/// everything owed is delivered before the end is judged.
const QUIET_END: Millis = 2 * HOUR;
/// Happenings kept for the failure message.
const TRACE_LINES: usize = 40;
/// Waits at one instant without any event before the loop counts as spinning.
const SPIN_MAX: u32 = 10_000;

/// What is due in the simulated world, in order of time (then of scheduling).
#[derive(Debug)]
enum Due {
    /// The answer to the exchange in flight reaches the loop.
    Answer(Outcome),
    /// A child process exits (crash or the end of a stop).
    Exit(i32, Reaped),
    /// The server's mood changes.
    MoodEnds,
    /// The wall clock jumps (NTP after a boot in 1970).
    WallJump(i64),
    /// The end: `SIGTERM` to the agent.
    Stop,
}

/// How the server behaves for a while.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mood {
    Healthy,
    /// Connection refused.
    Down,
    /// 503 with a `Retry-After`.
    Throttling,
    /// Half the answers are 500, garbage or slow.
    Flaky,
}

/// A fake child process.
#[derive(Debug)]
struct Proc {
    name: String,
    exited: Option<Reaped>,
    /// Asked to stop (so its exit is no crash).
    stopping: bool,
    ignores_term: bool,
}

/// The server's and the checker's memory.
#[derive(Default)]
struct Server {
    mood: Option<Mood>,
    healthy_since: Millis,
    registered: u32,
    rejections: u32,
    /// Job id → name, for every job sent.
    jobs_sent: BTreeMap<String, String>,
    next_job: u64,
    /// Results and events already acknowledged (a 200 answered a report carrying them).
    results_acked: BTreeSet<String>,
    /// Every event acknowledged, in order, and those of the last report answered 200.
    events_acked: Vec<String>,
    last_acked_events: Vec<String>,
    dropped_results: u64,
    dropped_events: u64,
    /// When the last status report that got an HTTP answer was sent, and whether the
    /// next one is the first after a registration.
    last_answered_sent: Option<Millis>,
    after_register: bool,
    last_ok_at: Option<Millis>,
    step_s: u64,
    /// The children as the last report listed them.
    names: BTreeSet<String>,
    /// Reports answered 200, and exchanges of any kind.
    reports_ok: u64,
    exchanges: u64,
}

struct World {
    seed: u64,
    now: Millis,
    wall_ms: i64,
    end: Millis,
    rng: Rng,
    seq: u64,
    agenda: BTreeMap<(Millis, u64), Due>,
    events_tx: SyncSender<Event>,
    http_rx: Receiver<Exchange>,
    server: Server,
    procs: BTreeMap<i32, Proc>,
    next_pid: i32,
    crashes: u64,
    stopped: bool,
    spins: u32,
    limits: Limits,
    /// The last happenings, for the failure message.
    trace: std::collections::VecDeque<String>,
}

impl World {
    fn at(&mut self, at: Millis, due: Due) {
        self.seq += 1;
        self.agenda.insert((at, self.seq), due);
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.below_incl(n - 1)
        }
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn fail(&self, what: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "simulation seed {} failed at {} ms ({:.2} days): {what}\nlast happenings:\n  {}\n(run it again with SIM_SEED={})",
            self.seed,
            self.now,
            self.now as f64 / DAY as f64,
            trace.join("\n  "),
            self.seed
        );
    }

    fn note(&mut self, what: String) {
        if self.trace.len() >= TRACE_LINES {
            self.trace.pop_front();
        }
        let line = format!("{:>12} ms  {what}", self.now);
        self.trace.push_back(line);
    }

    fn quiet(&self) -> bool {
        self.now + QUIET_END >= self.end
    }

    /// The next mood and how long it lasts.
    fn next_mood(&mut self) {
        let (mood, lasts) = if self.quiet() {
            (Mood::Healthy, DAY)
        } else {
            match self.below(100) {
                0..=59 => (Mood::Healthy, HOUR + self.below(2 * DAY)),
                60..=74 => (Mood::Down, MINUTE + self.below(3 * HOUR)),
                75..=77 => (Mood::Down, DAY + self.below(2 * DAY)),
                78..=89 => (Mood::Throttling, MINUTE + self.below(HOUR)),
                _ => (Mood::Flaky, MINUTE + self.below(6 * HOUR)),
            }
        };
        if mood == Mood::Healthy && self.server.mood != Some(Mood::Healthy) {
            self.server.healthy_since = self.now;
        }
        self.server.mood = Some(mood);
        self.note(format!("server {mood:?} for {lasts} ms"));
        let until = self.now + lasts;
        self.at(
            until
                .min(self.end.saturating_sub(QUIET_END))
                .max(self.now + 1),
            Due::MoodEnds,
        );
    }

    /// A child's lifetime: some crash at once (crash loops), most run for hours.
    fn lifetime(&mut self, name: &str) -> Millis {
        match name {
            "flaky" if self.chance(700) => 200 + self.below(5 * SECOND),
            _ if self.chance(50) => 100 + self.below(3 * SECOND),
            _ => HOUR + self.below(3 * DAY),
        }
    }

    fn exit(&mut self, pid: i32, how: Reaped) {
        let Some(proc) = self.procs.get_mut(&pid) else {
            return;
        };
        if proc.exited.is_some() {
            return;
        }
        if !proc.stopping {
            self.crashes += 1;
        }
        proc.exited = Some(how);
        let line = format!("pid {pid} ({}) exits: {how:?}", proc.name);
        self.note(line);
        self.send(Event::Signal(libc::SIGCHLD));
    }

    fn send(&self, event: Event) {
        if let Err(err) = self.events_tx.try_send(event) {
            self.fail(format!("the loop's channel refused an event: {err}"));
        }
    }

    /// The server takes a request: records it, checks it, and decides its answer.
    fn serve(&mut self, exchange: Exchange) {
        self.server.exchanges += 1;
        let path = exchange
            .url
            .rsplit_once("/agent/")
            .map(|(_, p)| p)
            .unwrap_or("");
        let mood = self.server.mood.unwrap_or(Mood::Healthy);
        let delay = 5 + self.below(300);
        let (outcome, delay) = match mood {
            Mood::Down => (Outcome::Failed("connection refused".into()), 1),
            Mood::Throttling => (
                Outcome::Answer {
                    status: 503,
                    body: Vec::new(),
                    retry_after_s: Some(1 + self.below(120)),
                },
                delay,
            ),
            Mood::Flaky if self.chance(500) => match self.below(3) {
                0 => (answer(500, b"oops".to_vec()), delay),
                1 => (answer(200, b"<html>not json".to_vec()), delay),
                _ => (
                    Outcome::Failed("timed out".into()),
                    self.limits.exchange_timeout_ms,
                ),
            },
            _ => match path {
                "register" => {
                    self.server.registered += 1;
                    if self.server.registered > 1 + self.server.rejections {
                        self.fail(format!(
                            "registration {} after {} rejections",
                            self.server.registered, self.server.rejections
                        ));
                    }
                    self.server.after_register = true;
                    (
                        answer(200, json!({"status": 0}).to_string().into_bytes()),
                        delay,
                    )
                }
                "status" => self.status(&exchange.body, delay),
                other => self.fail(format!("request to an unknown path {other:?}")),
            },
        };
        let shown = match &outcome {
            Outcome::Answer { status, .. } => format!("HTTP {status}"),
            Outcome::Failed(why) => why.clone(),
        };
        self.note(format!("{path} ({mood:?}): {shown}"));
        let answered = matches!(outcome, Outcome::Answer { .. });
        if path == "status" && answered {
            if let Some(last) = self.server.last_answered_sent {
                let gap = self.now.saturating_sub(last);
                if gap < self.limits.report_gap_min_ms && !self.server.after_register {
                    self.fail(format!("two answered reports {gap} ms apart"));
                }
            }
            self.server.last_answered_sent = Some(self.now);
            self.server.after_register = false;
        }
        let at = self.now + delay;
        self.at(at, Due::Answer(outcome));
    }

    /// A status report that the server will answer (not down, not throttling).
    fn status(&mut self, body: &[u8], delay: Millis) -> (Outcome, Millis) {
        let report: Value = match serde_json::from_slice(body) {
            Ok(report) => report,
            Err(err) => self.fail(format!("a report that is not JSON: {err}")),
        };
        let results = report["jobs"].as_array().cloned().unwrap_or_default();
        let events = report["events"].as_array().cloned().unwrap_or_default();
        if results.len() > self.limits.pending_results_max {
            self.fail(format!("{} results in one report", results.len()));
        }
        if events.len() > self.limits.pending_events_max {
            self.fail(format!("{} events in one report", events.len()));
        }
        if let Some(agents) = report["agents"].as_array() {
            self.server.names = agents
                .iter()
                .filter_map(|a| a["name"].as_str().map(str::to_string))
                .collect();
        }
        if self.chance(3) && !self.quiet() {
            self.server.rejections += 1;
            return (answer(401, b"{}".to_vec()), delay);
        }
        // Answered 200: what it carried is acknowledged; none of it may come again.
        for result in &results {
            let id = result["id"].as_str().unwrap_or_default().to_string();
            if !self.server.jobs_sent.contains_key(&id) {
                self.fail(format!("a result for a job never sent: {result}"));
            }
            if !self.server.results_acked.insert(id) {
                self.fail(format!(
                    "a result delivered again after it was acknowledged: {result}"
                ));
            }
        }
        for event in &events {
            if event["event"] == "dropped" {
                let count = event["count"].as_u64().unwrap_or(0);
                match event["what"].as_str() {
                    Some("results") => self.server.dropped_results += count,
                    _ => self.server.dropped_events += count,
                }
                continue;
            }
            self.server.events_acked.push(event.to_string());
        }
        // Events have no id, and two alike can happen in one second; an acknowledged
        // queue sent again shows as the same run of events at the head of the next report.
        let shown: Vec<String> = events.iter().map(Value::to_string).collect();
        let last = &self.server.last_acked_events;
        if last.len() >= 2 && shown.len() >= last.len() && shown[..last.len()] == last[..] {
            self.fail(format!("acknowledged events sent again: {last:?}"));
        }
        self.server.last_acked_events = shown;
        self.server.reports_ok += 1;
        if let Some(last) = self.server.last_ok_at {
            let step_ms = self.server.step_s.max(1) * SECOND;
            let gap = self.now - last;
            let healthy = self.server.mood == Some(Mood::Healthy);
            let healthy_for = self.now - self.server.healthy_since;
            if healthy && healthy_for > 3 * step_ms && gap > step_ms + step_ms / 2 + 10 * SECOND {
                self.fail(format!(
                    "healthy for {healthy_for} ms, yet {gap} ms between answered reports (step {step_ms} ms)"
                ));
            }
        }
        self.server.last_ok_at = Some(self.now);
        self.server.step_s = report["step"].as_u64().unwrap_or(600);
        let jobs = if self.quiet() {
            Vec::new()
        } else {
            self.jobs()
        };
        let body = json!({"status": 0, "jobs": jobs}).to_string().into_bytes();
        (answer(200, body), delay)
    }

    /// Now and then a few jobs, rarely a flood of them.
    fn jobs(&mut self) -> Vec<Value> {
        let count = match self.below(1000) {
            0..=899 => 0,
            900..=989 => 1 + self.below(3),
            _ => 40 + self.below(80),
        };
        let names: Vec<String> = self.server.names.iter().cloned().collect();
        (0..count)
            .filter_map(|_| {
                self.server.next_job += 1;
                let id = format!("job-{}", self.server.next_job);
                let job = match self.below(10) {
                    0 => {
                        let step = [60, 300, 600, 1800][self.below(4) as usize];
                        json!({"id": id, "action": "config", "step": step})
                    }
                    n if !names.is_empty() => {
                        let name = &names[self.below(names.len() as u64) as usize];
                        let action = ["restart", "stop", "start"][(n % 3) as usize];
                        json!({"id": id, "action": action, "name": name})
                    }
                    _ => return None,
                };
                self.server.jobs_sent.insert(id, job["action"].to_string());
                Some(job)
            })
            .collect()
    }
}

fn answer(status: u16, body: Vec<u8>) -> Outcome {
    Outcome::Answer {
        status,
        body,
        retry_after_s: None,
    }
}

/// The world behind the clock and the processes.
#[derive(Clone)]
struct Sim(Arc<Mutex<World>>);

impl Sim {
    fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for Sim {
    fn now_ms(&self) -> Millis {
        self.world().now
    }

    fn wall_ms(&self) -> i64 {
        let world = self.world();
        world.wall_ms + world.now as i64
    }

    /// Serves what the loop sent, then hands it the next event, moving time to it;
    /// or moves time to `deadline` when nothing comes before it.
    fn wait<T>(
        &self,
        events: &Receiver<T>,
        deadline: Option<Millis>,
    ) -> Result<T, RecvTimeoutError> {
        let mut world = self.world();
        loop {
            while let Ok(exchange) = world.http_rx.try_recv() {
                world.serve(exchange);
            }
            match events.try_recv() {
                Ok(event) => {
                    world.spins = 0;
                    return Ok(event);
                }
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let next = world.agenda.keys().next().map(|&(at, _)| at);
            if let Some(at) = next.filter(|&at| deadline.is_none_or(|d| at <= d)) {
                if let Some((_, due)) = world.agenda.pop_first() {
                    world.now = world.now.max(at);
                    world.happen(due);
                }
                continue;
            }
            let Some(deadline) = deadline else {
                world.fail("nothing will ever happen and the loop waits forever".into());
            };
            if deadline <= world.now {
                world.spins += 1;
                if world.spins > SPIN_MAX {
                    world.fail("the loop spins: every wait is already due".into());
                }
            } else {
                world.spins = 0;
            }
            world.now = world.now.max(deadline);
            return Err(RecvTimeoutError::Timeout);
        }
    }
}

impl World {
    fn happen(&mut self, due: Due) {
        match due {
            Due::Answer(outcome) => self.send(Event::Exchanged(outcome)),
            Due::Exit(pid, how) => self.exit(pid, how),
            Due::MoodEnds => self.next_mood(),
            Due::WallJump(ms) => self.wall_ms += ms,
            Due::Stop => {
                self.stopped = true;
                self.send(Event::Signal(libc::SIGTERM));
            }
        }
    }
}

impl Processes for Sim {
    fn spawn(&self, spec: SpawnSpec<'_>) -> io::Result<i32> {
        let mut world = self.world();
        let name = spec
            .cwd
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if world.chance(5) {
            return Err(io::Error::other("simulated: no memory to fork"));
        }
        world.next_pid += 1;
        let pid = world.next_pid;
        let ignores_term = name == "stubborn" || world.chance(100);
        world.procs.insert(
            pid,
            Proc {
                name: name.clone(),
                exited: None,
                stopping: false,
                ignores_term,
            },
        );
        if !world.quiet() {
            let at = world.now + world.lifetime(&name);
            let code = 1 + world.below(2) as i32;
            world.at(at, Due::Exit(pid, Reaped::Code(code)));
        }
        Ok(pid)
    }

    fn signal_group(&self, pgid: i32, signal: i32) -> io::Result<()> {
        let mut world = self.world();
        let Some(proc) = world.procs.get_mut(&pgid) else {
            return Ok(());
        };
        if proc.exited.is_some() {
            return Ok(());
        }
        match signal {
            libc::SIGKILL => {
                proc.stopping = true;
                let at = world.now;
                world.at(at, Due::Exit(pgid, Reaped::Signal(libc::SIGKILL)));
            }
            libc::SIGTERM if !proc.ignores_term => {
                proc.stopping = true;
                let at = world.now + world.below(3 * SECOND);
                world.at(at, Due::Exit(pgid, Reaped::Signal(libc::SIGTERM)));
            }
            libc::SIGTERM => proc.stopping = true,
            _ => {}
        }
        Ok(())
    }

    fn signal_process(&self, pid: i32, signal: i32) -> io::Result<()> {
        self.signal_group(pid, signal)
    }

    fn process_group(&self, pid: i32) -> Option<i32> {
        self.world().procs.contains_key(&pid).then_some(pid)
    }

    fn reap(&self, pid: i32) -> Option<Reaped> {
        let mut world = self.world();
        let how = world.procs.get(&pid)?.exited?;
        world.procs.remove(&pid);
        Some(how)
    }

    fn parent_of(&self, pid: i32) -> Option<i32> {
        let world = self.world();
        world
            .procs
            .contains_key(&pid)
            .then_some(std::process::id() as i32)
    }

    fn become_subreaper(&self) -> io::Result<()> {
        Ok(())
    }

    fn peek_exited_child(&self) -> Option<i32> {
        let world = self.world();
        let exited = world.procs.iter().find(|(_, p)| p.exited.is_some());
        exited.map(|(&pid, _)| pid)
    }

    fn children_of(&self, _parent: u32) -> Vec<i32> {
        let world = self.world();
        world.procs.keys().copied().collect()
    }

    fn marked_processes(&self, _markers: &[&[u8]]) -> Vec<i32> {
        Vec::new()
    }

    fn kill_marked_processes(&self, _marker: &[u8]) -> usize {
        0
    }
}

/// A data directory on a memory file system where there is one (a month of metafile
/// writes, each with fsync), holding the children's `run` files.
fn data_dir(seed: u64) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("bootagent-sim-{}-{seed}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    for name in CHILDREN {
        let version = dir.join("agents").join(name).join("1.0");
        fs::create_dir_all(&version).expect("agent dir");
        let run = version.join("run");
        fs::write(&run, "#!/bin/sh\nexec sleep 1000\n").expect("run");
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("1.0", dir.join("agents").join(name).join("current"))
            .expect("current");
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Runs one simulated month (or `days`) with `seed`; panics, naming the seed, when an
/// invariant breaks. Returns a line of figures.
fn simulate(seed: u64, days: u64) -> String {
    let limits = Limits::default();
    let dir = data_dir(seed);
    let (events_tx, events_rx) = mpsc::sync_channel::<Event>(limits.loop_channel_max);
    let (http_tx, http_rx) = mpsc::sync_channel::<Exchange>(1);
    let end = days * DAY;
    let mut world = World {
        seed,
        now: 0,
        // A host that boots in 1970; NTP fixes its clock a while later.
        wall_ms: 0,
        end,
        rng: Rng::from_seed(seed),
        seq: 0,
        agenda: BTreeMap::new(),
        events_tx: events_tx.clone(),
        http_rx,
        server: Server::default(),
        procs: BTreeMap::new(),
        next_pid: 1000,
        crashes: 0,
        stopped: false,
        spins: 0,
        limits: limits.clone(),
        trace: Default::default(),
    };
    world.next_mood();
    let jump_at = world.below(DAY);
    world.at(jump_at, Due::WallJump(1_763_700_000_000));
    world.at(end, Due::Stop);
    let sim = Sim(Arc::new(Mutex::new(world)));

    // The SN sets the agent's phase in the step: from the seed, so a seed repeats.
    let sn = format!("00000000-0000-4000-8000-{:012x}", seed & 0xffff_ffff_ffff);
    let meta = Meta::new(sn, String::new(), 600);
    let store = MetaStore::new(&dir, limits.meta_bytes_max);
    let servers = Servers::new(
        crate::addr::parse_list("sim.example:80").expect("address"),
        Vec::new(),
        Vec::new(),
    );
    let facts = Facts {
        hostname: "sim".into(),
        version: "bootagent-sim".into(),
        host: HostInfo {
            os: "linux".into(),
            arch: "x86_64".into(),
            kernel: "6.1.0".into(),
            cpus: 2,
            mem_kb: 1_000_000,
            boot_id: "sim".into(),
        },
    };
    let core = Core::new(
        limits.clone(),
        facts,
        meta,
        servers,
        Rng::from_seed(seed ^ 0x5eed),
        0,
        Start::Boot,
    );
    let mut supervisor = Supervisor::with_processes(
        &dir,
        (Mechanism::Proc, None),
        None,
        2,
        Box::new(sim.clone()),
    );
    let skipped = supervisor.discover(&BTreeSet::new(), 0, sim.wall_s());
    assert!(
        skipped.is_empty(),
        "seed {seed}: children not started: {skipped:?}"
    );
    let jobs = JobRunner::start(
        &dir,
        DownloadLimits::default(),
        UnpackLimits::default(),
        events_tx,
    )
    .expect("job worker");
    let exit = EventLoop {
        core,
        supervisor,
        jobs,
        store: &store,
        state_file: dir.join(crate::status::STATE_FILE),
        clock: &sim,
        timers: Timers::new(0),
        events: events_rx,
        http: http_tx,
        log: crate::logging::LogHandle::none(),
        local: LocalCommands::new(limits.control_clients_max),
        save_retry_ms: limits.meta_save_retry_ms,
        save_retry_at: None,
        save_failures: 0,
        data_dir: dir.clone(),
        self_probation: None,
    }
    .run();

    let world = sim.world();
    if !matches!(exit, Exit::Signalled(libc::SIGTERM)) {
        world.fail(format!("the loop ended with {exit:?}"));
    }
    if !world.stopped {
        world.fail("the loop ended before the stop".into());
    }
    if let Some((pid, proc)) = world.procs.iter().find(|(_, p)| p.exited.is_none()) {
        world.fail(format!(
            "{} (pid {pid}) still runs after the shutdown",
            proc.name
        ));
    }
    let server = &world.server;
    let results_owed = server.jobs_sent.len() as u64;
    let results_seen = server.results_acked.len() as u64 + server.dropped_results;
    if results_seen < results_owed {
        let missing: Vec<&String> = (server.jobs_sent.keys())
            .filter(|id| !server.results_acked.contains(*id))
            .take(5)
            .collect();
        world.fail(format!(
            "{results_owed} jobs sent, {} results acknowledged and {} dropped; missing e.g. {missing:?}",
            server.results_acked.len(),
            server.dropped_results
        ));
    }
    let crash_events = (server.events_acked.iter())
        .filter(|e| e.contains("\"event\":\"exited\"") || e.contains("\"event\":\"killed\""))
        .count() as u64;
    if crash_events + server.dropped_events < world.crashes {
        world.fail(format!(
            "{} crashes, {crash_events} exit events acknowledged and {} dropped",
            world.crashes, server.dropped_events
        ));
    }
    let figures = format!(
        "seed {seed}: {days} days, {} exchanges, {} reports answered 200, {} registrations, \
         {} jobs, {} crashes, {} events acknowledged ({} dropped)",
        server.exchanges,
        server.reports_ok,
        server.registered,
        server.jobs_sent.len(),
        world.crashes,
        server.events_acked.len(),
        server.dropped_events
    );
    drop(world);
    let _ = fs::remove_dir_all(&dir);
    figures
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn simulation_of_a_month_keeps_every_invariant() {
    let days = env_u64("SIM_DAYS").unwrap_or(30);
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = crate::rng::Rng::from_entropy().next_u64() % 1_000_000;
            (0..env_u64("SIM_SEEDS").unwrap_or(1))
                .map(|i| first + i)
                .collect()
        }
    };
    for seed in seeds {
        eprintln!("simulation: seed {seed} (SIM_SEED={seed} repeats it)");
        eprintln!("{}", simulate(seed, days));
    }
}
