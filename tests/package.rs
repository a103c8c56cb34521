//! Packaging and init integration (`package/`): the sysvinit script runs a real
//! BootAgent against the reference server on loopback, the `.deb` and `.tar.gz` hold the
//! expected files with the expected modes, `systemd-analyze verify` accepts the unit,
//! and the other init files parse.
//!
//! These shell out to `package/package.sh`, `dpkg-deb`, `start-stop-daemon`, `tar`,
//! `sha256sum` and `systemd-analyze`; a missing tool fails the test, naming the Debian
//! package to install (`cross/ci.sh` installs them all).

#[allow(unused_imports)] // each test file uses its own part of the harness
mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails the test when `tool` is not installed (in PATH, or the sbin directories that
/// the init script adds to its PATH).
fn require(tool: &str, package: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file());
    assert!(
        found,
        "tests/package.rs needs {tool}: apt-get install {package} (cross/ci.sh does)"
    );
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The permission bits of a file.
fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The sysvinit script, run with its settings read from `defaults`.
fn sysvinit(defaults: &Path, action: &str) -> Output {
    let mut command = Command::new("sh");
    command
        .arg(repo().join("package/init/sysvinit/bootagent"))
        .arg(action)
        .env("BOOTAGENT_DEFAULTS", defaults);
    for var in [
        "DAEMON",
        "DATA_DIR",
        "LOG_FILE",
        "PIDFILE",
        "ARGS",
        "STOP_TIMEOUT",
    ] {
        command.env_remove(var);
    }
    run(&mut command)
}

/// Stops the service of a defaults file when dropped, so that a failing test does not
/// leave an agent running in the background.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = sysvinit(self.0, "stop");
    }
}

fn process_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|name| name.trim().to_string())
}

/// Gone, or a zombie waiting for its new parent to reap it.
fn process_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn sysvinit_script_starts_reports_status_of_and_stops_a_real_bootagent() {
    require("start-stop-daemon", "dpkg");
    let server = start_server(Some(1));
    let scratch = Scratch::new("sysvinit");
    let pidfile = scratch.path.join("bootagent.pid");
    let defaults = scratch.path.join("default");
    fs::write(
        &defaults,
        format!(
            "DAEMON={}\nDATA_DIR={}\nLOG_FILE={}\nPIDFILE={}\nARGS=\"-S {} -v\"\n",
            env!("CARGO_BIN_EXE_bootagent"),
            scratch.data().display(),
            scratch.log().display(),
            pidfile.display(),
            server.addr()
        ),
    )
    .expect("write the defaults file");

    let status = sysvinit(&defaults, "status");
    assert_eq!(status.status.code(), Some(3), "status before start");
    assert!(text(&status.stdout).contains("bootagent is not running"));

    let _stop_on_drop = StopOnDrop(&defaults);
    let start = sysvinit(&defaults, "start");
    assert!(
        start.status.success(),
        "start failed: {}",
        text(&start.stderr)
    );
    assert!(
        wait_until(DEADLINE, || server
            .agents()
            .first()
            .is_some_and(|agent| agent.reports >= 1)),
        "the agent started by the init script did not register and report"
    );

    let status = sysvinit(&defaults, "status");
    assert_eq!(status.status.code(), Some(0), "status while running");
    let pid: u32 = fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid file holds a pid");
    assert!(
        text(&status.stdout).contains(&format!("bootagent is running (pid {pid})")),
        "status said: {}",
        text(&status.stdout)
    );
    assert_eq!(process_name(pid).as_deref(), Some("bootagent"));

    // A second start leaves the running agent alone.
    assert!(sysvinit(&defaults, "start").status.success());
    assert_eq!(
        fs::read_to_string(&pidfile).expect("pid file").trim(),
        pid.to_string()
    );
    assert_eq!(server.agents().len(), 1);

    let stop = sysvinit(&defaults, "stop");
    assert!(stop.status.success(), "stop failed: {}", text(&stop.stderr));
    assert!(
        wait_until(DEADLINE, || process_gone(pid)),
        "the agent still runs after stop"
    );
    assert!(!pidfile.exists(), "stop leaves the pid file behind");
    let log = fs::read_to_string(scratch.log()).expect("the agent's log file");
    assert!(log.contains("stopped"), "no clean stop in the log:\n{log}");
    assert_eq!(sysvinit(&defaults, "status").status.code(), Some(3));
    assert!(
        sysvinit(&defaults, "stop").status.success(),
        "a second stop"
    );
}

