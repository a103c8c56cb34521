//! TLS trust and identity for `https://` server addresses and download URLs
//! (feature `tls`: ureq's rustls with the ring provider).
//!
//! Trust: without a CA file the public webpki roots are trusted. A CA file (PEM, one
//! or more certificates) *replaces* them: a fleet with its own CA trusts that CA only,
//! so a certificate from a public CA for a look-alike name is refused.
//!
//! Identity: a client certificate (PEM chain, leaf first) and its key (unencrypted
//! PEM: PKCS#8, PKCS#1 or SEC1) are presented to servers that ask, for mutual TLS.
//! Both are given or neither, and the key must match the certificate: [`load`] checks
//! this up front, because ureq panics on a key it cannot use.
//!
//! No fall-back: an `https://` address is TLS or a failed exchange, never plain HTTP,
//! and a certificate failure is named in the log by [`certificate_problem`].
//!
//! Clock: certificate times are checked against the wall clock at every full handshake
//! (rustls reads it each time, and only a session that once passed is resumed), so
//! there is no state to reset. A device that boots at 1970 fails with "not yet valid", keeps
//! retrying on the usual backoff, and connects at the first attempt after NTP sets
//! the clock, without a restart.

use std::path::PathBuf;

/// Largest CA file read: public bundles are about 220 KiB.
pub const CA_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// How errors and the summary name a CA bundle compiled into the binary.
const BAKED_CA: &str = "compiled-in CA bundle";
/// Largest client certificate (chain) or key file read.
pub const IDENTITY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Where TLS trust and identity come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates trusted instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented for mutual TLS, leaf first.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

/// The files of a [`TlsFiles`], read and checked.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// One line for the start-up log, e.g. "CA file /etc/ca.pem (2 certificates)".
    pub summary: String,
    #[cfg(feature = "tls")]
    roots: Option<ureq::tls::RootCerts>,
    #[cfg(feature = "tls")]
    client: Option<ureq::tls::ClientCert>,
}

/// Reads and checks the files; on error, one line that names the file.
pub fn load(files: &TlsFiles) -> Result<Loaded, String> {
    load_with_baked(files, &[])
}

/// Like [`load`], with the CA bundle compiled in (PEM, empty when none), which is
/// trusted when no CA file is given.
pub fn load_with_baked(files: &TlsFiles, baked_ca_pem: &[u8]) -> Result<Loaded, String> {
    match (&files.client_cert, &files.client_key) {
        (Some(cert), None) => Err(format!(
            "client certificate {}: no client key given",
            cert.display()
        )),
        (None, Some(key)) => Err(format!(
            "client key {}: no client certificate given",
            key.display()
        )),
        _ => imp::load(files, baked_ca_pem),
    }
}

/// The ureq TLS config, for `ConfigBuilder::tls_config`: the CA bundle's certificates
/// as the only roots when there is one, else the webpki roots; the client certificate
/// when given.
#[cfg(feature = "tls")]
pub fn ureq_config(loaded: &Loaded) -> ureq::tls::TlsConfig {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(loaded.roots.clone().unwrap_or(RootCerts::WebPki))
        .client_cert(loaded.client.clone())
        .build()
}

/// Names a certificate failure in a ureq error, for the log: "unknown issuer",
/// "expired", "not yet valid", "wrong host name", "bad certificate" (the server's),
/// "client certificate refused" (the server's alert about ours), or `None`.
pub fn certificate_problem(err: &ureq::Error) -> Option<&'static str> {
    imp::certificate_problem(err)
}

#[cfg(not(feature = "tls"))]
mod imp {
    use super::{Loaded, TlsFiles};

