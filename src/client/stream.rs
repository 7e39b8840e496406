//! The byte stream under a client connection: TCP (every address of the name tried in turn,
//! each within the connect timeout), TLS over it (rustls: the webpki roots or a CA file, a
//! client certificate, or no verification on request), or a UNIX socket.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use super::url::{Address, Target};
use super::{ClientError, Options};

/// The byte stream under the WebSocket.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Unix(UnixStream),
}

impl Stream {
    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Tls(s) => s.sock.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub(super) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Tls(s) => s.sock.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

pub(super) fn connect(
    target: &Target,
    options: &Options,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Stream, ClientError> {
    let (host, port) = match &target.address {
        Address::Unix(path) => return UnixStream::connect(path).map(Stream::Unix).map_err(ClientError::Connect),
        Address::Tcp { host, port } => (host, *port),
    };
    let addrs = (host.as_str(), port).to_socket_addrs().map_err(ClientError::Connect)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, options.connect_timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or(ClientError::Connect(last))?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls.filter(|_| target.tls) else { return Ok(Stream::Tcp(tcp)) };
    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| ClientError::Tls(e.to_string()))?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| ClientError::Tls(e.to_string()))?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

pub(super) fn tls_config(options: &Options) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let file_error =
        |path: &std::path::Path, e: &dyn fmt::Display| ClientError::Tls(format!("{}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| file_error(path, &e))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| file_error(path, &e))?;
                roots.add(cert).map_err(|e| file_error(path, &e))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Tls(format!("{}: no certificate in the file", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if options.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match &options.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error(cert, &e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_error(cert, &e))?;
            if chain.is_empty() {
                return Err(ClientError::Tls(format!("{}: no certificate in the file", cert.display())));
            }
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, &e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| file_error(key, &e))?
        }
    };
    Ok(Arc::new(config))
}

/// `--insecure`: any certificate is taken as the server's. The handshake's signatures are
/// still checked (against the certificate presented), so the session is encrypted to whoever
/// holds that certificate's key; who that is, nothing says.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
