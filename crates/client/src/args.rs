//! [`ConnectArgs`]: the TLS and token flags of every program that talks to
//! a cluster (`leasehold`, `leasehold-bench`, `leasehold-chaos`), named as
//! etcdctl and kubectl name them, each also from the environment, so that a
//! script exports `LEASEHOLD_CACERT` and friends once for all three.

use crate::{ClientTls, ConnectOptions};
use std::fmt;
use std::path::{Path, PathBuf};

/// How to reach a cluster that uses TLS or tokens. Every flag is `global`,
/// so it may come before or after the subcommand. Without `--cacert` the
/// client speaks plaintext.
#[derive(Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ConnectArgs {
    /// CA certificate(s), PEM, that signed the servers' certificates; turns
    /// TLS on.
    #[arg(long, global = true, env = "LEASEHOLD_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate, PEM, presented to the servers (needs --key and
    /// --cacert).
    #[arg(long, global = true, env = "LEASEHOLD_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert, PEM.
    #[arg(long, global = true, env = "LEASEHOLD_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Bearer token sent with every request (needs --cacert). Other users
    /// of this machine can read a command line: prefer --token-file or the
    /// environment.
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// File holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, global = true, env = "LEASEHOLD_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Name the servers' certificates must carry, when it is not the
    /// endpoint's host (e.g. a DNS name while --endpoints are IP addresses).
    #[arg(
        long,
        global = true,
        env = "LEASEHOLD_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl fmt::Debug for ConnectArgs {
    /// Leaves out the token: a `Debug` of a parsed command line must not
    /// print a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("cacert", &self.cacert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("tls_server_name", &self.tls_server_name)
            .finish()
    }
}

/// Reads `path`, given as `--flag`; the error names both.
fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("--{flag} {}: {e}", path.display()))
}

