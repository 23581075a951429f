//! TLS to nsqd: the rustls client configuration the `[output]` keys describe.
//!
//! nsqd upgrades a connection to TLS inside the protocol (IDENTIFY's `tls_v1`), so the agent
//! connects in clear, negotiates, and then runs the handshake on the same TCP connection.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::config::OutputConfig;

/// The client configuration for `[output]`, or `None` when `nsq_tls` is off.
///
/// Roots: the PEM bundle `output.nsq_tls_ca` when set (only those CAs are trusted), else the
/// system's roots. A client certificate (`nsq_tls_cert` + `nsq_tls_key`) is offered when set.
pub fn client_config(o: &OutputConfig) -> Result<Option<Arc<ClientConfig>>, String> {
    if !o.nsq_tls {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    match &o.nsq_tls_ca {
        Some(ca) => {
            let loaded = rustls_native_certs::load_certs_from_paths(Some(ca), None);
            if let Some(e) = loaded.errors.first() {
                return Err(format!("output.nsq_tls_ca: {e}"));
            }
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(format!(
                    "output.nsq_tls_ca: {} holds no usable PEM certificate",
                    ca.display()
                ));
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(loaded.certs);
            if roots.is_empty() {
                return Err("output.nsq_tls: the system has no root certificates; set \
                     output.nsq_tls_ca to the CA that signed nsqd's certificate"
                    .into());
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("output.nsq_tls: {e}"))?
            .with_root_certificates(roots);
    let config = match (&o.nsq_tls_cert, &o.nsq_tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("output.nsq_tls_key: {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("output.nsq_tls_cert/nsq_tls_key: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("output.nsq_tls_cert and output.nsq_tls_key must be set together".into()),
    };
    Ok(Some(Arc::new(config)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("output.nsq_tls_cert: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "output.nsq_tls_cert: {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The name nsqd's certificate is checked against: `server_name` when set, else the host of
/// `addr` (`host:port`, `[v6]:port`).
pub fn server_name(server_name: &str, addr: &str) -> Result<ServerName<'static>, String> {
    let host = if server_name.is_empty() {
        crate::config::split_host_port(addr)
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
            .unwrap_or(addr)
    } else {
        server_name
    };
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("nsqd {addr}: {host:?} is not a TLS server name: {e}"))
}
