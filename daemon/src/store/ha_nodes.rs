//! What the store's own connections read of the HA pair's node rows
//! (`ha_nodes`, written by the lease's connection in `ha::lease`): each
//! node's own addresses, which every SSH certificate lists in its
//! `source-address`, so a certificate keeps working after a failover.

use std::net::IpAddr;

use super::{Reader, StoreError};

impl Reader<'_> {
    /// Every address any HA node registered for itself, sorted, once each
    /// (none without `[ha]`). A row whose list does not parse adds nothing.
    pub fn ha_node_addresses(&self) -> Result<Vec<IpAddr>, StoreError> {
        let rows = self
            .conn
            .query("SELECT addresses FROM ha_nodes", &[])
            .map_err(StoreError::db("list the HA nodes' addresses"))?;
        let mut addresses: Vec<IpAddr> = rows
            .iter()
            .filter_map(|row| row.get::<String>(0).ok())
            .flat_map(|text| serde_json::from_str::<Vec<IpAddr>>(&text).unwrap_or_default())
            .collect();
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }
}
