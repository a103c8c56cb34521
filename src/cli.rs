//! The command line, in the original BootAgent's letters.

use crate::addr::{self, ServerAddr};
use crate::control::logs::{LogsRequest, LINES_DEFAULT};
use crate::control::Verb;
use crate::limits::Limits;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/bootagent";

pub const USAGE: &str = "\
usage: bootagent [-S LIST] [-C FILE] [-D DIR] [-L FILE] [-o NAME=VALUE]... [--file-url-root DIR]...
                 [-v|-q]... [-T | -V | -h]
       bootagent status [NAME] [-D DIR]     (or -s)
       bootagent restart|stop|start NAME [-D DIR]
       bootagent logs NAME [-f] [-n LINES] [-D DIR]

Registers with a control server, reports status, runs the server's jobs and
supervises the child agents in DIR/agents.

  -S LIST   server list for the first start: host:port, host, http://host:port
            or https://host:port, comma-separated; persisted, ignored later
  -C FILE   CA bundle (PEM) that server and download certificates must chain to,
            for fleets with their own CA; first start only, persisted
  --client-cert FILE, --client-key FILE
            certificate and key (PEM) for mutual TLS; first start only, persisted
  -D DIR    data directory (default /var/lib/bootagent)
  --file-url-root DIR
            a directory that file:// package URLs may point into, besides
            DIR/files (repeatable); first start only, persisted
  -L FILE   log to FILE, rotated by size (default: stderr)
  -o NAME=VALUE
            change one limit or timeout, e.g. -o exchange_timeout_ms=60000
            (-T lists them with their values), or how limits are enforced:
            -o limit_mechanism=auto|cgroup2|cgroup1|proc
  -v, -q    more or less logging (repeatable)
  -T        test the configuration: print what BootAgent would use, write nothing;
            exit 0 if it could run, 1 if not
  -s, status [NAME]
            print the child agents of the running BootAgent (or one) as a table;
            exit 1 if any is fatal or killed, 3 if there is no state to show or
            no such child
  restart NAME, stop NAME, start NAME
            ask the running BootAgent to do what the job of that name does (stop
            stays stopped across restarts); prints the child as sv does; exit 0
            done, 1 failed or no BootAgent running, 2 bad usage, 3 no such child
  logs NAME [-f] [-n LINES]
            print the last LINES (default 10) of the child's output; -f follows
            it across log rotations until interrupted; needs no running BootAgent
  -V        print the version, the target and the compiled-in server list
  -h        print this help
";

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Test(Options),
    /// `status [NAME]`.
    Status(Options, Option<String>),
    /// `restart|stop|start NAME`.
    Control {
        options: Options,
        verb: Verb,
        name: String,
    },
    /// `logs NAME [-f] [-n LINES]`.
    Logs {
        options: Options,
        request: LogsRequest,
    },
    Version,
    Help,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// `-S`, validated.
    pub servers: Option<Vec<ServerAddr>>,
    /// `-C`, `--client-cert`, `--client-key`.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub data_dir: PathBuf,
    /// `--file-url-root`, in the order given.
    pub file_url_roots: Vec<PathBuf>,
    pub log_file: Option<PathBuf>,
    /// `-v` count minus `-q` count.
    pub verbosity: i8,
    /// Defaults with the `-o` changes applied.
    pub limits: Limits,
}

