//! A small, fast control server for `tests/bench_fleet.sh`: it answers `/agent/register`
//! and `/agent/status` of a whole fleet on loopback, runs a timeline of stages (normal,
//! connections refused, 503 with `Retry-After`), counts the requests of every second,
//! and prints them with each stage's peak and mean.
//!
//! ```text
//! cargo run --release --example fleetserver -- --listen 127.0.0.1:0 --step 60 \
//!     --stages cold=60,steady=120,refused=90,recover=120,throttled=60,recover=120 \
//!     --retry-after 30
//! ```
//!
//! It prints `listening on ADDR` first (the script starts the agents then), and the
//! report when the last stage ends. With `--started-file PATH`, the first stage lasts
//! from the server's start until PATH exists (the whole fleet is started) plus its
//! seconds. Stage kinds: `refused` closes the listening socket
//! (the kernel refuses connections; those attempts are not counted), `throttled`
//! answers every request 503 with `Retry-After`, any other name answers normally.
//! It reads each request whole and answers with `Connection: close`; it never parses
//! the JSON (a fleet benchmark measures the agents, not the server).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const NORMAL: u8 = 0;
const REFUSED: u8 = 1;
const THROTTLED: u8 = 2;
/// Worker threads answering connections.
const WORKERS: usize = 4;
/// Longest wait for `--started-file` (the time to start the fleet).
const START_S_MAX: u64 = 600;
/// Largest request head and body read.
const REQUEST_BYTES_MAX: usize = 64 * 1024;

struct Shared {
    start: Instant,
    mode: AtomicU8,
    step_s: u64,
    retry_after_s: u64,
    /// Per second since the start: registrations, status reports, 503 answers.
    bins: Mutex<Vec<[u32; 3]>>,
}

impl Shared {
    fn count(&self, kind: usize) {
        let second = self.start.elapsed().as_secs() as usize;
        if let Ok(mut bins) = self.bins.lock() {
            if let Some(bin) = bins.get_mut(second) {
                bin[kind] += 1;
            }
        }
    }
}

struct Stage {
    name: String,
    seconds: u64,
}

fn parse_stages(s: &str) -> Result<Vec<Stage>, String> {
    s.split(',')
        .map(|part| {
            let (name, secs) = part
                .split_once('=')
                .ok_or_else(|| format!("stage {part:?} is not NAME=SECONDS"))?;
            let seconds = secs
                .parse()
                .map_err(|_| format!("stage {name}: {secs:?} is not a whole number"))?;
            Ok(Stage {
                name: name.to_string(),
                seconds,
            })
        })
        .collect()
}

fn main() {
    if let Err(err) = run() {
        eprintln!("fleetserver: {err}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut step_s = 60u64;
    let mut retry_after_s = 30u64;
    let mut stages = "cold=60,steady=120".to_string();
    let mut started_file: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--step" => step_s = value.parse().map_err(|_| "--step: not a number")?,
            "--retry-after" => {
                retry_after_s = value.parse().map_err(|_| "--retry-after: not a number")?
            }
            "--stages" => stages = value,
            "--started-file" => started_file = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let stages = parse_stages(&stages)?;
    let total: u64 = stages.iter().map(|s| s.seconds).sum();
    let listener = TcpListener::bind(&listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        mode: AtomicU8::new(NORMAL),
        step_s,
        retry_after_s,
        bins: Mutex::new(vec![[0; 3]; (START_S_MAX + total) as usize + 60]),
    });
    let (tx, rx) = sync_channel::<TcpStream>(4096);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..WORKERS {
        let (shared, rx) = (shared.clone(), rx.clone());
        thread::spawn(move || worker(&shared, &rx));
    }
    {
        let shared = shared.clone();
        thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                if shared.mode.load(Ordering::SeqCst) == REFUSED {
                    listener = None; // the kernel refuses from now on
                    while shared.mode.load(Ordering::SeqCst) == REFUSED {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(addr) {
                        Ok(l) => listener.insert(l),
                        Err(err) => {
                            eprintln!("fleetserver: cannot listen again on {addr}: {err}");
                            thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    },
                };
                if let Ok((stream, _)) = l.accept() {
                    if tx.send(stream).is_err() {
                        return;
                    }
                }
            }
        });
    }
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();

    let mut spans = Vec::new();
    let mut at = 0u64;
    for (i, stage) in stages.iter().enumerate() {
        // The first stage counts from the moment the whole fleet is started (the
        // file appears), so that a slow start of N processes does not eat into it.
        if let (0, Some(path)) = (i, &started_file) {
            while !std::path::Path::new(path).exists() {
                if shared.start.elapsed().as_secs() >= START_S_MAX {
                    break; // the bins would not hold the rest
                }
                thread::sleep(Duration::from_millis(100));
            }
            at = shared.start.elapsed().as_secs();
        }
        let mode = match stage.name.as_str() {
            "refused" => REFUSED,
            "throttled" => THROTTLED,
            _ => NORMAL,
        };
        shared.mode.store(mode, Ordering::SeqCst);
        if mode == REFUSED {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1)); // wakes accept
        }
        eprintln!(
            "[fleetserver] t={at:>4} s: stage {} for {} s",
            stage.name, stage.seconds
        );
        let until = shared.start + Duration::from_secs(at + stage.seconds);
        thread::sleep(until.saturating_duration_since(Instant::now()));
        let from = if i == 0 { 0 } else { at };
        spans.push((stage.name.clone(), from, at + stage.seconds));
        at += stage.seconds;
    }
    let bins = shared.bins.lock().map_err(|_| "lock")?.clone();
    report(&bins, &spans, step_s, retry_after_s);
    Ok(())
}

