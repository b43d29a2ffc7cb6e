//! The SSH certificates the user CA issued (`ssh.certificates`): one row
//! per serial, so that the jump host knows a certificate it is shown, and
//! the access service can tell which unexpired ones are dead (the KRL). The
//! certificate itself is not kept: it is public, and the row says all.

use super::db::{DbError, values};
use super::{Reader, StoreError, Writer};

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertRow {
    pub serial: u64,
    pub user: String,
    pub key_fingerprint: String,
    pub principals: Vec<String>,
    pub valid_after: i64,
    pub valid_before: i64,
    pub issued_at: i64,
    /// The audit actor who asked (`alice`, `admin:0`).
    pub issued_by: String,
    /// The member was removed since.
    pub removed: bool,
}

const COLUMNS: &str = r#"serial, "user", key_fingerprint, principals, valid_after, valid_before, issued_at, issued_by, removed"#;

fn serial_value(serial: u64) -> Result<i64, StoreError> {
    i64::try_from(serial).map_err(|_| StoreError::Conflict {
        what: "certificate serial (over 63 bits)",
        name: serial.to_string(),
    })
}

fn row_of(row: &super::db::Row) -> Result<IssuedCertRow, DbError> {
    let principals: String = row.get(3)?;
    Ok(IssuedCertRow {
        serial: u64::try_from(row.get::<i64>(0)?).unwrap_or(0),
        user: row.get(1)?,
        key_fingerprint: row.get(2)?,
        principals: serde_json::from_str(&principals).unwrap_or_default(),
        valid_after: row.get(4)?,
        valid_before: row.get(5)?,
        issued_at: row.get(6)?,
        issued_by: row.get(7)?,
        removed: row.get(8)?,
    })
}

impl Reader<'_> {
    /// The certificate with `serial`, if this CA issued it.
    pub fn issued_cert(&self, serial: u64) -> Result<Option<IssuedCertRow>, StoreError> {
        let serial = serial_value(serial)?;
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM ssh_certificates WHERE serial = ?1"),
                values![serial],
            )
            .and_then(|row| row.map(|row| row_of(&row)).transpose())
            .map_err(StoreError::db("read an issued certificate"))
    }

    /// Every certificate still valid after `now`, oldest serial first:
    /// what the KRL must judge.
    pub fn unexpired_certs(&self, now: i64) -> Result<Vec<IssuedCertRow>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM ssh_certificates WHERE valid_before > ?1 ORDER BY serial"
                ),
                values![now],
            )
            .and_then(|rows| rows.iter().map(row_of).collect())
            .map_err(StoreError::db("list unexpired certificates"))
    }
}

impl Writer<'_> {
    /// Records an issued certificate; `Conflict` if its serial was used.
    pub fn record_issued_cert(&mut self, cert: &IssuedCertRow) -> Result<(), StoreError> {
        let serial = serial_value(cert.serial)?;
        if self.issued_cert(cert.serial)?.is_some() {
            return Err(StoreError::Conflict {
                what: "certificate serial",
                name: cert.serial.to_string(),
            });
        }
        let principals = serde_json::to_string(&cert.principals).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                &format!("INSERT INTO ssh_certificates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                values![
                    serial,
                    cert.user.as_str(),
                    cert.key_fingerprint.as_str(),
                    principals,
                    cert.valid_after,
                    cert.valid_before,
                    cert.issued_at,
                    cert.issued_by.as_str(),
                    cert.removed
                ],
            )
            .map_err(StoreError::db("record an issued certificate"))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::fixtures::*;

    fn cert(serial: u64, user: &str, valid_before: i64) -> IssuedCertRow {
        IssuedCertRow {
            serial,
            user: user.into(),
            key_fingerprint: "SHA256:abc".into(),
            principals: vec!["ec2-user".into()],
            valid_after: 100,
            valid_before,
            issued_at: 160,
            issued_by: user.into(),
            removed: false,
        }
    }

    /// A serial is recorded once; the unexpired certificates are listed
    /// for the KRL, and a removed member's stay marked removed when someone
    /// of the same name comes back.
    #[test]
    fn issued_certificates_are_kept_and_marked_when_their_member_goes() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            add_user(&store, "bob");
            store
                .write_blocking(|w| {
                    w.record_issued_cert(&cert(7, "alice", 5000))?;
                    w.record_issued_cert(&cert(8, "alice", 150))?;
                    w.record_issued_cert(&cert(9, "bob", 5000))
                })
                .unwrap();
            let again = store
                .write_blocking(|w| w.record_issued_cert(&cert(7, "bob", 5000)))
                .unwrap_err();
            assert!(matches!(again, StoreError::Conflict { .. }), "{again}");
            let found = store.read_blocking(|r| r.issued_cert(7)).unwrap().unwrap();
            assert_eq!(found, cert(7, "alice", 5000));
            let unexpired = store.read_blocking(|r| r.unexpired_certs(200)).unwrap();
            let serials: Vec<u64> = unexpired.iter().map(|c| c.serial).collect();
            assert_eq!(serials, [7, 9], "the expired one is left out");

            store
                .write_blocking(|w| w.delete_user("bob").map(drop))
                .unwrap();
            add_user(&store, "bob");
            let unexpired = store.read_blocking(|r| r.unexpired_certs(200)).unwrap();
            let removed: Vec<(u64, bool)> =
                unexpired.iter().map(|c| (c.serial, c.removed)).collect();
            assert_eq!(removed, [(7, false), (9, true)]);
        });
    }
}