/// A command line that cannot be used; exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see bootagent -h)", self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut options = Options {
        servers: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        file_url_roots: Vec::new(),
        log_file: None,
        verbosity: 0,
        limits: Limits::default(),
    };
    let mut test = false;
    let mut status = false;
    let mut words: Vec<String> = Vec::new();
    let mut follow = false;
    let mut lines: Option<u64> = None;
    let usage = |err: lexopt::Error| UsageError(err.to_string());
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('S') => {
                let list = string_value(&mut parser, "-S")?;
                let parsed = addr::parse_list(&list).map_err(|e| UsageError(format!("-S: {e}")))?;
                if parsed.is_empty() {
                    return Err(UsageError("-S: the server list is empty".to_string()));
                }
                options.servers = Some(parsed);
            }
            Short('C') => options.ca_file = Some(path_value(&mut parser, "-C")?),
            Long("client-cert") => {
                options.client_cert = Some(path_value(&mut parser, "--client-cert")?)
            }
            Long("client-key") => {
                options.client_key = Some(path_value(&mut parser, "--client-key")?)
            }
            Short('D') => options.data_dir = path_value(&mut parser, "-D")?,
            Long("file-url-root") => {
                let root = path_value(&mut parser, "--file-url-root")?;
                if !root.is_absolute() {
                    return Err(UsageError(format!(
                        "--file-url-root: {} is not an absolute path",
                        root.display()
                    )));
                }
                options.file_url_roots.push(root);
            }
            Short('L') => options.log_file = Some(path_value(&mut parser, "-L")?),
            Short('o') => {
                let assignment = string_value(&mut parser, "-o")?;
                options
                    .limits
                    .set(&assignment)
                    .map_err(|e| UsageError(format!("-o: {e}")))?;
            }
            Short('v') => options.verbosity = options.verbosity.saturating_add(1),
            Short('q') => options.verbosity = options.verbosity.saturating_sub(1),
            Short('T') => test = true,
            Short('s') => status = true,
            Short('f') => follow = true,
            Short('n') => {
                let value = string_value(&mut parser, "-n")?;
                let n = value
                    .parse::<u64>()
                    .map_err(|_| UsageError(format!("-n: {value:?} is not a number of lines")))?;
                lines = Some(n);
            }
            Value(word) => {
                let word = word
                    .into_string()
                    .map_err(|_| UsageError("an argument is not valid UTF-8".to_string()))?;
                if words.len() == 2 {
                    return Err(UsageError(format!("unexpected argument {word:?}")));
                }
                words.push(word);
            }
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('h') | Long("help") => return Ok(Command::Help),
            _ => return Err(usage(arg.unexpected())),
        }
    }
    if options.client_cert.is_some() != options.client_key.is_some() {
        return Err(UsageError(
            "--client-cert and --client-key go together".to_string(),
        ));
    }
    if status && words.len() == 1 {
        words.insert(0, "status".to_string()); // `-s NAME`
    }
    let (command, name) = match words.as_slice() {
        [] => (None, None),
        [command] => (Some(command.as_str()), None),
        [command, name] => (Some(command.as_str()), Some(name.clone())),
        _ => return Err(UsageError("too many arguments".to_string())),
    };
    if let Some(name) = &name {
        if !crate::supervisor::valid_name(name) {
            return Err(UsageError(format!(
                "{name:?} is not an agent name (1-64 of A-Z a-z 0-9 . _ -, not starting with .)"
            )));
        }
    }
    if (follow || lines.is_some()) && command != Some("logs") {
        return Err(UsageError("-f and -n go with logs".to_string()));
    }
    let needs_name = |what: &str| UsageError(format!("{what} needs a NAME"));
    match command {
        None => {}
        Some("status") => status = true,
        Some("logs") => {
            let name = name.ok_or_else(|| needs_name("logs"))?;
            let request = LogsRequest {
                name,
                follow,
                lines: lines.unwrap_or(LINES_DEFAULT),
            };
            return Ok(Command::Logs { options, request });
        }
        Some(word) => {
            let verb = Verb::parse(word).ok_or_else(|| {
                UsageError(format!(
                    "unknown command {word:?}: status, restart, stop, start or logs"
                ))
            })?;
            let name = name.ok_or_else(|| needs_name(word))?;
            return Ok(Command::Control {
                options,
                verb,
                name,
            });
        }
    }
    if name.is_some() && !status {
        return Err(UsageError("unexpected argument".to_string()));
    }
    Ok(if status {
        Command::Status(options, name)
    } else if test {
        Command::Test(options)
    } else {
        Command::Run(options)
    })
}

