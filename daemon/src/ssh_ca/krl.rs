//! OpenSSH Key Revocation Lists (KRLs) for certificates our SSH CA signed:
//! the file a host's `sshd` reads through `RevokedKeys` to refuse revoked
//! certificates by serial number.
//!
//! Writes only what gatehouse needs, in the format of OpenSSH's
//! `PROTOCOL.krl`: one CA, its revoked serials as one serial-list section.
//! Hand-written on purpose: the `ssh-key` crate has no KRL support. Does not
//! parse or sign KRLs (OpenSSH 9.4 and later refuse signed ones), pick the
//! serials to revoke, or put the file on hosts.

/// `"SSHKRL\n\0"` read as a big-endian `uint64`.
const KRL_MAGIC: u64 = 0x5353_484b_524c_0a00;
const KRL_FORMAT_VERSION: u32 = 1;
const KRL_SECTION_CERTIFICATES: u8 = 1;
const KRL_SECTION_CERT_SERIAL_LIST: u8 = 0x20;

/// An OpenSSH KRL revoking the certificates with `serials` signed by the CA whose public key, in SSH wire encoding (the key blob, as in an authorized_keys line's base64 part decoded), is `ca_key_blob`.
///
/// `version` is the KRL's `krl_version` (raise it with every change);
/// `generated_at` is in seconds since the Unix epoch.
///
/// Serials are written sorted and deduplicated. Serial 0 is left out:
/// OpenSSH refuses to load a KRL that lists it ("invalid argument"), and
/// `sshd` then refuses every key, so one stray zero would lock everyone out.
/// OpenSSH revokes serial-0 certificates only by key ID, so the CA should
/// never issue serial 0. With no serials left, the KRL has no sections: valid,
/// and it revokes nothing.
///
/// `ca_key_blob` must be a key OpenSSH can parse, or the whole KRL fails to
/// load; an empty blob means "certificates of any CA" in the format. The
/// comment ends at its first NUL, because OpenSSH reads it as a C string and
/// refuses a KRL whose comment contains one.
///
/// # Panics
///
/// If a field passes the format's 4 GiB length limit (more than half a
/// billion serials, or a key blob that large).
pub fn certificate_krl(
    ca_key_blob: &[u8],
    serials: &[u64],
    version: u64,
    generated_at: u64,
    comment: &str,
) -> Vec<u8> {
    let comment = comment.split_once('\0').map_or(comment, |(head, _)| head);

    let mut krl = Vec::new();
    put_u64(&mut krl, KRL_MAGIC);
    krl.extend_from_slice(&KRL_FORMAT_VERSION.to_be_bytes());
    put_u64(&mut krl, version);
    put_u64(&mut krl, generated_at);
    put_u64(&mut krl, 0); // flags: none are defined
    put_string(&mut krl, b""); // reserved
    put_string(&mut krl, comment.as_bytes());

    let mut serials: Vec<u64> = serials.iter().copied().filter(|&s| s != 0).collect();
    serials.sort_unstable();
    serials.dedup();
    if serials.is_empty() {
        // PROTOCOL.krl wants one or more subsections in a certificates
        // section, so nothing to revoke means no section at all.
        return krl;
    }

    let mut list = Vec::with_capacity(serials.len() * 8);
    for serial in serials {
        put_u64(&mut list, serial);
    }
    let mut section = Vec::new();
    put_string(&mut section, ca_key_blob);
    put_string(&mut section, b""); // reserved
    section.push(KRL_SECTION_CERT_SERIAL_LIST);
    put_string(&mut section, &list);

    krl.push(KRL_SECTION_CERTIFICATES);
    put_string(&mut krl, &section);
    krl
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// An SSH `string`: a big-endian `uint32` length, then the bytes.
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a KRL field is limited to 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use std::path::PathBuf;
    use std::process::{Command, Output};

    use base64::Engine;

    /// Header length with an empty comment: magic, format version,
    /// krl_version, generated_date, flags, reserved, comment.
    const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8 + 4 + 4;

    #[test]
    fn lays_out_header_and_section_as_protocol_krl_says() {
        let krl = certificate_krl(b"KEY", &[2, 1, 2], 5, 6, "hi");

        let mut expected = Vec::new();
        expected.extend_from_slice(b"SSHKRL\n\0");
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&6u64.to_be_bytes());
        expected.extend_from_slice(&0u64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"hi");
        // Section: type, then its string of 4+3 (ca_key) + 4 (reserved) +
        // 1 (subsection type) + 4+16 (two serials) = 32 bytes.
        expected.push(1);
        expected.extend_from_slice(&[0, 0, 0, 32]);
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(b"KEY");
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.push(0x20);
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&2u64.to_be_bytes());
        assert_eq!(krl, expected);
    }

    #[test]
    fn no_serials_or_only_zero_writes_just_the_header() {
        let empty = certificate_krl(b"KEY", &[], 1, 2, "");
        assert_eq!(empty.len(), HEADER_LEN);
        assert_eq!(certificate_krl(b"KEY", &[0, 0], 1, 2, ""), empty);
    }

    #[test]
    fn comment_ends_at_the_first_nul() {
        assert_eq!(
            certificate_krl(b"KEY", &[7], 1, 2, "a\0b"),
            certificate_krl(b"KEY", &[7], 1, 2, "a")
        );
    }

    #[test]
    fn ssh_keygen_sees_serial_7_revoked_and_serial_9_not() {
        let Some(f) = Fixture::new("ssh_keygen_sees_serial_7_revoked_and_serial_9_not") else {
            return;
        };
        let krl = f.write_krl(
            "krl",
            &certificate_krl(
                &f.ca_blob("ca"),
                &[100, 7, 3, 7],
                5,
                1_700_000_000,
                "test KRL",
            ),
        );
        assert_eq!(f.check(&krl, "cert7.pub"), Verdict::Revoked);
        assert_eq!(f.check(&krl, "cert9.pub"), Verdict::NotRevoked);

        let dump = f.dump(&krl);
        assert!(dump.contains("# KRL version 5\n"), "{dump}");
        assert!(dump.contains("# Comment: test KRL\n"), "{dump}");
        assert!(
            dump.contains("serial: 3\nserial: 7\nserial: 100\n"),
            "{dump}"
        );
    }

    #[test]
    fn ssh_keygen_sees_an_empty_krl_revoke_nothing() {
        let Some(f) = Fixture::new("ssh_keygen_sees_an_empty_krl_revoke_nothing") else {
            return;
        };
        let krl = f.write_krl("krl", &certificate_krl(&f.ca_blob("ca"), &[], 1, 0, ""));
        assert_eq!(f.check(&krl, "cert7.pub"), Verdict::NotRevoked);
        assert_eq!(f.check(&krl, "cert9.pub"), Verdict::NotRevoked);
        assert!(!f.dump(&krl).contains("CA key"));
    }

    #[test]
    fn ssh_keygen_ignores_a_krl_for_another_ca() {
        let Some(f) = Fixture::new("ssh_keygen_ignores_a_krl_for_another_ca") else {
            return;
        };
        f.keygen(&[
            "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", "other",
        ]);
        let krl = f.write_krl(
            "krl",
            &certificate_krl(&f.ca_blob("other"), &[7, 9], 1, 0, ""),
        );
        assert_eq!(f.check(&krl, "cert7.pub"), Verdict::NotRevoked);
        assert_eq!(f.check(&krl, "cert9.pub"), Verdict::NotRevoked);
    }

    #[test]
    fn serial_zero_is_left_out_so_ssh_keygen_still_loads_the_krl() {
        let Some(f) = Fixture::new("serial_zero_is_left_out_so_ssh_keygen_still_loads_the_krl")
        else {
            return;
        };
        let krl = f.write_krl(
            "krl",
            &certificate_krl(&f.ca_blob("ca"), &[0, 7], 1, 0, "a\0b"),
        );
        assert_eq!(f.check(&krl, "cert7.pub"), Verdict::Revoked);
        assert_eq!(f.check(&krl, "cert9.pub"), Verdict::NotRevoked);
    }

    /// Widely spaced serials make ssh-keygen choose a single serial-list
    /// section too (closer ones it packs into a bitmap), so its KRL must
    /// equal ours once the generation time matches.
    #[test]
    fn matches_ssh_keygen_byte_for_byte() {
        let Some(f) = Fixture::new("matches_ssh_keygen_byte_for_byte") else {
            return;
        };
        std::fs::write(
            f.path("spec"),
            "serial: 5000000000\nserial: 7\nserial: 1000000\n",
        )
        .unwrap();
        f.keygen(&["-k", "-f", "theirs", "-s", "ca.pub", "-z", "42", "spec"]);
        let theirs = std::fs::read(f.path("theirs")).unwrap();
        let generated_at = u64::from_be_bytes(theirs[20..28].try_into().unwrap());

        let ours = certificate_krl(
            &f.ca_blob("ca"),
            &[7, 1_000_000, 5_000_000_000],
            42,
            generated_at,
            "",
        );
        assert_eq!(ours, theirs);
    }

    #[derive(Debug, PartialEq)]
    enum Verdict {
        Revoked,
        NotRevoked,
    }

    /// A temp dir holding, made by the stock ssh-keygen: a CA (`ca`,
    /// `ca.pub`), a user key, and two certificates for it signed by the CA,
    /// `cert7.pub` (serial 7) and `cert9.pub` (serial 9).
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        /// `None`, after saying why, when ssh-keygen is not installed; a
        /// panic instead under `GATEHOUSE_E2E=1`, where skipping would hide
        /// a missing check.
        fn new(test: &str) -> Option<Fixture> {
            if let Err(e) = Command::new("ssh-keygen").arg("-?").output() {
                let reason = format!("{test}: cannot run ssh-keygen ({e})");
                if std::env::var("GATEHOUSE_E2E").as_deref() == Ok("1") {
                    panic!("{reason}, and GATEHOUSE_E2E=1 requires it");
                }
                #[allow(clippy::print_stderr)] // a test's printed reason to skip
                {
                    eprintln!("skipping {reason}");
                }
                return None;
            }
            let f = Fixture {
                dir: tempfile::tempdir().unwrap(),
            };
            f.keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f", "ca"]);
            f.keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "user", "-f", "user"]);
            for serial in ["7", "9"] {
                f.keygen(&[
                    "-q", "-s", "ca", "-I", "id", "-n", "ec2-user", "-z", serial, "user.pub",
                ]);
                std::fs::copy(
                    f.path("user-cert.pub"),
                    f.path(&format!("cert{serial}.pub")),
                )
                .unwrap();
            }
            Some(f)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn run(&self, args: &[&str]) -> Output {
            Command::new("ssh-keygen")
                .args(args)
                .current_dir(self.dir.path())
                .output()
                .unwrap()
        }

        /// Runs ssh-keygen, failing the test unless it succeeds.
        fn keygen(&self, args: &[&str]) -> Output {
            let out = self.run(args);
            assert!(
                out.status.success(),
                "ssh-keygen {args:?}: {}",
                describe(&out)
            );
            out
        }

        /// The key blob of `name.pub`: its base64 field, decoded.
        fn ca_blob(&self, name: &str) -> Vec<u8> {
            let line = std::fs::read_to_string(self.path(&format!("{name}.pub"))).unwrap();
            let b64 = line.split_whitespace().nth(1).unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        }

        fn write_krl(&self, name: &str, krl: &[u8]) -> String {
            std::fs::write(self.path(name), krl).unwrap();
            name.to_owned()
        }

        /// `ssh-keygen -Q`'s verdict on `cert`; anything but a clean
        /// verdict (the KRL failing to load, say) fails the test.
        fn check(&self, krl: &str, cert: &str) -> Verdict {
            let out = self.run(&["-Q", "-f", krl, cert]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            match out.status.code() {
                Some(0) if stdout.contains(": ok") => Verdict::NotRevoked,
                Some(1) if stdout.contains(": REVOKED") => Verdict::Revoked,
                _ => panic!("ssh-keygen -Q -f {krl} {cert}: {}", describe(&out)),
            }
        }

        /// The KRL as `ssh-keygen -Q -l` lists it.
        fn dump(&self, krl: &str) -> String {
            let out = self.keygen(&["-Q", "-l", "-f", krl]);
            String::from_utf8(out.stdout).unwrap()
        }
    }

    fn describe(out: &Output) -> String {
        format!(
            "{}; stdout: {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}