#[test]
fn sysvinit_script_refuses_to_start_an_agent_that_cannot_run() {
    require("start-stop-daemon", "dpkg");
    let version = text(&run(bootagent().arg("-V")).stdout);
    let scratch = Scratch::new("sysvinit-refuses");
    let defaults = scratch.path.join("default");
    let pidfile = scratch.path.join("bootagent.pid");
    fs::write(
        &defaults,
        format!(
            "DAEMON={}\nDATA_DIR={}\nLOG_FILE={}\nPIDFILE={}\n",
            env!("CARGO_BIN_EXE_bootagent"),
            scratch.data().display(),
            scratch.log().display(),
            pidfile.display(),
        ),
    )
    .expect("write the defaults file");
    let _stop_on_drop = StopOnDrop(&defaults);
    let start = sysvinit(&defaults, "start");
    if version.contains("compiled-in servers: none") {
        assert_eq!(start.status.code(), Some(1), "start with no server");
        assert!(
            text(&start.stderr).contains("problem: no server address"),
            "start said: {}",
            text(&start.stderr)
        );
        assert!(!pidfile.exists());
    } else {
        // Built with BOOT_SERVER_ADDR: it can run, so stop it again.
        assert!(start.status.success());
        assert!(sysvinit(&defaults, "stop").status.success());
    }
    let bogus = sysvinit(&defaults, "frobnicate");
    assert_eq!(bogus.status.code(), Some(3));
    assert!(text(&bogus.stderr).contains("usage:"));
}

/// A directory for what the tests here share, emptied at the first use in a run (its
/// name is fixed, so that runs do not pile up copies).
fn shared_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("package-shared");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("shared directory of tests/package.rs");
        dir
    })
}

/// The test's binary, stripped (packing 25 MB of debug information takes seconds).
fn stripped_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        require("strip", "binutils");
        let binary = shared_dir().join("bootagent");
        let strip = run(Command::new("strip")
            .arg("-o")
            .arg(&binary)
            .arg(env!("CARGO_BIN_EXE_bootagent")));
        assert!(strip.status.success(), "strip: {}", text(&strip.stderr));
        binary
    })
}

/// Runs package/package.sh BootAgent 1.2.1-1 on the test's binary, with `extra`
/// options, into a new directory under `scratch`; returns that directory.
fn package(scratch: &Path, extra: &[&str]) -> PathBuf {
    let out = scratch.join("out");
    let result = run(Command::new("bash")
        .arg(repo().join("package/package.sh"))
        .args(["BootAgent", "1.2.1-1", "--bin"])
        .arg(stripped_binary())
        .args(["--target", "x86_64-unknown-linux-musl", "--out"])
        .arg(&out)
        .args(extra));
    assert!(
        result.status.success(),
        "package/package.sh failed: {}",
        text(&result.stderr)
    );
    // A short summary: one line per file made, with its size.
    let summary = text(&result.stdout);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 2, "{summary}");
    assert!(
        lines
            .iter()
            .all(|line| line.starts_with("package/package.sh: ") && line.ends_with(" bytes")),
        "{summary}"
    );
    out
}

/// The plain packages, made once for the tests that look into them.
fn plain_packages() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| package(shared_dir(), &[]))
}

