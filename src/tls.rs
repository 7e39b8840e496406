//! TLS server configuration: certificates and keys from PEM files, chosen by SNI, built into a
//! rustls `ServerConfig` (TLS 1.2 and 1.3, ALPN `http/1.1`, the ring provider).
//!
//! Loading is all-or-nothing and every error names the file and the problem, so a SIGHUP with a
//! bad file leaves the running configuration in place.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// One certificate chain and its key, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS listener's certificates: the default, and others chosen by SNI server name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub default: CertFiles,
    /// (server names, certificate) pairs; names are matched case-insensitively, and a name
    /// `*.example.com` matches one label in front of `example.com`.
    pub sni: Vec<(Vec<String>, CertFiles)>,
}

/// Why a certificate or key could not be used; always names the file.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file, turning the I/O error into "missing" / "unreadable" with the path.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        let problem = match e.kind() {
            std::io::ErrorKind::NotFound => "missing".to_string(),
            std::io::ErrorKind::PermissionDenied => "unreadable (permission denied)".to_string(),
            _ => format!("unreadable ({e})"),
        };
        TlsError(format!("{what} file {}: {problem}", path.display()))
    })
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read_file(&files.cert, "certificate")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("certificate file {}: not valid PEM ({e})", files.cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("certificate file {}: no CERTIFICATE in it", files.cert.display())));
    }
    let key_pem = read_file(&files.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError(format!(
            "key file {}: no private key in it (expected PKCS#8, PKCS#1 or SEC1 PEM)",
            files.key.display()
        )),
        other => TlsError(format!("key file {}: not valid PEM ({other})", files.key.display())),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError(format!("key file {} does not match certificate {}", files.key.display(), files.cert.display()))
        }
        other => TlsError(format!(
            "certificate {} with key {}: unusable ({other})",
            files.cert.display(),
            files.key.display()
        )),
    })
}

/// Picks the certificate for a ClientHello's server name; the default otherwise.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    fn lookup(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else { return self.default.clone() };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k.clone();
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        log::debug!("TLS server name {:?}", hello.server_name());
        Some(self.lookup(hello.server_name()))
    }
}

/// Builds the rustls configuration for one TLS listener, loading every file.
pub fn build_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let default = Arc::new(load_certified_key(&settings.default, &provider)?);
    let mut resolver = SniResolver { default, exact: HashMap::new(), wildcard: HashMap::new() };
    for (names, files) in &settings.sni {
        let key = Arc::new(load_certified_key(files, &provider)?);
        for name in names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => resolver.wildcard.insert(parent.to_string(), key.clone()),
                None => resolver.exact.insert(name, key.clone()),
            };
        }
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str, host: &str) -> CertFiles {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        CertFiles { cert, key }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wsgate-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn errors_name_file_and_problem() {
        let dir = tempdir("errors");
        let a = write_pair(&dir, "a", "a.test");
        let b = write_pair(&dir, "b", "b.test");
        let p = provider();
        assert!(load_certified_key(&a, &p).is_ok());
        let missing = CertFiles { cert: dir.join("nope.pem"), key: a.key.clone() };
        let e = load_certified_key(&missing, &p).unwrap_err().0;
        assert!(e.contains("nope.pem") && e.contains("missing"), "{e}");
        let mismatched = CertFiles { cert: a.cert.clone(), key: b.key.clone() };
        let e = load_certified_key(&mismatched, &p).unwrap_err().0;
        assert!(e.contains("does not match") && e.contains("b.key"), "{e}");
        let no_key = CertFiles { cert: a.cert.clone(), key: a.cert.clone() };
        let e = load_certified_key(&no_key, &p).unwrap_err().0;
        assert!(e.contains("no private key") && e.contains("a.pem"), "{e}");
        let no_cert = CertFiles { cert: a.key.clone(), key: a.key.clone() };
        let e = load_certified_key(&no_cert, &p).unwrap_err().0;
        assert!(e.contains("no CERTIFICATE"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sni_lookup_exact_wildcard_default() {
        let dir = tempdir("sni");
        let settings = TlsSettings {
            default: write_pair(&dir, "d", "default.test"),
            sni: vec![
                (vec!["API.test".into()], write_pair(&dir, "api", "api.test")),
                (vec!["*.apps.test".into()], write_pair(&dir, "apps", "x.apps.test")),
            ],
        };
        let provider = provider();
        let default = Arc::new(load_certified_key(&settings.default, &provider).unwrap());
        let api = Arc::new(load_certified_key(&settings.sni[0].1, &provider).unwrap());
        let apps = Arc::new(load_certified_key(&settings.sni[1].1, &provider).unwrap());
        let r = SniResolver {
            default: default.clone(),
            exact: [("api.test".to_string(), api.clone())].into(),
            wildcard: [("apps.test".to_string(), apps.clone())].into(),
        };
        assert_eq!(r.lookup(Some("api.TEST")).cert, api.cert);
        assert_eq!(r.lookup(Some("x.apps.test")).cert, apps.cert);
        assert_eq!(r.lookup(Some("a.b.apps.test")).cert, default.cert);
        assert_eq!(r.lookup(None).cert, default.cert);
        assert!(build_server_config(&settings).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
