//! Signed checkpoints: an `audit.checkpoint` record whose detail is the
//! gateway's signature (ed25519, [`crate::keys::audit`]) over
//! `(gateway, node, seq, chain, time)`, where `seq` and `chain` are the
//! record just before the checkpoint and its chain value. A checkpoint says
//! "this gateway's chain reached this value at this record", and a third
//! party checks it with the public key alone (`accessctl audit key`).
//!
//! The active writer signs one at least every [`Cadence::every`] or every
//! [`Cadence::every_records`] records ([`Cadence::due`], sans-I/O); the
//! first keyed record of a log migrated from the plain chain is a
//! checkpoint too, marking where the keyed chain begins.
//!
//! Owns the signed message's bytes, the detail's fields and when one is
//! due. Does not own writing the record (`store::Writer::audit_checkpoint`)
//! nor the loop that asks (`crate::running`).

use std::time::Duration;

use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

use super::detail::Detail;
use super::event::Kind;
use crate::keys::audit::{AuditKeys, SignatureError, check_signature};

/// What is signed. The field order is the signed bytes' order: never
/// reorder, rename or add one (old signatures must keep verifying).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub gateway: String,
    pub node: String,
    /// The record the checkpoint covers: the one just before it.
    pub seq: u64,
    /// That record's chain value (its `hash`).
    pub chain: String,
    /// When it was signed (RFC 3339, UTC, millis): the checkpoint's `time`.
    pub time: String,
}

/// The detail of an `audit.checkpoint` record: the checkpoint and its
/// armored `SSHSIG` signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDetail {
    pub gateway: String,
    pub node: String,
    pub seq: u64,
    pub chain: String,
    pub time: String,
    pub signature: String,
}

impl Detail for CheckpointDetail {
    const KINDS: &'static [Kind] = &[Kind::AuditCheckpoint];
}

/// Who signs: the gateway's name and this node's (`ha.node`; the gateway's
/// name without `[ha]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub gateway: String,
    pub node: String,
}

impl Signer {
    /// The signer `config` names.
    pub fn of(config: &gatehouse_config::Config) -> Self {
        let gateway = config.gateway.name.clone();
        let node = config
            .ha
            .as_ref()
            .map_or_else(|| gateway.clone(), |ha| ha.node.clone());
        Self { gateway, node }
    }

    /// The checkpoint of the record `seq` whose chain value is `chain`,
    /// signed at `time`.
    pub fn checkpoint(&self, seq: u64, chain: &str, time: &str) -> Checkpoint {
        Checkpoint {
            gateway: self.gateway.clone(),
            node: self.node.clone(),
            seq,
            chain: chain.to_string(),
            time: time.to_string(),
        }
    }
}

/// What precedes the JSON in the signed message, so a checkpoint
/// signature can never be taken for a signature of anything else.
const MESSAGE_PREFIX: &[u8] = b"gatehouse audit checkpoint v1\n";

impl Checkpoint {
    /// The signed bytes: [`MESSAGE_PREFIX`] and the checkpoint's JSON.
    pub fn message(&self) -> Vec<u8> {
        let mut out = MESSAGE_PREFIX.to_vec();
        if serde_json::to_writer(&mut out, self).is_err() {
            unreachable!("strings and an integer always serialize");
        }
        out
    }

    /// The detail, signed with `keys`.
    pub fn sign(self, keys: &AuditKeys) -> Result<CheckpointDetail, SignatureError> {
        let signature = keys.sign(&self.message())?;
        let Checkpoint {
            gateway,
            node,
            seq,
            chain,
            time,
        } = self;
        Ok(CheckpointDetail {
            gateway,
            node,
            seq,
            chain,
            time,
            signature,
        })
    }
}

impl CheckpointDetail {
    /// What was signed.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            gateway: self.gateway.clone(),
            node: self.node.clone(),
            seq: self.seq,
            chain: self.chain.clone(),
            time: self.time.clone(),
        }
    }

    /// Whether the signature is `public`'s over this checkpoint.
    pub fn check(&self, public: &PublicKey) -> Result<(), SignatureError> {
        check_signature(public, &self.checkpoint().message(), &self.signature)
    }
}

/// When the writer signs the next checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// At least this often while records come in ...
    pub every: Duration,
    /// ... or after this many records, whichever comes first.
    pub every_records: u64,
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            every_records: 1000,
        }
    }
}

/// Where the chain stood at the last checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last {
    /// The checkpoint record's own seq.
    pub seq: u64,
    /// When it was written (unix seconds).
    pub at: i64,
}