fn worker(shared: &Shared, rx: &Mutex<Receiver<TcpStream>>) {
    loop {
        let stream = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut stream) = stream else { return };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let Some(path) = read_request(&mut stream) else {
            continue;
        };
        let (status, body, extra) = if shared.mode.load(Ordering::SeqCst) == THROTTLED {
            shared.count(2);
            (
                "503 Service Unavailable",
                "{\"status\":1}".to_string(),
                format!("Retry-After: {}\r\n", shared.retry_after_s),
            )
        } else if path == "/agent/register" {
            shared.count(0);
            (
                "200 OK",
                format!("{{\"status\":0,\"step\":{}}}", shared.step_s),
                String::new(),
            )
        } else if path == "/agent/status" {
            shared.count(1);
            (
                "200 OK",
                "{\"status\":0,\"jobs\":[]}".to_string(),
                String::new(),
            )
        } else {
            ("404 Not Found", "{}".to_string(), String::new())
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes());
    }
}

/// Reads one request whole; returns its path.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > REQUEST_BYTES_MAX {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1)?.to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
        .min(REQUEST_BYTES_MAX);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(path)
}

/// The per-second series and each stage's figures.
fn report(bins: &[[u32; 3]], spans: &[(String, u64, u64)], step_s: u64, retry_after_s: u64) {
    let per_second: Vec<u32> = bins.iter().map(|b| b[0] + b[1] + b[2]).collect();
    println!("requests per second (registrations + reports + 503 answers), 10 s a line:");
    for (name, from, to) in spans {
        for line_start in (*from..*to).step_by(10) {
            let end = (line_start + 10).min(*to);
            let row: Vec<String> = (line_start..end)
                .map(|s| format!("{:>4}", per_second[s as usize]))
                .collect();
            println!("  t={line_start:>4} s {name:<10}{}", row.join(""));
        }
    }
    let figures = |from: u64, to: u64| {
        let window = &per_second[from as usize..to as usize];
        let sum: u64 = window.iter().map(|&n| u64::from(n)).sum();
        let mean = sum as f64 / window.len().max(1) as f64;
        let peak = window.iter().copied().max().unwrap_or(0);
        // The busiest 5 s, per second: the same peak without most of the noise of
        // one-second counts (a spread fleet's counts are Poisson-like).
        let peak5 = window
            .windows(5)
            .map(|w| w.iter().map(|&n| f64::from(n)).sum::<f64>() / 5.0)
            .fold(0.0, f64::max);
        (sum, mean, peak, peak5)
    };
    println!("stage        seconds  requests  mean/s  peak/s  peak/mean  peak5s/mean");
    let mut steady_mean = None;
    for (name, from, to) in spans {
        let (sum, mean, peak, peak5) = figures(*from, *to);
        let (ratio, ratio5) = if mean > 0.0 {
            (f64::from(peak) / mean, peak5 / mean)
        } else {
            (0.0, 0.0)
        };
        println!(
            "{name:<12} {:>7}  {sum:>8}  {mean:>6.1}  {peak:>6}  {ratio:>9.2}  {ratio5:>11.2}",
            to - from
        );
        if name == "steady" {
            steady_mean = Some(mean);
        }
    }
    let registrations: u32 = bins.iter().map(|b| b[0]).sum();
    let throttled: u32 = bins.iter().map(|b| b[2]).sum();
    println!("registrations {registrations}, 503 answers {throttled}, step {step_s} s");
    let Some(steady_mean) = steady_mean else {
        return;
    };
    let mut previous = "";
    for (name, from, to) in spans {
        let (_, mean, peak, peak5) = figures(*from, *to);
        if name == "steady" {
            let ratio = f64::from(peak) / mean.max(f64::MIN_POSITIVE);
            println!(
                "TARGET steady peak/mean {ratio:.2} (target <= 2.0): {}",
                verdict(ratio <= 2.0)
            );
        } else if name.starts_with("recover") {
            let ratio = f64::from(peak) / steady_mean.max(f64::MIN_POSITIVE);
            println!(
                "TARGET {name} at t={from} s: peak {peak}/s = {ratio:.2} x steady mean (target <= 2.0): {}; busiest 5 s {:.2} x",
                verdict(ratio <= 2.0),
                peak5 / steady_mean.max(f64::MIN_POSITIVE)
            );
            // Every agent must come back once within one wait: the returning
            // requests average N / (mean wait), whatever the agents do.
            let floor = match previous {
                "refused" => step_s as f64 / (0.75 * step_s.min(300) as f64),
                "throttled" => step_s as f64 / (1.25 * retry_after_s.clamp(1, step_s) as f64),
                _ => 0.0,
            };
            if floor > 0.0 {
                println!(
                    "       the returning wave alone averages {floor:.2} x steady mean (waits of {} after {previous})",
                    if previous == "refused" {
                        "50-100 % of min(step, 300 s)"
                    } else {
                        "Retry-After plus 0-50 %"
                    }
                );
            }
        }
        previous = name;
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}