#[test]
fn deb_installs_into_a_scratch_root_with_the_expected_files_and_modes() {
    require("dpkg-deb", "dpkg");
    require("sha256sum", "coreutils");
    let scratch = Scratch::new("deb");
    let out = plain_packages();
    let deb = out.join("bootagent_1.2.1-1_amd64.deb");
    assert!(deb.is_file(), "no {}", deb.display());
    assert!(out.join("bootagent_1.2.1-1_amd64.deb.sha256").is_file());
    let check = run(Command::new("sha256sum")
        .args(["-c", "bootagent_1.2.1-1_amd64.deb.sha256"])
        .current_dir(out));
    assert!(check.status.success(), "{}", text(&check.stdout));

    let field =
        |name: &str| text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).stdout);
    assert_eq!(field("Package").trim(), "bootagent");
    assert_eq!(field("Version").trim(), "1.2.1-1");
    assert_eq!(field("Architecture").trim(), "amd64");

    let root = scratch.path.join("root");
    let unpack = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    assert!(unpack.status.success(), "{}", text(&unpack.stderr));
    for (path, expected) in [
        ("usr/sbin/bootagent", 0o755),
        ("lib/systemd/system/bootagent.service", 0o644),
        ("etc/init.d/bootagent", 0o755),
        ("etc/default/bootagent", 0o644),
        ("usr/share/doc/bootagent/README", 0o644),
        ("usr/share/doc/bootagent/copyright", 0o644),
        ("usr/share/doc/bootagent/changelog.Debian.gz", 0o644),
        ("usr/share/doc/bootagent/protocol.md.gz", 0o644),
        ("usr/share/lintian/overrides/bootagent", 0o644),
    ] {
        assert_eq!(mode(&root.join(path)), expected, "mode of /{path}");
    }
    // The protocol, whole; the changelog names this version and the maintainer.
    let gunzip = |path: &str| {
        let out = run(Command::new("gzip").arg("-dc").arg(root.join(path)));
        assert!(out.status.success(), "gzip -dc {path}");
        text(&out.stdout)
    };
    assert_eq!(
        gunzip("usr/share/doc/bootagent/protocol.md.gz"),
        fs::read_to_string(repo().join("docs/protocol.md")).expect("docs/protocol.md")
    );
    let changelog = gunzip("usr/share/doc/bootagent/changelog.Debian.gz");
    assert!(
        changelog.starts_with("bootagent (1.2.1-1) unstable; urgency=medium\n"),
        "{changelog}"
    );
    let maintainer = field("Maintainer");
    let maintainer = maintainer.trim();
    assert!(
        changelog.contains(&format!("\n -- {maintainer}  ")),
        "{changelog}"
    );
    assert!(
        maintainer.contains(" <") && maintainer.ends_with('>') && !maintainer.contains("localhost"),
        "Maintainer: {maintainer}"
    );
    let copyright =
        fs::read_to_string(root.join("usr/share/doc/bootagent/copyright")).expect("copyright");
    assert!(copyright.starts_with(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
    ));
    assert!(
        copyright.contains("\nLicense: MIT or Apache-2.0\n"),
        "{copyright}"
    );
    let installed = run(Command::new(root.join("usr/sbin/bootagent")).arg("-V"));
    assert!(text(&installed.stdout).starts_with("bootagent "));
    // Everything in the archive belongs to root.
    let contents = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout);
    assert!(
        contents.lines().all(|line| line.contains(" root/root ")),
        "{contents}"
    );

    let control = scratch.path.join("control");
    assert!(
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control))
            .status
            .success()
    );
    let conffiles = fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles, "/etc/default/bootagent\n/etc/init.d/bootagent\n");
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&control.join(script)), 0o755, "mode of {script}");
        // systemd through deb-systemd-helper and deb-systemd-invoke, which respect
        // policy-rc.d and the administrator's enable/disable; systemctl only reloads.
        let body = fs::read_to_string(control.join(script)).expect(script);
        for line in body.lines().filter(|line| line.contains("systemctl")) {
            assert!(
                line.trim_start().starts_with('#')
                    || line.contains("systemctl --system daemon-reload"),
                "{script} calls systemctl: {line}"
            );
        }
    }
    let helpers = |script: &str| fs::read_to_string(control.join(script)).expect(script);
    assert!(helpers("postinst").contains("deb-systemd-helper enable bootagent.service"));
    assert!(helpers("postinst").contains("deb-systemd-invoke restart bootagent.service"));
    assert!(helpers("prerm").contains("deb-systemd-invoke stop bootagent.service"));
    assert!(helpers("postrm").contains("deb-systemd-helper purge bootagent.service"));
}

