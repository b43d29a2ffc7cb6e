//! The private hosts' certificates the SSH host CA signed: one row per
//! serial, so admins can list what expires soon and revoke one, and the
//! host KRL lists the revoked ones until they expire. The certificate
//! itself is not kept: it is public, and the row says all.

use super::db::{DbError, values};
use super::{Reader, StoreError, Writer};

/// One signed host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCertRow {
    pub serial: u64,
    /// The SHA-256 fingerprint of the host key it certifies.
    pub key_fingerprint: String,
    /// That key's OpenSSH line (public), for members' `@revoked` lines.
    pub public_key: String,
    /// The host names and addresses it is valid for.
    pub principals: Vec<String>,
    pub valid_after: i64,
    pub valid_before: i64,
    pub issued_at: i64,
    /// The audit actor who asked (`uid:0`).
    pub issued_by: String,
    /// When and by whom it was revoked.
    pub revoked: Option<(i64, String)>,
}

const COLUMNS: &str = "serial, key_fingerprint, public_key, principals, valid_after, \
                       valid_before, issued_at, issued_by, revoked_at, revoked_by";

fn serial_value(serial: u64) -> Result<i64, StoreError> {
    i64::try_from(serial).map_err(|_| StoreError::Conflict {
        what: "host certificate serial (over 63 bits)",
        name: serial.to_string(),
    })
}

fn row_of(row: &super::db::Row) -> Result<HostCertRow, DbError> {
    let principals: String = row.get(3)?;
    let revoked_at: Option<i64> = row.get(8)?;
    let revoked_by: Option<String> = row.get(9)?;
    Ok(HostCertRow {
        serial: u64::try_from(row.get::<i64>(0)?).unwrap_or(0),
        key_fingerprint: row.get(1)?,
        public_key: row.get(2)?,
        principals: serde_json::from_str(&principals).unwrap_or_default(),
        valid_after: row.get(4)?,
        valid_before: row.get(5)?,
        issued_at: row.get(6)?,
        issued_by: row.get(7)?,
        revoked: revoked_at.map(|at| (at, revoked_by.unwrap_or_default())),
    })
}

impl Reader<'_> {
    /// The host certificate with `serial`, if the host CA signed it.
    pub fn host_cert(&self, serial: u64) -> Result<Option<HostCertRow>, StoreError> {
        let serial = serial_value(serial)?;
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM ssh_host_certificates WHERE serial = ?1"),
                values![serial],
            )
            .and_then(|row| row.map(|row| row_of(&row)).transpose())
            .map_err(StoreError::db("read a host certificate"))
    }

    /// Every host certificate still valid after `now` (revoked ones
    /// included), the soonest to expire first.
    pub fn unexpired_host_certs(&self, now: i64) -> Result<Vec<HostCertRow>, StoreError> {
        self.conn
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM ssh_host_certificates WHERE valid_before > ?1 \
                     ORDER BY valid_before, serial"
                ),
                values![now],
            )
            .and_then(|rows| rows.iter().map(row_of).collect())
            .map_err(StoreError::db("list unexpired host certificates"))
    }
}

impl Reader<'_> {
    /// Whether the host CA ever signed a certificate `issued_by` asked for
    /// (`instance:i-...`: that instance joined already).
    pub fn host_cert_issued_by(&self, issued_by: &str) -> Result<bool, StoreError> {
        self.conn
            .query_opt(
                "SELECT serial FROM ssh_host_certificates WHERE issued_by = ?1 LIMIT 1",
                values![issued_by],
            )
            .map(|row| row.is_some())
            .map_err(StoreError::db("look up who asked for host certificates"))
    }
}

