//! Devices (WireGuard peers of a user) and VPN address allocation.
//!
//! A device gets the lowest free host address of the pool: not the network
//! address, not the IPv4 broadcast address, not a reserved address (the
//! gateway's own), not another device's. `UNIQUE` constraints on `address`
//! and `public_key` back this up. An address is free again only once its
//! device is deleted, so it stays stable for the device's life.
//!
//! Allocation loads the used addresses once per call, so it stays fast with
//! tens of thousands of devices; the store's write lock serializes callers.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::db::{DbError, Row, Value, values};
use ipnet::IpNet;

use super::{Reader, StoreError, Writer};

/// A device row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub user: String,
    pub name: String,
    /// The device's WireGuard public key (base64). Unique across devices.
    pub public_key: String,
    /// The device's VPN address, stable for the device's life.
    pub address: IpAddr,
    pub created_at: i64,
    pub last_activation: Option<i64>,
    pub last_handshake: Option<i64>,
    /// Where the device was last heard from, recorded with `last_handshake`.
    pub last_endpoint: Option<SocketAddr>,
}

/// What [`Writer::create_device`] needs; the address is allocated.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub user: String,
    pub name: String,
    pub public_key: String,
    pub created_at: i64,
}

impl Reader<'_> {
    /// Devices sorted by user, then name; only `user`'s when given
    /// (`NotFound` for an unknown user).
    pub fn devices(&self, user: Option<&str>) -> Result<Vec<Device>, StoreError> {
        let raw = match user {
            Some(user) => {
                self.require_user(user)?;
                self.query_devices(r#"WHERE "user" = ?1"#, values![user])?
            }
            None => self.query_devices("", &[])?,
        };
        raw.into_iter().map(RawDevice::into_device).collect()
    }

    /// The device `name` of `user`, if any.
    pub fn device(&self, user: &str, name: &str) -> Result<Option<Device>, StoreError> {
        self.query_devices(r#"WHERE "user" = ?1 AND name = ?2"#, values![user, name])?
            .into_iter()
            .next()
            .map(RawDevice::into_device)
            .transpose()
    }

    fn query_devices(&self, filter: &str, params: &[Value]) -> Result<Vec<RawDevice>, StoreError> {
        self.conn
            .query(
                &format!(
                    r#"SELECT "user", name, public_key, address, created_at, last_activation,
                       last_handshake, last_endpoint FROM devices {filter} ORDER BY "user", name"#
                ),
                params,
            )
            .and_then(|rows| rows.iter().map(RawDevice::from_row).collect())
            .map_err(StoreError::db("list devices"))
    }
}

impl Writer<'_> {
    /// Creates a device with the lowest free address of `pool` that is not in
    /// `reserved`. `NotFound` for an unknown user, `Conflict` when the user
    /// already has a device of that name or the public key is in use,
    /// `PoolExhausted` when no address is left.
    pub fn create_device(
        &mut self,
        new: NewDevice,
        pool: IpNet,
        reserved: &[IpAddr],
    ) -> Result<Device, StoreError> {
        self.require_user(&new.user)?;
        if self.device(&new.user, &new.name)?.is_some() {
            return Err(StoreError::Conflict {
                what: "device",
                name: format!("{}/{}", new.user, new.name),
            });
        }
        let key_taken: bool = self
            .conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM devices WHERE public_key = ?1)",
                values![&new.public_key],
            )
            .and_then(|row| row.get(0))
            .map_err(StoreError::db("look up a device public key"))?;
        if key_taken {
            return Err(StoreError::Conflict {
                what: "device public key",
                name: new.public_key,
            });
        }
        let used = self.used_addresses()?;
        let reserved: HashSet<IpAddr> = reserved.iter().copied().collect();
        let address = lowest_free(pool, |a| used.contains(&a) || reserved.contains(&a))
            .ok_or(StoreError::PoolExhausted { pool })?;
        self.conn
            .execute(
                r#"INSERT INTO devices ("user", name, public_key, address, created_at)
                   VALUES (?1, ?2, ?3, ?4, ?5)"#,
                values![
                    &new.user,
                    &new.name,
                    &new.public_key,
                    address.to_string(),
                    new.created_at
                ],
            )
            .map_err(StoreError::db("insert a device"))?;
        Ok(Device {
            user: new.user,
            name: new.name,
            public_key: new.public_key,
            address,
            created_at: new.created_at,
            last_activation: None,
            last_handshake: None,
            last_endpoint: None,
        })
    }

    /// Deletes a device and frees its address; returns it as it was.
    pub fn delete_device(&mut self, user: &str, name: &str) -> Result<Device, StoreError> {
        let device = self
            .device(user, name)?
            .ok_or_else(|| device_not_found(user, name))?;
        self.conn
            .execute(
                r#"DELETE FROM devices WHERE "user" = ?1 AND name = ?2"#,
                values![user, name],
            )
            .map_err(StoreError::db("delete a device"))?;
        Ok(device)
    }

    /// Records the device's latest WireGuard handshake and the endpoint it
    /// came from (kept as it was when `endpoint` is `None`).
    pub fn set_device_handshake(
        &mut self,
        user: &str,
        name: &str,
        at: i64,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                r#"UPDATE devices SET last_handshake = ?3,
                   last_endpoint = COALESCE(?4, last_endpoint) WHERE "user" = ?1 AND name = ?2"#,
                values![user, name, at, endpoint.map(|e| e.to_string())],
            )
            .map_err(StoreError::db("update a device"))?;
        if changed == 0 {
            return Err(device_not_found(user, name));
        }
        Ok(())
    }

    /// Records when the device was last put into the data plane.
    pub fn set_device_activation(
        &mut self,
        user: &str,
        name: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.update_device(
            user,
            name,
            r#"UPDATE devices SET last_activation = ?3 WHERE "user" = ?1 AND name = ?2"#,
            at,
        )
    }

    fn update_device(
        &mut self,
        user: &str,
        name: &str,
        sql: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(sql, values![user, name, at])
            .map_err(StoreError::db("update a device"))?;
        if changed == 0 {
            return Err(device_not_found(user, name));
        }
        Ok(())
    }

    fn used_addresses(&self) -> Result<HashSet<IpAddr>, StoreError> {
        let rows = self
            .conn
            .query("SELECT address FROM devices", &[])
            .map_err(StoreError::db("list device addresses"))?;
        let mut used = HashSet::with_capacity(rows.len());
        for row in rows {
            let text = row
                .get::<String>(0)
                .map_err(StoreError::db("list device addresses"))?;
            used.insert(parse_address(text)?);
        }
        Ok(used)
    }
}

