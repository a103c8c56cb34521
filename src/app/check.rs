//! `-T` (what BootAgent would run with; reads, never writes) and `-V`.

use super::baked;
use super::config::{file_url_roots, resolve, tls_files};
use super::datadir::{check_data_dir, check_data_dir_mode};
use super::error::AppError;
use crate::cli::Options;
use crate::limits::Limits;
use crate::meta::{Loaded, Meta};
use crate::{reslimit, tls};
use std::io::{self, Write};

/// `-V`.
pub fn version_text() -> String {
    let baked = match baked::BAKED_SERVERS {
        "" => "none",
        list => list,
    };
    format!(
        "bootagent {} ({})\ncompiled-in servers: {baked}\ntls: {}\n{}\n",
        env!("BOOT_VERSION"),
        env!("BOOT_TARGET"),
        if cfg!(feature = "tls") { "yes" } else { "no" },
        crate::selfup::NOTIFY_SOCKETS_LINE,
    )
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
            let roots = match &resolved.loaded {
                Loaded::FirstStart => {
                    let mut first = Meta::new(String::new(), String::new(), 0);
                    first.file_url_roots = options
                        .file_url_roots
                        .iter()
                        .map(|root| root.to_string_lossy().into_owned())
                        .collect();
                    file_url_roots(&options.data_dir, &first)
                }
                Loaded::Found { meta, .. } => file_url_roots(&options.data_dir, meta),
            };
            let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            writeln!(out, "file_url_roots: {}", roots.join(":"))?;
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
    match crate::selfup::Store::new(&options.data_dir).load() {
        Ok(state) => {
            let exe = crate::selfup::current_exe();
            for line in crate::selfup::describe(&state, env!("BOOT_VERSION"), exe.as_deref()) {
                writeln!(out, "{line}")?;
            }
        }
        Err(err) => problems.push(format!("self-upgrade state: {err}")),
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