impl Cadence {
    /// Whether a checkpoint is due at `now` (unix seconds), with `newest`
    /// the log's last seq and `last` the last checkpoint (`None`: there is
    /// none, and `since` is when the writer started). Nothing is due while
    /// no record followed the last checkpoint.
    pub fn due(&self, newest: u64, last: Option<Last>, since: i64, now: i64) -> bool {
        let (covered, at) = last.map_or((0, since), |l| (l.seq, l.at));
        if newest <= covered {
            return false;
        }
        let every = i64::try_from(self.every.as_secs()).unwrap_or(i64::MAX);
        newest - covered >= self.every_records || now.saturating_sub(at) >= every
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::keys::audit::test_keys as keys;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            gateway: "gw".into(),
            node: "gw-a".into(),
            seq: 41,
            chain: format!("hmac-sha256:{}", "ab".repeat(32)),
            time: "2026-12-05T01:00:00.000Z".into(),
        }
    }

    #[test]
    fn the_signed_message_is_fixed() {
        let text = String::from_utf8(checkpoint().message()).unwrap();
        assert_eq!(
            text,
            format!(
                "gatehouse audit checkpoint v1\n{{\"gateway\":\"gw\",\"node\":\"gw-a\",\"seq\":41,\"chain\":\"hmac-sha256:{}\",\"time\":\"2026-12-05T01:00:00.000Z\"}}",
                "ab".repeat(32)
            )
        );
    }

    /// A signed checkpoint verifies with the public key only; any field
    /// changed after signing does not.
    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let keys = keys();
        let public = keys.public_key().clone();
        let detail = checkpoint().sign(&keys).unwrap();
        detail.check(&public).unwrap();
        assert!(detail.signature.len() < crate::audit::event::MAX_DETAIL_STRING_BYTES);
        let changes: [fn(&mut CheckpointDetail); 5] = [
            |d| d.gateway.push('x'),
            |d| d.node.push('x'),
            |d| d.seq += 1,
            |d| d.chain.push('0'),
            |d| d.time.push('x'),
        ];
        for change in changes {
            let mut changed = detail.clone();
            change(&mut changed);
            assert!(changed.check(&public).is_err(), "{changed:?}");
        }
    }

    /// A third party checks a checkpoint with stock OpenSSH and the public
    /// key alone: `ssh-keygen -Y verify` over the signed message.
    #[test]
    #[expect(clippy::print_stderr, reason = "a skipped test says why")]
    fn stock_ssh_keygen_verifies_a_checkpoint_with_the_public_key_only() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        if Command::new("ssh-keygen").arg("-?").output().is_err() {
            assert!(
                std::env::var_os("GATEHOUSE_E2E").is_none(),
                "ssh-keygen is missing, and GATEHOUSE_E2E=1 needs it"
            );
            eprintln!("skipped: no ssh-keygen");
            return;
        }
        let keys = keys();
        let detail = checkpoint().sign(&keys).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let signers = dir.path().join("allowed_signers");
        std::fs::write(&signers, format!("{}\n", keys.allowed_signers_line("gw"))).unwrap();
        let sig = dir.path().join("checkpoint.sig");
        std::fs::write(&sig, &detail.signature).unwrap();
        let verify = |message: &[u8]| {
            let mut child = Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f"])
                .arg(&signers)
                .args(["-I", "gatehouse-audit@gw", "-n", "gatehouse-audit", "-s"])
                .arg(&sig)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(message).unwrap();
            child.wait_with_output().unwrap()
        };
        let good = verify(&detail.checkpoint().message());
        assert!(
            good.status.success(),
            "{}{}",
            String::from_utf8_lossy(&good.stdout),
            String::from_utf8_lossy(&good.stderr)
        );
        let mut changed = detail.checkpoint();
        changed.seq += 1;
        assert!(!verify(&changed.message()).status.success());
    }

    #[test]
    fn a_checkpoint_is_due_after_a_minute_or_a_thousand_records_with_something_new() {
        let cadence = Cadence::default();
        let last = Some(Last { seq: 10, at: 1000 });
        // Nothing new since the checkpoint: never due.
        assert!(!cadence.due(10, last, 0, 5000));
        assert!(!cadence.due(11, last, 0, 1059));
        assert!(cadence.due(11, last, 0, 1060));
        assert!(!cadence.due(1009, last, 0, 1001));
        assert!(cadence.due(1010, last, 0, 1001));
        // No checkpoint yet: counted from the writer's start.
        assert!(!cadence.due(0, None, 100, 1000));
        assert!(!cadence.due(5, None, 100, 159));
        assert!(cadence.due(5, None, 100, 160));
        assert!(cadence.due(1000, None, 100, 101));
    }
}
