//! Keys handled on the admin's side: reading SSH public key files (or stdin)
//! for `user add` / `user add-key`, and WireGuard key pairs for
//! `device config`. A device's private key is generated here so it never
//! reaches the daemon; it only ever goes into the rendered file.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use x25519_dalek::{PublicKey, StaticSecret};

/// A key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read SSH key file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("cannot read SSH keys from standard input: {0}")]
    ReadStdin(#[source] io::Error),
    #[error("standard input ('-') can be given only once")]
    StdinTwice,
    #[error("{origin} holds no SSH public key (only blank or '#' lines)")]
    NoKeys { origin: String },
    #[error("{origin} looks like a private key; give the public key (the .pub file) instead")]
    PrivateKey { origin: String },
}

/// The SSH public key lines of every source, in order: each non-empty line
/// that is not a `#` comment. `-` reads standard input.
pub fn read_ssh_keys(sources: &[PathBuf]) -> Result<Vec<String>, KeyError> {
    let mut keys = Vec::new();
    let mut stdin_used = false;
    for source in sources {
        let (origin, text) = if is_stdin(source) {
            if stdin_used {
                return Err(KeyError::StdinTwice);
            }
            stdin_used = true;
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(KeyError::ReadStdin)?;
            ("standard input".to_owned(), text)
        } else {
            let text = std::fs::read_to_string(source).map_err(|e| KeyError::ReadFile {
                path: source.clone(),
                source: e,
            })?;
            (source.display().to_string(), text)
        };
        keys.extend(key_lines(&text, &origin)?);
    }
    Ok(keys)
}

/// The key lines of one file's text.
pub fn key_lines(text: &str, origin: &str) -> Result<Vec<String>, KeyError> {
    // Never send private key material over the socket (or into the audit log).
    if text.contains("PRIVATE KEY-----") || text.starts_with("PuTTY-User-Key-File") {
        return Err(KeyError::PrivateKey {
            origin: origin.to_owned(),
        });
    }
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(KeyError::NoKeys {
            origin: origin.to_owned(),
        });
    }
    Ok(keys)
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// A WireGuard key pair made here; the private half prints as `<secret>` in
/// debug output.
pub struct WgKeyPair {
    pub public: String,
    private: SecretKey,
}

impl WgKeyPair {
    /// A fresh X25519 key pair from the OS's random source.
    pub fn generate() -> Self {
        let secret = StaticSecret::random_from_rng(rand_core::OsRng);
        let public = PublicKey::from(&secret);
        Self {
            public: BASE64.encode(public.as_bytes()),
            private: SecretKey(BASE64.encode(secret.to_bytes())),
        }
    }

    /// The private key, base64, for the wg-quick file and nowhere else.
    pub fn private_base64(&self) -> &str {
        &self.private.0
    }
}

impl fmt::Debug for WgKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgKeyPair")
            .field("public", &self.public)
            .field("private", &self.private)
            .finish()
    }
}

struct SecretKey(String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Checks a WireGuard public key given on the command line: base64 of 32 bytes.
pub fn wg_public_key(s: &str) -> Result<String, String> {
    let s = s.trim();
    let bytes = BASE64.decode(s).map_err(|e| {
        format!("not a WireGuard public key: {e} (expected 44 characters of base64, as `wg pubkey` prints)")
    })?;
    if bytes.len() != 32 {
        return Err(format!(
            "not a WireGuard public key: it decodes to {} bytes, a key is 32 (as `wg pubkey` prints)",
            bytes.len()
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_skip_blanks_and_comments() {
        let text = "# laptop\nssh-ed25519 AAAAC3Nza alice@laptop\n\n  ssh-rsa AAAAB3 alice@old  \n";
        assert_eq!(
            key_lines(text, "keys").expect("two keys"),
            [
                "ssh-ed25519 AAAAC3Nza alice@laptop",
                "ssh-rsa AAAAB3 alice@old"
            ]
        );
        assert!(matches!(
            key_lines("# nothing\n\n", "f"),
            Err(KeyError::NoKeys { .. })
        ));
    }

    #[test]
    fn private_keys_are_refused() {
        let text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = key_lines(text, "id_ed25519").expect_err("private");
        assert_eq!(
            err.to_string(),
            "id_ed25519 looks like a private key; give the public key (the .pub file) instead"
        );
    }

    #[test]
    fn reads_several_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.pub");
        let b = dir.path().join("b.pub");
        std::fs::write(&a, "ssh-ed25519 AAAA a\n").expect("write");
        std::fs::write(&b, "ssh-ed25519 BBBB b\nssh-ed25519 CCCC c\n").expect("write");
        assert_eq!(
            read_ssh_keys(&[a, b]).expect("keys"),
            [
                "ssh-ed25519 AAAA a",
                "ssh-ed25519 BBBB b",
                "ssh-ed25519 CCCC c"
            ]
        );
        let missing = dir.path().join("missing.pub");
        let err = read_ssh_keys(&[missing]).expect_err("missing");
        assert!(
            err.to_string().starts_with("cannot read SSH key file "),
            "{err}"
        );
        assert!(is_stdin(Path::new("-")) && !is_stdin(Path::new("./-")));
    }

    #[test]
    fn generated_pairs_match_and_hide_the_secret() {
        let pair = WgKeyPair::generate();
        assert_eq!(
            wg_public_key(&pair.public).as_deref(),
            Ok(pair.public.as_str())
        );
        let private = BASE64.decode(pair.private_base64()).expect("base64");
        let private: [u8; 32] = private.try_into().expect("32 bytes");
        let public = PublicKey::from(&StaticSecret::from(private));
        assert_eq!(BASE64.encode(public.as_bytes()), pair.public);
        let debug = format!("{pair:?}");
        assert!(debug.contains("<secret>") && !debug.contains(pair.private_base64()));
        assert_ne!(WgKeyPair::generate().public, pair.public);
    }

    #[test]
    fn public_key_validation() {
        assert!(wg_public_key(&BASE64.encode([7u8; 32])).is_ok());
        let short = wg_public_key(&BASE64.encode([7u8; 16])).expect_err("16 bytes");
        assert!(short.contains("decodes to 16 bytes"), "{short}");
        assert!(wg_public_key("not base64!").is_err());
    }
}