fn string_value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, UsageError> {
    let value = parser
        .value()
        .map_err(|_| UsageError(format!("{flag} needs a value")))?;
    value
        .into_string()
        .map_err(|_| UsageError(format!("{flag}: the value is not valid UTF-8")))
}

fn path_value(parser: &mut lexopt::Parser, flag: &str) -> Result<PathBuf, UsageError> {
    let value = parser
        .value()
        .map_err(|_| UsageError(format!("{flag} needs a value")))?;
    if value.is_empty() {
        return Err(UsageError(format!("{flag}: the path is empty")));
    }
    Ok(PathBuf::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(line: &str) -> Result<Command, UsageError> {
        parse(line.split_whitespace())
    }

    #[test]
    fn good_command_lines() {
        let Ok(Command::Run(o)) = parse_words("-S a:1,b -D /d -L /l -vv -q") else {
            panic!("expected Run");
        };
        assert_eq!(o.servers.map(|s| s.len()), Some(2));
        assert_eq!(o.data_dir, PathBuf::from("/d"));
        assert_eq!(o.log_file, Some(PathBuf::from("/l")));
        assert_eq!(o.verbosity, 1);
        assert!(matches!(parse_words("-T -D /x"), Ok(Command::Test(_))));
        assert_eq!(parse_words("-V"), Ok(Command::Version));
        assert!(matches!(
            parse_words("status -D /x"),
            Ok(Command::Status(_, None))
        ));
        assert!(matches!(parse_words("-s"), Ok(Command::Status(_, None))));
        assert!(matches!(
            parse_words("status BasicAgent"),
            Ok(Command::Status(_, Some(n))) if n == "BasicAgent"
        ));
        assert!(matches!(
            parse_words("restart a -D /x"),
            Ok(Command::Control { verb: Verb::Restart, name, .. }) if name == "a"
        ));
        assert!(matches!(
            parse_words("-D /x stop a"),
            Ok(Command::Control {
                verb: Verb::Stop,
                ..
            })
        ));
        assert!(matches!(
            parse_words("start a"),
            Ok(Command::Control {
                verb: Verb::Start,
                ..
            })
        ));
        let Ok(Command::Logs { request, .. }) = parse_words("logs a -f -n 50") else {
            panic!("expected Logs");
        };
        assert_eq!(
            request,
            LogsRequest {
                name: "a".into(),
                follow: true,
                lines: 50
            }
        );
        let Ok(Command::Logs { request, .. }) = parse_words("logs a") else {
            panic!("expected Logs");
        };
        assert_eq!((request.follow, request.lines), (false, LINES_DEFAULT));
        assert_eq!(parse_words("-h -x"), Ok(Command::Help));
        let Ok(Command::Run(o)) = parse_words("") else {
            panic!("expected Run");
        };
        assert_eq!(o.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        let check = |line: &str, part: &str| {
            let err = parse_words(line).expect_err(line).to_string();
            assert!(err.contains(part), "{line}: {err} lacks {part}");
        };
        check("-x", "invalid option '-x'");
        check("--frobnicate", "invalid option '--frobnicate'");
        check("-S", "-S needs a value");
        check("-D", "-D needs a value");
        check("-S a:99999", "-S: bad server address");
        check("-S ,", "-S: the server list is empty");
        check("extra", "unknown command \"extra\"");
        check("restart", "restart needs a NAME");
        check("logs", "logs needs a NAME");
        check("stop a b", "unexpected argument \"b\"");
        check("stop ../x", "is not an agent name");
        check("logs a -n x", "-n: \"x\" is not a number");
        check("stop a -f", "-f and -n go with logs");
        check("-n 3", "-f and -n go with logs");
        check("uninstall a", "unknown command \"uninstall\"");
        check(
            "-o backoff_jitter_pct=300",
            "-o: backoff_jitter_pct: 300 is outside",
        );
    }
}