#[test]
fn tarball_holds_the_binary_readme_and_every_init_integration() {
    require("tar", "tar");
    let out = plain_packages();
    let tarball = out.join("BootAgent-1.2.1-1-linux-x86_64.tar.gz");
    assert!(out
        .join("BootAgent-1.2.1-1-linux-x86_64.tar.gz.sha256")
        .is_file());
    let listing = text(&run(Command::new("tar").arg("-tvzf").arg(&tarball)).stdout);
    let top = "BootAgent-1.2.1-1-linux-x86_64";
    for (path, perms) in [
        ("bootagent", "-rwxr-xr-x"),
        ("README", "-rw-r--r--"),
        ("protocol.md", "-rw-r--r--"),
        ("init/systemd/bootagent.service", "-rw-r--r--"),
        ("init/sysvinit/bootagent", "-rwxr-xr-x"),
        ("init/sysvinit/bootagent.default", "-rw-r--r--"),
        ("init/openrc/bootagent", "-rwxr-xr-x"),
        ("init/openrc/bootagent.conf", "-rw-r--r--"),
        ("init/busybox/inittab", "-rw-r--r--"),
        ("init/openwrt/bootagent", "-rwxr-xr-x"),
        ("init/openwrt/bootagent.config", "-rw-r--r--"),
    ] {
        let line = listing
            .lines()
            .find(|line| line.ends_with(&format!(" {top}/{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the tarball:\n{listing}"));
        assert!(line.starts_with(perms), "{line}: expected {perms}");
        assert!(line.contains(" 0/0 "), "{line}: expected owner 0/0");
    }
}

#[test]
fn tls_packages_are_named_apart_and_replace_the_plain_ones() {
    require("dpkg-deb", "dpkg");
    let scratch = Scratch::new("deb-tls");
    let out = package(&scratch.path, &["--tls"]);
    assert!(out
        .join("BootAgent-1.2.1-1-linux-x86_64-tls.tar.gz")
        .is_file());
    let deb = out.join("bootagent-tls_1.2.1-1_amd64.deb");
    let control = text(&run(Command::new("dpkg-deb").arg("-f").arg(&deb)).stdout);
    for line in [
        "Package: bootagent-tls",
        "Provides: bootagent",
        "Conflicts: bootagent",
        "Replaces: bootagent",
    ] {
        assert!(
            control.lines().any(|l| l == line),
            "no {line:?} in:\n{control}"
        );
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    require("systemd-analyze", "systemd");
    let scratch = Scratch::new("systemd-unit");
    // verify checks that ExecStart's program exists: point it at the test's binary.
    let unit = fs::read_to_string(repo().join("package/init/systemd/bootagent.service"))
        .expect("the unit");
    assert!(unit.contains("ExecStart=/usr/sbin/bootagent "));
    let unit = unit.replace("/usr/sbin/bootagent", env!("CARGO_BIN_EXE_bootagent"));
    let path = scratch.path.join("bootagent.service");
    fs::write(&path, unit).expect("write the unit");
    let verify = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    let complaints = text(&verify.stderr);
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {complaints}"
    );
    // verify only warns (and exits 0) on unknown keys and bad values: none allowed.
    assert!(
        !complaints.contains("bootagent.service"),
        "systemd-analyze verify: {complaints}"
    );
    for setting in ["Restart=always", "KillMode=mixed", "TimeoutStopSec=30"] {
        assert!(
            fs::read_to_string(&path).expect("unit").contains(setting),
            "the unit lacks {setting}"
        );
    }
}

#[test]
fn every_init_file_parses() {
    let init = repo().join("package/init");
    for script in [
        "sysvinit/bootagent",
        "sysvinit/bootagent.default",
        "openrc/bootagent",
        "openrc/bootagent.conf",
        "openwrt/bootagent",
    ] {
        let check = run(Command::new("sh").arg("-n").arg(init.join(script)));
        assert!(check.status.success(), "{script}: {}", text(&check.stderr));
    }
    let inittab = fs::read_to_string(init.join("busybox/inittab")).expect("inittab");
    let entries: Vec<&str> = inittab
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .collect();
    assert_eq!(entries.len(), 1, "one inittab line: {entries:?}");
    let fields: Vec<&str> = entries[0].splitn(4, ':').collect();
    assert_eq!(
        fields.len(),
        4,
        "id:runlevels:action:process: {}",
        entries[0]
    );
    assert_eq!(fields[2], "respawn");
    assert!(fields[3].contains("exec /usr/sbin/bootagent $a "));
}

/// The process field of the BusyBox inittab line as shipped, with this test's binary,
/// data directory and log, and `extra` options added to its `a="…"`.
fn inittab_process(scratch: &Scratch, extra: &str) -> String {
    let inittab = fs::read_to_string(repo().join("package/init/busybox/inittab")).expect("inittab");
    let line = inittab
        .lines()
        .find_map(|line| line.strip_prefix("::respawn:"))
        .expect("a ::respawn: line");
    assert!(line.contains("a=\"-D /var/lib/bootagent\""), "{line}");
    line.replace("/usr/sbin/bootagent", env!("CARGO_BIN_EXE_bootagent"))
        .replace("/var/lib/bootagent", &scratch.data().display().to_string())
        .replace(
            "/var/log/bootagent.log",
            &scratch.log().display().to_string(),
        )
        .replace("a=\"-D ", &format!("a=\"{extra}-D "))
}

/// Runs an inittab process field as BusyBox init does (`/bin/sh -c "exec FIELD"`, since
/// it holds shell syntax), in a process group of its own, output to `out`.
fn start_as_busybox_init(process: &str, out: &Path) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let out = fs::File::create(out).expect("output file");
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {process}"))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("sh starts")
}

/// Kills a process group started by `start_as_busybox_init` when dropped.
struct KillGroup(u32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The names of a process's children.
fn children_of(pid: u32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|child| child.parse().ok())
        .filter_map(process_name)
        .collect()
}

