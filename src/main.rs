//! `bootagent`: parses the command line and maps the result to an exit code.
//! Exit codes: 0 success, 1 cannot run (or `-T` found problems), 2 bad usage;
//! `status` has its own (see `status.rs`), and so have the console's commands
//! (`restart`, `stop`, `start`, `logs`: 0 done, 1 failed or no agent, 2 bad usage,
//! 3 no such child; see `control/`).

use bootagent::{app, cli, control, selfup};
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("bootagent: {err}");
            return ExitCode::from(2);
        }
    };
    match command {
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        cli::Command::Version => {
            print!("{}", app::version_text());
            ExitCode::SUCCESS
        }
        cli::Command::Test(options) => match app::test_config(&options, &mut std::io::stdout()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(err) => {
                eprintln!("bootagent: -T: {err}");
                ExitCode::from(1)
            }
        },
        cli::Command::Control {
            options,
            verb,
            name,
        } => ExitCode::from(control::client::command(
            &options.data_dir,
            verb,
            &name,
            options.limits.control_timeout_ms,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        cli::Command::Logs { options, request } => ExitCode::from(control::logs::run(
            &options.data_dir,
            &request,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr(),
        )),
        cli::Command::Status(options, name) => {
            match app::status(&options, name.as_deref(), &mut std::io::stdout()) {
                Ok(code) => ExitCode::from(code),
                Err(err) => {
                    eprintln!("bootagent: status: {err}");
                    ExitCode::from(3)
                }
            }
        }
        cli::Command::Run(options) => {
            // First thing: the installed binary hands over to a confirmed upgrade
            // (docs/protocol.md section 10); returns when this binary should run itself.
            selfup::hand_over_at_start(&options.data_dir);
            run(&options)
        }
    }
}

fn run(options: &cli::Options) -> ExitCode {
    match app::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if options.log_file.is_some() {
                log::error!("{err}"); // the log file should say why it ended, too
            }
            eprintln!("bootagent: {err}");
            ExitCode::from(1)
        }
    }
}
