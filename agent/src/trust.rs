//! The roots the agent's TLS clients trust: the system's, or what `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` name when either is set (rustls-native-certs, under reqwest, replaces the
//! system's store with them).
//!
//! reqwest builds a client on whatever of those files it could read, silently: a misspelt
//! `SSL_CERT_FILE` leaves an empty store, and every https peer (git, the HTTP registry,
//! `http_check`) then fails with rustls' "UnknownIssuer" and no word about the file. The agent
//! reads them once at start-up to say so.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tracing::warn;

/// Why the roots named in the environment are not what the operator meant, one message each;
/// empty when neither variable is set or everything named was read and holds a certificate.
pub fn env_root_problems(file: Option<&OsStr>, dirs: Option<&OsStr>) -> Vec<String> {
    // Split as rustls-native-certs does, so the check reads exactly what reqwest reads.
    let dirs: Vec<PathBuf> = dirs
        .map(|d| {
            std::env::split_paths(d)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let file = file.map(Path::new);
    if file.is_none() && dirs.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let mut certs = 0;
    let mut load = |file: Option<&Path>, dir: Option<&Path>| {
        let loaded = rustls_native_certs::load_certs_from_paths(file, dir);
        certs += loaded.certs.len();
        problems.extend(loaded.errors.iter().map(ToString::to_string));
    };
    if file.is_some() {
        load(file, None);
    }
    for dir in &dirs {
        load(None, Some(dir));
    }
    if certs == 0 {
        problems.push(
            "SSL_CERT_FILE and SSL_CERT_DIR hold no certificate, so no https server is trusted"
                .to_owned(),
        );
    }
    problems
}

/// Logs [`env_root_problems`] for the agent's own environment.
pub async fn warn_about_env_roots() {
    let file = std::env::var_os("SSL_CERT_FILE");
    let dirs = std::env::var_os("SSL_CERT_DIR");
    if file.is_none() && dirs.is_none() {
        return;
    }
    let problems =
        tokio::task::spawn_blocking(move || env_root_problems(file.as_deref(), dirs.as_deref()))
            .await
            .unwrap_or_else(|e| vec![format!("checking the roots failed: {e}")]);
    for problem in problems {
        warn!(%problem, "TLS roots from SSL_CERT_FILE / SSL_CERT_DIR are not all usable; https servers they should vouch for are refused.");
    }
}

#[cfg(test)]
mod tests {
    use super::env_root_problems;
    use std::ffi::OsStr;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("CA").pem()
    }

    #[test]
    fn nothing_is_checked_without_the_variables() {
        assert_eq!(env_root_problems(None, None), Vec::<String>::new());
    }

    #[test]
    fn a_readable_file_or_directory_with_a_certificate_is_fine() {
        let dir = tempfile::tempdir().expect("tmp");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca_pem()).expect("write");
        assert_eq!(
            env_root_problems(Some(pem.as_os_str()), None),
            Vec::<String>::new()
        );
        // A list of directories, as OpenSSL reads it; an empty entry is skipped.
        let dirs = format!("{}::{}", dir.path().display(), dir.path().display());
        assert_eq!(
            env_root_problems(None, Some(OsStr::new(&dirs))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missing_file_is_named_and_an_empty_store_is_called_out() {
        let problems = env_root_problems(Some(OsStr::new("/nonexistent/ca.pem")), None);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("'/nonexistent/ca.pem'"),
            "{problems:?}"
        );
        assert!(problems[1].contains("hold no certificate"), "{problems:?}");
    }

    #[test]
    fn a_missing_file_beside_a_good_directory_is_still_named() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("ca.pem"), ca_pem()).expect("write");
        let problems = env_root_problems(
            Some(OsStr::new("/nonexistent/ca.pem")),
            Some(dir.path().as_os_str()),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("/nonexistent/ca.pem"), "{problems:?}");
    }

    #[test]
    fn a_file_without_certificates_is_called_out() {
        let dir = tempfile::tempdir().expect("tmp");
        let pem = dir.path().join("empty.pem");
        std::fs::write(&pem, "not a certificate\n").expect("write");
        let problems = env_root_problems(Some(pem.as_os_str()), None);
        assert_eq!(
            problems,
            ["SSL_CERT_FILE and SSL_CERT_DIR hold no certificate, so no https server is trusted"]
        );
    }
}