    pub fn load(files: &TlsFiles, baked_ca_pem: &[u8]) -> Result<Loaded, String> {
        let name = |what: &str, path: &Option<std::path::PathBuf>| {
            path.as_ref().map(|p| format!("{what} {}", p.display()))
        };
        let baked = (!baked_ca_pem.is_empty()).then(|| super::BAKED_CA.to_string());
        let given = name("CA file", &files.ca_file)
            .or(name("client certificate", &files.client_cert))
            .or(baked);
        match given {
            Some(name) => Err(format!(
                "{name}: needs a bootagent built with the tls feature"
            )),
            None => Ok(Loaded::default()),
        }
    }

    pub fn certificate_problem(_err: &ureq::Error) -> Option<&'static str> {
        None // no TLS, no certificates
    }
}

#[cfg(feature = "tls")]
mod imp {
    use super::{Loaded, TlsFiles, BAKED_CA, CA_FILE_BYTES_MAX, IDENTITY_FILE_BYTES_MAX};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{AlertDescription as Alert, CertificateError as Cert};
    use std::io::Read;
    use std::path::Path;
    use std::sync::Arc;
    use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey};

    type Pem = (Vec<Certificate<'static>>, Option<PrivateKey<'static>>);

    /// How deep `certificate_problem` looks into nested error sources.
    const SOURCE_DEPTH_MAX: usize = 8;

    pub fn load(files: &TlsFiles, baked_ca_pem: &[u8]) -> Result<Loaded, String> {
        let mut loaded = Loaded::default();
        let mut summary = Vec::new();
        let ca = match &files.ca_file {
            Some(path) => {
                let name = format!("CA file {}", path.display());
                let pem = read_bounded(&name, path, CA_FILE_BYTES_MAX)?;
                Some((name, pem))
            }
            None if !baked_ca_pem.is_empty() => Some((BAKED_CA.to_string(), baked_ca_pem.to_vec())),
            None => None,
        };
        if let Some((name, pem)) = ca {
            let (roots, skipped) = load_roots(&name, &pem)?;
            let plural = if roots.len() == 1 { "" } else { "s" };
            let mut line = format!("{name} ({} certificate{plural}", roots.len());
            if skipped > 0 {
                line += &format!(", {skipped} unusable skipped");
            }
            summary.push(line + ")");
            loaded.roots = Some(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        if let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) {
            loaded.client = Some(load_client(cert, key)?);
            summary.push(format!("client certificate {}", cert.display()));
        }
        loaded.summary = summary.join(", ");
        Ok(loaded)
    }

    /// The usable certificates of a CA bundle and the count of unusable ones.
    fn load_roots(name: &str, pem: &[u8]) -> Result<(Vec<Certificate<'static>>, usize), String> {
        let (certs, key) = parse(name, pem)?;
        if key.is_some() {
            return Err(fail(name, "holds a private key: give certificates only"));
        }
        // The check rustls makes when ureq builds the roots, where it skips silently.
        let ders = certs.iter().map(|c| CertificateDer::from(c.der()));
        let (added, skipped) = rustls::RootCertStore::empty().add_parsable_certificates(ders);
        if added == 0 {
            return Err(fail(name, "no usable PEM certificate in it"));
        }
        Ok((certs, skipped))
    }

    fn load_client(cert_path: &Path, key_path: &Path) -> Result<ClientCert, String> {
        let cert_name = format!("client certificate {}", cert_path.display());
        let key_name = format!("client key {}", key_path.display());
        let pem = read_bounded(&cert_name, cert_path, IDENTITY_FILE_BYTES_MAX)?;
        let (chain, _) = parse(&cert_name, &pem)?;
        if chain.is_empty() {
            return Err(fail(&cert_name, "no PEM certificate in it"));
        }
        let pem = read_bounded(&key_name, key_path, IDENTITY_FILE_BYTES_MAX)?;
        let (_, key) = parse(&key_name, &pem)?;
        let (Some(key), Ok(rustls_key)) = (key, PrivateKeyDer::from_pem_slice(&pem)) else {
            let why = "no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) in it";
            return Err(fail(&key_name, why));
        };
        // ureq builds its rustls config with this very call, and panics if it fails. (Its
        // key kind is not public: rustls reads the same first key of the same PEM.)
        let rustls_chain = chain.iter().map(|c| c.der().to_vec().into()).collect();
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(|err| fail(&key_name, &err.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_client_auth_cert(rustls_chain, rustls_key)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => {
                    fail(&key_name, &format!("does not match {cert_name}"))
                }
                other => fail(&key_name, &format!("unusable with {cert_name}: {other}")),
            })?;
        Ok(ClientCert::new_with_certs(&chain, key))
    }

    /// The certificates and the first private key of a PEM text.
    fn parse(name: &str, pem: &[u8]) -> Result<Pem, String> {
        let (mut certs, mut key) = (Vec::new(), None);
        for item in parse_pem(pem) {
            match item.map_err(|err| fail(name, &err.to_string()))? {
                PemItem::Certificate(cert) => certs.push(cert),
                PemItem::PrivateKey(found) => {
                    key.get_or_insert(found);
                }
                _ => {}
            }
        }
        Ok((certs, key))
    }

    /// Reads a whole file of at most `max` bytes.
    fn read_bounded(name: &str, path: &Path, max: u64) -> Result<Vec<u8>, String> {
        let file = std::fs::File::open(path).map_err(|err| fail(name, &err.to_string()))?;
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| fail(name, &err.to_string()))?;
        if bytes.len() as u64 > max {
            return Err(fail(name, &format!("over {max} bytes")));
        }
        Ok(bytes)
    }

    fn fail(name: &str, why: &str) -> String {
        format!("{name}: {why}")
    }

    pub fn certificate_problem(err: &ureq::Error) -> Option<&'static str> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = match err {
            ureq::Error::Rustls(err) => return name(err),
            ureq::Error::Io(io) => io.get_ref().map(|e| e as _),
            _ => None,
        };
        for _ in 0..SOURCE_DEPTH_MAX {
            let err = source?;
            if let Some(err) = err.downcast_ref::<rustls::Error>() {
                return name(err);
            }
            if let Some(err) = err.downcast_ref::<ureq::Error>() {
                return certificate_problem(err);
            }
            source = err.source();
        }
        None
    }

    fn name(err: &rustls::Error) -> Option<&'static str> {
        match err {
            rustls::Error::InvalidCertificate(cert) => Some(match cert {
                Cert::UnknownIssuer => "unknown issuer",
                Cert::Expired | Cert::ExpiredContext { .. } => "expired",
                Cert::NotValidYet | Cert::NotValidYetContext { .. } => "not yet valid",
                Cert::NotValidForName | Cert::NotValidForNameContext { .. } => "wrong host name",
                _ => "bad certificate",
            }),
            rustls::Error::NoCertificatesPresented => Some("bad certificate"),
            // Alerts a server sends about the certificate we presented, or did not.
            rustls::Error::AlertReceived(
                Alert::CertificateRequired
                | Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA,
            ) => Some("client certificate refused"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_load_as_the_public_roots() {
        let loaded = load(&TlsFiles::default()).expect("nothing to read");
        assert_eq!(loaded.summary, "");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let files = TlsFiles {
            client_cert: Some(PathBuf::from("/etc/bootagent/client.pem")),
            ..TlsFiles::default()
        };
        let err = load(&files).expect_err("no key");
        assert_eq!(
            err,
            "client certificate /etc/bootagent/client.pem: no client key given"
        );
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn files_need_the_tls_feature() {
        let files = TlsFiles {
            ca_file: Some(PathBuf::from("/etc/bootagent/ca.pem")),
            ..TlsFiles::default()
        };
        let err = load(&files).expect_err("no tls");
        assert_eq!(
            err,
            "CA file /etc/bootagent/ca.pem: needs a bootagent built with the tls feature"
        );
        let err = load_with_baked(&TlsFiles::default(), b"PEM").expect_err("no tls");
        assert_eq!(
            err,
            "compiled-in CA bundle: needs a bootagent built with the tls feature"
        );
    }
}