impl Writer<'_> {
    /// Records a signed host certificate; `Conflict` if its serial was used.
    pub fn record_host_cert(&mut self, cert: &HostCertRow) -> Result<(), StoreError> {
        let serial = serial_value(cert.serial)?;
        if self.host_cert(cert.serial)?.is_some() {
            return Err(StoreError::Conflict {
                what: "host certificate serial",
                name: cert.serial.to_string(),
            });
        }
        let principals = serde_json::to_string(&cert.principals).unwrap_or_else(|_| "[]".into());
        let (revoked_at, revoked_by) = match &cert.revoked {
            Some((at, by)) => (Some(*at), Some(by.as_str())),
            None => (None, None),
        };
        self.conn
            .execute(
                &format!(
                    "INSERT INTO ssh_host_certificates ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                values![
                    serial,
                    cert.key_fingerprint.as_str(),
                    cert.public_key.as_str(),
                    principals,
                    cert.valid_after,
                    cert.valid_before,
                    cert.issued_at,
                    cert.issued_by.as_str(),
                    revoked_at,
                    revoked_by
                ],
            )
            .map_err(StoreError::db("record a host certificate"))?;
        Ok(())
    }

    /// Marks host certificate `serial` revoked at `at` by `by`, and returns
    /// it as it is now; `NotFound` if the host CA never signed it,
    /// `Conflict` if it was revoked already.
    pub fn revoke_host_cert(
        &mut self,
        serial: u64,
        at: i64,
        by: &str,
    ) -> Result<HostCertRow, StoreError> {
        let Some(mut cert) = self.host_cert(serial)? else {
            return Err(StoreError::NotFound {
                what: "host certificate",
                name: serial.to_string(),
            });
        };
        if cert.revoked.is_some() {
            return Err(StoreError::Conflict {
                what: "revoked host certificate",
                name: serial.to_string(),
            });
        }
        self.conn
            .execute(
                "UPDATE ssh_host_certificates SET revoked_at = ?1, revoked_by = ?2 \
                 WHERE serial = ?3",
                values![at, by, serial_value(serial)?],
            )
            .map_err(StoreError::db("revoke a host certificate"))?;
        cert.revoked = Some((at, by.to_string()));
        Ok(cert)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::fixtures::*;

    fn cert(serial: u64, valid_before: i64) -> HostCertRow {
        HostCertRow {
            serial,
            key_fingerprint: "SHA256:host".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            principals: vec!["10.0.3.140".into(), "jupyter.internal".into()],
            valid_after: 100,
            valid_before,
            issued_at: 160,
            issued_by: "admin:0".into(),
            revoked: None,
        }
    }

    /// A serial is recorded once; the unexpired ones are listed soonest
    /// first; a revocation is kept, once, and an unknown serial is named.
    #[test]
    fn host_certificates_are_kept_listed_and_revoked_once() {
        on_each_backend(|_db, store| {
            store
                .write_blocking(|w| {
                    w.record_host_cert(&cert(7, 9000))?;
                    w.record_host_cert(&cert(8, 150))?;
                    w.record_host_cert(&cert(9, 5000))
                })
                .unwrap();
            let again = store
                .write_blocking(|w| w.record_host_cert(&cert(7, 9000)))
                .unwrap_err();
            assert!(matches!(again, StoreError::Conflict { .. }), "{again}");
            let found = store.read_blocking(|r| r.host_cert(7)).unwrap().unwrap();
            assert_eq!(found, cert(7, 9000));
            let serials = |store: &crate::store::Store| -> Vec<(u64, bool)> {
                store
                    .read_blocking(|r| r.unexpired_host_certs(200))
                    .unwrap()
                    .iter()
                    .map(|c| (c.serial, c.revoked.is_some()))
                    .collect()
            };
            assert_eq!(serials(&store), [(9, false), (7, false)]);

            let revoked = store
                .write_blocking(|w| w.revoke_host_cert(9, 300, "admin:0"))
                .unwrap();
            assert_eq!(revoked.revoked, Some((300, "admin:0".to_string())));
            assert_eq!(serials(&store), [(9, true), (7, false)]);
            let twice = store
                .write_blocking(|w| w.revoke_host_cert(9, 400, "admin:0"))
                .unwrap_err();
            assert!(matches!(twice, StoreError::Conflict { .. }), "{twice}");
            let unknown = store
                .write_blocking(|w| w.revoke_host_cert(10, 400, "admin:0"))
                .unwrap_err();
            assert!(matches!(unknown, StoreError::NotFound { .. }), "{unknown}");
            let kept = store.read_blocking(|r| r.host_cert(9)).unwrap().unwrap();
            assert_eq!(kept.revoked, Some((300, "admin:0".to_string())));
            let asked = |by: &str| store.read_blocking(|r| r.host_cert_issued_by(by)).unwrap();
            assert!(asked("admin:0") && !asked("instance:i-1"));
        });
    }
}