impl ConnectArgs {
    /// Whether any TLS or token flag was given.
    pub fn is_set(&self) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.token.is_some()
            || self.token_file.is_some()
            || self.tls_server_name.is_some()
    }

    /// The options these flags ask for, with the files read and checked.
    /// Every error names the flag (and the file) at fault.
    pub fn options(&self) -> Result<ConnectOptions, String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                return Err("--cert needs --key (the certificate's private key)".into())
            }
            (None, Some(_)) => {
                return Err("--key needs --cert (the certificate it belongs to)".into())
            }
            _ => {}
        }
        if self.cacert.is_none() {
            if self.cert.is_some() {
                return Err(
                    "--cert needs --cacert: a client certificate is only sent over TLS, \
                     and TLS needs the CA that signed the servers' certificates"
                        .into(),
                );
            }
            if self.tls_server_name.is_some() {
                return Err("--tls-server-name needs --cacert (it only applies to TLS)".into());
            }
        }
        let tls = match &self.cacert {
            None => None,
            Some(ca) => {
                let mut tls = ClientTls::new(read("cacert", ca)?);
                tls.validate()
                    .map_err(|e| format!("--cacert {}: {e}", ca.display()))?;
                if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                    tls.identity = Some((read("cert", cert)?, read("key", key)?));
                    tls.validate().map_err(|e| {
                        format!("--cert {} / --key {}: {e}", cert.display(), key.display())
                    })?;
                }
                if let Some(name) = &self.tls_server_name {
                    tls.server_name = Some(name.clone());
                    tls.validate()
                        .map_err(|e| format!("--tls-server-name: {e}"))?;
                }
                Some(tls)
            }
        };
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err("give either --token or --token-file, not both".into())
            }
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(path)) => {
                let bytes = read("token-file", path)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("--token-file {}: not UTF-8 text", path.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(format!(
                        "--token-file {}: the file is empty",
                        path.display()
                    ));
                }
                Some(t.to_string())
            }
            (None, None) => None,
        };
        let opts = ConnectOptions { tls, token };
        // The same refusals the client makes (a token without TLS, one
        // that cannot be sent), reported before anything else runs.
        opts.authorization().map_err(|s| s.message().to_string())?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::tests::pki;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        connect: ConnectArgs,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Status,
    }

    fn parse(args: &[&str]) -> ConnectArgs {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .connect
    }

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "leasehold-client-args-{tag}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let p = pki();
            for (name, text) in [
                ("ca.crt", &p.ca),
                ("alice.crt", &p.client_cert),
                ("alice.key", &p.client_key),
                ("server.key", &p.server_key),
            ] {
                std::fs::write(dir.join(name), text).unwrap();
            }
            std::fs::write(dir.join("token"), "  s3cret\n").unwrap();
            std::fs::write(dir.join("empty"), "\n").unwrap();
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.join(name).display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn no_flags_is_plaintext_without_a_token() {
        let a = parse(&[]);
        assert!(!a.is_set());
        assert_eq!(a.options().unwrap(), ConnectOptions::default());
    }

    #[test]
    fn flags_are_global_and_read_their_files() {
        let f = Files::new("ok");
        let a = parse(&[
            "status",
            "--cacert",
            &f.path("ca.crt"),
            "--cert",
            &f.path("alice.crt"),
            "--key",
            &f.path("alice.key"),
            "--token-file",
            &f.path("token"),
            "--tls-server-name",
            "localhost",
        ]);
        let o = a.options().unwrap();
        let tls = o.tls.as_ref().unwrap();
        assert!(tls.identity.is_some());
        assert_eq!(tls.server_name.as_deref(), Some("localhost"));
        assert_eq!(o.token.as_deref(), Some("s3cret"));
        assert!(!format!("{a:?}{o:?}").contains("s3cret"));
        let a = parse(&["--cacert", &f.path("ca.crt"), "--token", " t0k "]);
        assert_eq!(a.options().unwrap().token.as_deref(), Some("t0k"));
        assert!(!format!("{a:?}").contains("t0k"));
    }

    #[test]
    fn mistakes_name_the_flag_and_the_file() {
        let f = Files::new("bad");
        let err = |args: &[&str]| parse(args).options().unwrap_err();
        let ca = f.path("ca.crt");
        let e = err(&["--cacert", &ca, "--cert", &f.path("alice.crt")]);
        assert!(e.contains("--cert needs --key"), "{e}");
        let e = err(&["--cacert", &ca, "--key", &f.path("alice.key")]);
        assert!(e.contains("--key needs --cert"), "{e}");
        let e = err(&[
            "--cert",
            &f.path("alice.crt"),
            "--key",
            &f.path("alice.key"),
        ]);
        assert!(e.contains("--cert needs --cacert"), "{e}");
        let e = err(&["--tls-server-name", "x"]);
        assert!(e.contains("--tls-server-name needs --cacert"), "{e}");
        let missing = f.path("missing.crt");
        let e = err(&["--cacert", &missing]);
        assert!(e.starts_with(&format!("--cacert {missing}: ")), "{e}");
        let e = err(&["--cacert", &f.path("alice.key")]);
        assert!(
            e.contains("--cacert") && e.contains("no PEM CERTIFICATE"),
            "{e}"
        );
        let e = err(&[
            "--cacert",
            &ca,
            "--cert",
            &f.path("alice.crt"),
            "--key",
            &f.path("server.key"),
        ]);
        assert!(e.contains("--cert") && e.contains("--key"), "{e}");
        let e = err(&["--token", "t"]);
        assert!(e.contains("--token") && e.contains("in clear"), "{e}");
        let e = err(&[
            "--cacert",
            &ca,
            "--token",
            "t",
            "--token-file",
            &f.path("token"),
        ]);
        assert!(e.contains("not both"), "{e}");
        let e = err(&["--cacert", &ca, "--token-file", &f.path("empty")]);
        assert!(e.contains("--token-file") && e.contains("empty"), "{e}");
        let e = err(&["--cacert", &ca, "--token-file", &f.path("nope")]);
        assert!(e.starts_with("--token-file "), "{e}");
    }
}
