//! What the metafile and the options resolve to: the server list before anything is
//! written, the identity of a first or later start, and the TLS files in force.

use super::baked::{self, compiled_in_servers};
use super::error::AppError;
use crate::addr;
use crate::cli::Options;
use crate::limits::Limits;
use crate::meta::{Loaded, Meta, MetaStore};
use crate::rng;
use crate::servers::Servers;
use crate::{jobrun, tls};
use log::{info, warn};
use std::path::{Path, PathBuf};

/// The default root of `file://` URLs, in the data directory.
pub(super) const FILES_DIR: &str = "files";

/// What the configuration resolves to, before anything is written.
pub(super) struct Resolved {
    pub(super) store: MetaStore,
    pub(super) loaded: Loaded,
    pub(super) servers: Servers,
    pub(super) cli_ignored: bool,
}

pub(super) fn resolve(options: &Options, limits: &Limits) -> Result<Resolved, AppError> {
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

/// The TLS files in force: those persisted at the first start (the metafile of a
/// first start is made from this start's options).
pub(super) fn tls_files(meta: &Meta) -> tls::TlsFiles {
    let path = |path: &Option<String>| path.as_ref().map(PathBuf::from);
    tls::TlsFiles {
        ca_file: path(&meta.ca_file),
        client_cert: path(&meta.client_cert),
        client_key: path(&meta.client_key),
    }
}

/// The directories `file://` URLs may point into (docs/protocol.md section 9): the data
/// directory's `files/`, those compiled in (`BOOT_FILE_URL_ROOTS`), and the
/// `--file-url-root` ones of the first start.
pub(super) fn file_url_roots(data_dir: &Path, meta: &Meta) -> Vec<PathBuf> {
    let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut roots = vec![data_dir.join(FILES_DIR)];
    let baked = baked::BAKED_FILE_URL_ROOTS
        .split(':')
        .filter(|root| !root.is_empty());
    for root in baked.chain(meta.file_url_roots.iter().map(String::as_str)) {
        let root = PathBuf::from(root);
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    roots
}

/// On a first start, makes and saves a new identity; later, loads the saved one.
/// `settle` sees a loaded metafile before the jobs it left in progress are failed
/// (a self-upgrade settles its own); it returns whether it changed it, and the job
/// it keeps in progress (a self-upgrade on probation in this image).
pub(super) fn first_or_later_start(
    resolved: &Resolved,
    options: &Options,
    limits: &Limits,
    settle: &mut dyn FnMut(&mut Meta) -> (bool, Option<String>),
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
            if !options.file_url_roots.is_empty() {
                info!("--file-url-root ignored: the roots of the first start are persisted");
            }
            let mut meta = (**meta).clone();
            // Before any child starts: an interrupted install or upgrade is rolled back.
            if let Some(upgrade) = meta.child_upgrade.take() {
                let (code, message) = jobrun::roll_back_interrupted(&options.data_dir, &upgrade);
                warn!("job {}: {message}", upgrade.id);
                meta.journal.finish(&upgrade.id, code as u32, &message);
                resolved.store.save(&meta)?;
            }
            let (settled, keep) = settle(&mut meta);
            let interrupted = meta.journal.fail_interrupted(keep.as_deref());
            if settled && interrupted == 0 {
                resolved.store.save(&meta)?;
            }
            if interrupted > 0 {
                warn!(
                    "{interrupted} job(s) were interrupted by the last stop; reporting them failed"
                );
                resolved.store.save(&meta)?;
            }
            // What is in memory is what is on disk now: every result may be reported.
            meta.journal.saved();
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
            meta.file_url_roots = options
                .file_url_roots
                .iter()
                .map(|root| root.to_string_lossy().into_owned())
                .collect();
            resolved.store.save(&meta)?;
            info!("first start: new agent SN {}", meta.agentsn);
            Ok(meta)
        }
    }
}
