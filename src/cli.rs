//! The command line, in the original BootAgent's letters.

use crate::addr::{self, ServerAddr};
use crate::limits::Limits;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/bootagent";

pub const USAGE: &str = "\
usage: bootagent [-S LIST] [-C FILE] [-D DIR] [-L FILE] [-o NAME=VALUE]... [-v|-q]... [-T | -V | -h]
       bootagent status [-D DIR]     (or -s)

Registers with a control server, reports status, runs the server's jobs and
supervises the child agents in DIR/agents.

  -S LIST   server list for the first start: host:port, host, http://host:port
            or https://host:port, comma-separated; persisted, ignored later
  -C FILE   CA bundle (PEM) that server and download certificates must chain to,
            for fleets with their own CA; first start only, persisted
  --client-cert FILE, --client-key FILE
            certificate and key (PEM) for mutual TLS; first start only, persisted
  -D DIR    data directory (default /var/lib/bootagent)
  -L FILE   log to FILE, rotated by size (default: stderr)
  -o NAME=VALUE
            change one limit or timeout, e.g. -o exchange_timeout_ms=60000
            (-T lists them with their values), or how limits are enforced:
            -o limit_mechanism=auto|cgroup2|cgroup1|proc
  -v, -q    more or less logging (repeatable)
  -T        test the configuration: print what BootAgent would use, write nothing;
            exit 0 if it could run, 1 if not
  -s, status
            print the child agents of the running BootAgent as a table; exit 1
            if any is fatal or killed, 3 if there is no state to show
  -V        print the version, the target and the compiled-in server list
  -h        print this help
";

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Test(Options),
    Status(Options),
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
        log_file: None,
        verbosity: 0,
        limits: Limits::default(),
    };
    let mut test = false;
    let mut status = false;
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
            Value(word) if word == "status" => status = true,
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
    Ok(if status {
        Command::Status(options)
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
            Ok(Command::Status(_))
        ));
        assert!(matches!(parse_words("-s"), Ok(Command::Status(_))));
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
        check("extra", "unexpected argument");
        check(
            "-o step_jitter_pct=300",
            "-o: step_jitter_pct: 300 is outside",
        );
    }
}