/// The lowest host address of `pool` for which `taken` is false: never the
/// network address, nor the broadcast address of an IPv4 pool.
fn lowest_free(pool: IpNet, taken: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
    match pool {
        IpNet::V4(net) => {
            let first = u32::from(net.network()).checked_add(1)?;
            let broadcast = u32::from(net.broadcast());
            (first..broadcast)
                .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
                .find(|&a| !taken(a))
        }
        IpNet::V6(net) => {
            let first = u128::from(net.network()).checked_add(1)?;
            let last = u128::from(net.broadcast());
            (first..=last)
                .map(|n| IpAddr::V6(Ipv6Addr::from(n)))
                .find(|&a| !taken(a))
        }
    }
}

fn device_not_found(user: &str, name: &str) -> StoreError {
    StoreError::NotFound {
        what: "device",
        name: format!("{user}/{name}"),
    }
}

fn parse_address(text: String) -> Result<IpAddr, StoreError> {
    text.parse().map_err(|source| StoreError::CorruptAddress {
        value: text,
        source,
    })
}

/// A row before its address is parsed.
struct RawDevice {
    user: String,
    name: String,
    public_key: String,
    address: String,
    created_at: i64,
    last_activation: Option<i64>,
    last_handshake: Option<i64>,
    last_endpoint: Option<String>,
}

impl RawDevice {
    fn from_row(row: &Row) -> Result<RawDevice, DbError> {
        Ok(RawDevice {
            user: row.get(0)?,
            name: row.get(1)?,
            public_key: row.get(2)?,
            address: row.get(3)?,
            created_at: row.get(4)?,
            last_activation: row.get(5)?,
            last_handshake: row.get(6)?,
            last_endpoint: row.get(7)?,
        })
    }