#[test]
fn busybox_inittab_line_waits_with_one_line_without_a_server_and_runs_with_one() {
    let version = text(&run(bootagent().arg("-V")).stdout);
    if !version.contains("compiled-in servers: none") {
        return; // built with BOOT_SERVER_ADDR: it always has a server
    }
    // No server: one line saying why, then a wait (a `sleep`), not a respawn loop.
    let scratch = Scratch::new("busybox-waits");
    let out = scratch.path.join("console");
    let mut line = start_as_busybox_init(&inittab_process(&scratch, ""), &out);
    let _kill = KillGroup(line.id());
    assert!(
        wait_until(DEADLINE, || children_of(line.id()) == ["sleep"]),
        "the inittab line does not wait: {}",
        fs::read_to_string(&out).unwrap_or_default()
    );
    let console = fs::read_to_string(&out).expect("console output");
    assert_eq!(
        console,
        "bootagent: waiting, checking again every 60 s: problem: no server address: none \
         compiled in (BOOT_SERVER_ADDR), none given with -S on the first start, none from a \
         server\n"
    );
    assert!(
        line.try_wait().expect("wait").is_none(),
        "it exited: init would respawn it"
    );
    assert!(
        !scratch.data().join("meta.json").exists(),
        "it registered nowhere"
    );

    // With a server: BootAgent runs in the line's own process (exec).
    let server = start_server(Some(1));
    let scratch = Scratch::new("busybox-runs");
    let process = inittab_process(&scratch, &format!("-S {} ", server.addr()));
    let mut line = start_as_busybox_init(&process, &scratch.path.join("console"));
    let _kill = KillGroup(line.id());
    assert!(
        wait_until(DEADLINE, || server
            .agents()
            .first()
            .is_some_and(|agent| agent.reports >= 1)),
        "the agent of the inittab line did not register and report"
    );
    assert_eq!(process_name(line.id()).as_deref(), Some("bootagent"));
    let log = fs::read_to_string(scratch.log()).expect("the agent logs to -L");
    assert!(!log.is_empty());
    let _ = Command::new("kill").arg(line.id().to_string()).status();
    let status = line.wait().expect("wait");
    assert!(status.success(), "SIGTERM: {status:?}");
}

/// The OpenWrt script's start_service, with procd's and uci's functions stubbed: what
/// it prints and the procd calls it makes.
fn openwrt_start_service(servers: &str, data: &Path) -> (bool, String) {
    let script = format!(
        ". {script}\n\
         PROG={bin}\n\
         config_load() {{ :; }}\n\
         config_get() {{ case $3 in servers) eval \"$1=\\\"{servers}\\\"\" ;; *) eval \"$1=\\\"{data}\\\"\" ;; esac; }}\n\
         procd_open_instance() {{ echo procd_open_instance; }}\n\
         procd_set_param() {{ echo \"procd_set_param $*\"; }}\n\
         procd_append_param() {{ echo \"procd_append_param $*\"; }}\n\
         procd_close_instance() {{ echo procd_close_instance; }}\n\
         logger() {{ shift 3; echo \"logger: $*\"; }}\n\
         start_service\n",
        script = repo().join("package/init/openwrt/bootagent").display(),
        bin = env!("CARGO_BIN_EXE_bootagent"),
        data = data.display(),
    );
    let out = run(Command::new("sh").arg("-c").arg(script));
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn openwrt_script_starts_nothing_without_a_server_and_says_so_once() {
    let version = text(&run(bootagent().arg("-V")).stdout);
    let scratch = Scratch::new("openwrt");
    if version.contains("compiled-in servers: none") {
        let (ok, said) = openwrt_start_service("", &scratch.data());
        assert!(!ok, "start_service succeeded without a server:\n{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.starts_with("logger: not started: no server address"),
            "{said}"
        );
        assert!(!said.contains("procd_open_instance"), "{said}");
    }
    let (ok, said) = openwrt_start_service("127.0.0.1:9", &scratch.data());
    assert!(ok, "{said}");
    let command = format!(
        "procd_set_param command {} -D {} -S 127.0.0.1:9",
        env!("CARGO_BIN_EXE_bootagent"),
        scratch.data().display()
    );
    assert!(said.lines().any(|line| line == command), "{said}");
}

#[test]
fn openrc_service_uses_the_network_without_requiring_it() {
    let script = fs::read_to_string(repo().join("package/init/openrc/bootagent")).expect("script");
    let depend: Vec<&str> = script
        .lines()
        .skip_while(|line| !line.starts_with("depend()"))
        .take_while(|line| *line != "}")
        .map(str::trim)
        .collect();
    assert!(depend.contains(&"use net"), "{depend:?}");
    assert!(
        !depend.iter().any(|line| line.starts_with("need")),
        "{depend:?}"
    );
}