    fn into_device(self) -> Result<Device, StoreError> {
        Ok(Device {
            address: parse_address(self.address)?,
            user: self.user,
            name: self.name,
            public_key: self.public_key,
            created_at: self.created_at,
            last_activation: self.last_activation,
            last_handshake: self.last_handshake,
            // Only a hint for resuming the tunnel: one that does not parse
            // (never written so) is as good as none.
            last_endpoint: self.last_endpoint.and_then(|e| e.parse().ok()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::Store;
    use crate::store::fixtures::*;

    fn new_device(user: &str, name: &str) -> NewDevice {
        NewDevice {
            user: user.into(),
            name: name.into(),
            public_key: format!("pk-{user}-{name}"),
            created_at: 1,
        }
    }

    fn create(
        store: &Store,
        name: &str,
        pool: &str,
        reserved: &[&str],
    ) -> Result<Device, StoreError> {
        let pool: IpNet = pool.parse().unwrap();
        let reserved: Vec<IpAddr> = reserved.iter().map(|a| a.parse().unwrap()).collect();
        store.write_blocking(|w| w.create_device(new_device("alice", name), pool, &reserved))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn lowest_free_skips_network_broadcast_and_reserved() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let pool = "10.0.0.0/29";
            let gw = ["10.0.0.1"];
            let got: Vec<IpAddr> = (0..5)
                .map(|i| create(&store, &format!("d{i}"), pool, &gw).unwrap().address)
                .collect();
            assert_eq!(
                got,
                ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"].map(ip)
            );
            let err = create(&store, "d5", pool, &gw).unwrap_err();
            assert!(matches!(err, StoreError::PoolExhausted { .. }), "{err}");
            assert!(err.to_string().contains("10.0.0.0/29"), "{err}");
            // Freed addresses are reused, lowest first.
            store
                .write_blocking(|w| w.delete_device("alice", "d3"))
                .unwrap();
            store
                .write_blocking(|w| w.delete_device("alice", "d1"))
                .unwrap();
            assert_eq!(
                create(&store, "e1", pool, &gw).unwrap().address,
                ip("10.0.0.3")
            );
            assert_eq!(
                create(&store, "e2", pool, &gw).unwrap().address,
                ip("10.0.0.5")
            );
        });
    }

    #[test]
    fn pool_given_with_host_bits_still_uses_its_network() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let d = create(&store, "d", "10.0.0.77/24", &[]).unwrap();
            assert_eq!(d.address, ip("10.0.0.1"));
        });
    }

    #[test]
    fn ipv6_pool() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let pool = "fd00:1::/126";
            assert_eq!(
                create(&store, "a", pool, &["fd00:1::1"]).unwrap().address,
                ip("fd00:1::2")
            );
            assert_eq!(
                create(&store, "b", pool, &["fd00:1::1"]).unwrap().address,
                ip("fd00:1::3")
            );
            assert!(matches!(
                create(&store, "c", pool, &["fd00:1::1"]),
                Err(StoreError::PoolExhausted { .. })
            ));
            // A /64 allocates without scanning it.
            assert_eq!(
                create(&store, "d", "fd00:2::/64", &[]).unwrap().address,
                ip("fd00:2::1")
            );
        });
    }

    #[test]
    fn conflicts_and_not_found() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            add_user(&store, "bob");
            create(&store, "laptop", "10.0.0.0/24", &[]).unwrap();
            let err = create(&store, "laptop", "10.0.0.0/24", &[]).unwrap_err();
            assert!(
                matches!(err, StoreError::Conflict { what: "device", .. }),
                "{err}"
            );
            let pool = "10.0.0.0/24".parse().unwrap();
            let mut same_key = new_device("bob", "phone");
            same_key.public_key = "pk-alice-laptop".into();
            let err = store
                .write_blocking(|w| w.create_device(same_key, pool, &[]))
                .unwrap_err();
            assert!(matches!(
                err,
                StoreError::Conflict {
                    what: "device public key",
                    ..
                }
            ));
            let err = store
                .write_blocking(|w| w.create_device(new_device("nobody", "x"), pool, &[]))
                .unwrap_err();
            assert!(matches!(err, StoreError::NotFound { what: "user", .. }));
            let err = store
                .write_blocking(|w| w.delete_device("alice", "nope"))
                .unwrap_err();
            assert!(matches!(err, StoreError::NotFound { what: "device", .. }));
            assert!(store.read_blocking(|r| r.devices(Some("nobody"))).is_err());
        });
    }

    #[test]
    fn handshake_endpoint_and_activation() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            create(&store, "laptop", "10.0.0.0/24", &[]).unwrap();
            let endpoint: SocketAddr = "198.51.100.7:40123".parse().unwrap();
            let d = store
                .write_blocking(|w| {
                    w.set_device_handshake("alice", "laptop", 10, Some(endpoint))?;
                    w.set_device_activation("alice", "laptop", 20)?;
                    Ok(w.device("alice", "laptop")?.unwrap())
                })
                .unwrap();
            assert_eq!(d.last_handshake, Some(10));
            assert_eq!(d.last_endpoint, Some(endpoint));
            assert_eq!(d.last_activation, Some(20));
            // A handshake without a known endpoint keeps the last one.
            let d = store
                .write_blocking(|w| {
                    w.set_device_handshake("alice", "laptop", 30, None)?;
                    Ok(w.device("alice", "laptop")?.unwrap())
                })
                .unwrap();
            assert_eq!(
                (d.last_handshake, d.last_endpoint),
                (Some(30), Some(endpoint))
            );
            assert!(
                store
                    .write_blocking(|w| w.set_device_handshake("alice", "x", 1, None))
                    .is_err()
            );
        });
    }

    #[test]
    fn churn_never_duplicates() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let pool: IpNet = "10.1.0.0/24".parse().unwrap();
            let mut live: Vec<String> = Vec::new();
            let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
            for step in 0..400 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if !live.is_empty() && (rng >> 8) % 5 < 2 {
                    let victim = live.swap_remove(rng as usize % live.len());
                    store
                        .write_blocking(|w| w.delete_device("alice", &victim))
                        .unwrap();
                } else {
                    let name = format!("d{step}");
                    store
                        .write_blocking(|w| w.create_device(new_device("alice", &name), pool, &[]))
                        .unwrap();
                    live.push(name);
                }
                let devices = store.read_blocking(|r| r.devices(None)).unwrap();
                let addresses: HashSet<IpAddr> = devices.iter().map(|d| d.address).collect();
                assert_eq!(addresses.len(), devices.len());
                assert_eq!(devices.len(), live.len());
            }
        });
    }

    #[test]
    fn concurrent_creation_gives_distinct_addresses() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let pool: IpNet = "10.2.0.0/24".parse().unwrap();
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let store = store.clone();
                    std::thread::spawn(move || {
                        (0..20)
                            .map(|i| {
                                let d = new_device("alice", &format!("t{t}-{i}"));
                                store
                                    .write_blocking(|w| w.create_device(d, pool, &[]))
                                    .unwrap()
                                    .address
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let all: Vec<IpAddr> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            let distinct: HashSet<IpAddr> = all.iter().copied().collect();
            assert_eq!(all.len(), 80);
            assert_eq!(distinct.len(), 80);
        });
    }

    #[test]
    fn concurrent_async_creation_gives_distinct_addresses() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let pool: IpNet = "10.3.0.0/24".parse().unwrap();
            multi_thread_runtime().block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..40 {
                    let store = store.clone();
                    tasks.spawn(async move {
                        let d = new_device("alice", &format!("a{i}"));
                        store.write(move |w| w.create_device(d, pool, &[])).await
                    });
                }
                let mut seen = HashSet::new();
                while let Some(result) = tasks.join_next().await {
                    assert!(seen.insert(result.unwrap().unwrap().address));
                }
                assert_eq!(seen.len(), 40);
            });
        });
    }

    #[test]
    fn fast_with_ten_thousand_devices() {
        on_each_backend(|_db, store| {
            add_user(&store, "alice");
            let pool: IpNet = "10.50.0.0/16".parse().unwrap();
            store
                .write_blocking(|w| {
                    for n in 1..=10_000u32 {
                        let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 50, 0, 0)) + n);
                        w.conn
                            .execute(
                                r#"INSERT INTO devices ("user", name, public_key, address, created_at)
                                   VALUES ('alice', ?1, ?1, ?2, 0)"#,
                                values![format!("bulk{n}"), addr.to_string()],
                            )
                            .unwrap();
                    }
                    Ok(())
                })
                .unwrap();
            let started = Instant::now();
            let d = store
                .write_blocking(|w| w.create_device(new_device("alice", "new"), pool, &[]))
                .unwrap();
            assert_eq!(d.address, ip("10.50.39.17"));
            assert!(started.elapsed().as_secs() < 2, "{:?}", started.elapsed());
        });
    }
}
