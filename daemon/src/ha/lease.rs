//! The HA lease in the shared database: one row (`ha_lease`) saying which
//! node is active, under an ever-increasing generation (the fencing token),
//! until when. Every time is the database's clock (`clock_timestamp()`, unix
//! milliseconds), so the two nodes' clocks never have to agree.
//!
//! - [`LeaseDb::register`], at start: refuses while another installation
//!   (`ha/installation.rs`) has reported under this node's name within the
//!   lease's TTL (a copied config), naming it; else records this
//!   installation and its addresses under the name.
//! - [`LeaseDb::acquire`] takes the lease when nobody holds it, when it ran
//!   out, or when this node's previous run (the same installation) held
//!   it; each take is a new
//!   generation. Just after the database came back from an outage the
//!   caller can [`Defer::ToLastHolder`]: a lease that ran out (and was not
//!   released) is left to its last holder, which most likely ran out only
//!   because nobody could reach the database, so the pair does not move the
//!   elastic IP for nothing.
//! - [`LeaseDb::renew`] extends it only for the holder of that generation
//!   while it has not run out: a node that was paused past its expiry finds
//!   it lost, even if nobody has taken it yet.
//! - [`LeaseDb::release`] ends it at once (a planned stop or handover), so
//!   the other node takes over on its next attempt.
//!
//! Uses a connection of its own (not the store's pool, where a long write
//! could make a renewal wait), and bounds every call with a timeout.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::installation::InstallationId;

use crate::store::db::DbError;
use crate::store::postgres::Target;

/// The database's clock, in unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// The lease as it was before an [`LeaseDb::acquire`] took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Previous {
    /// `None`: never held.
    pub holder: Option<String>,
    pub generation: i64,
    pub renewed_ms: Option<i64>,
    /// Set when its holder released it (a planned stop or handover).
    pub released_ms: Option<i64>,
    pub expires_ms: i64,
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub generation: i64,
    /// When it runs out, and the database's time when it was granted.
    pub expires_ms: i64,
    pub granted_ms: i64,
}

impl Held {
    /// How long it lasts from the moment it was granted.
    pub fn lasts(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.expires_ms - self.granted_ms).unwrap_or(0))
    }
}

/// What an acquire found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// This node holds the lease now.
    Won { held: Held, previous: Previous },
    /// Another node holds a live lease, or (deferred to) the lease that ran
    /// out under it: then `expires_in_ms` is 0 or less.
    Held { holder: String, expires_in_ms: i64 },
}

/// Whether an acquire takes a lease that ran out under another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defer {
    /// Yes: its holder stopped renewing (the usual failover).
    No,
    /// Not yet (unless it was released): the database was out of reach, so
    /// its holder may be alive and about to take it back.
    ToLastHolder,
}

/// The lease row and each node's last report, for `accessctl ha status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    /// Who holds it (`None` once released or run out).
    pub holder: Option<String>,
    pub generation: i64,
    pub acquired_ms: Option<i64>,
    pub renewed_ms: Option<i64>,
    pub expires_ms: i64,
    pub now_ms: i64,
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    pub node: String,
    pub role: String,
    pub generation: i64,
    pub seen_ms: i64,
    pub detail: serde_json::Value,
    /// The installation that reports under this name (`None` from a node
    /// that predates installation ids).
    pub installation: Option<String>,
    /// The node's own addresses, as it registered them at start.
    pub addresses: Vec<IpAddr>,
}

/// What [`LeaseDb::register`] found under this node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The name is this installation's now.
    Registered,
    /// Another installation reported under it `seen_ms_ago`: this one must
    /// not start.
    NameTaken {
        installation: String,
        seen_ms_ago: i64,
    },
}

/// A connection to the lease, reconnected on the next call after it broke.
pub struct LeaseDb {
    target: Target,
    node: String,
    installation: InstallationId,
    ttl: Duration,
    conn: Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)>,
}

impl Drop for LeaseDb {
    fn drop(&mut self) {
        if let Some((_, driver)) = self.conn.take() {
            driver.abort();
        }
    }
}

impl LeaseDb {
    /// No connection is made until the first call.
    pub(crate) fn new(
        target: Target,
        node: &str,
        installation: InstallationId,
        ttl: Duration,
    ) -> LeaseDb {
        LeaseDb {
            target,
            node: node.to_string(),
            installation,
            ttl,
            conn: None,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    async fn client(&mut self, within: Duration) -> Result<&mut tokio_postgres::Client, DbError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|(client, _)| client.is_closed())
            && let Some((_, driver)) = self.conn.take()
        {
            driver.abort();
        }
        if self.conn.is_none() {
            let connected = tokio::time::timeout(within, self.target.connect(None))
                .await
                .map_err(|_| timed_out("connect", within))??;
            self.conn = Some(connected);
        }
        match &mut self.conn {
            Some((client, _)) => Ok(client),
            None => Err(DbError::NoRow),
        }
    }

    /// Takes the lease if it is free, ran out (see [`Defer`]), or was this
    /// node's; answers within `within`.
    pub async fn acquire(&mut self, within: Duration, defer: Defer) -> Result<Acquire, DbError> {
        let node = self.node.clone();
        let installation = self.installation.as_str().to_string();
        let ttl_ms = millis(self.ttl);
        let client = self.client(within).await?;
        let work = async move {
            let tx = client.transaction().await?;
            let row = tx
                .query_one(
                    &format!(
                        "SELECT holder, generation, renewed_ms, released_ms, expires_ms, {NOW_MS}, \
                         holder_installation FROM ha_lease WHERE id = 1 FOR UPDATE"
                    ),
                    &[],
                )
                .await?;
            let previous = Previous {
                holder: row.try_get(0)?,
                generation: row.try_get(1)?,
                renewed_ms: row.try_get(2)?,
                released_ms: row.try_get(3)?,
                expires_ms: row.try_get(4)?,
            };
            let now_ms: i64 = row.try_get(5)?;
            let holder_installation: Option<String> = row.try_get(6)?;
            let live = previous.expires_ms > now_ms;
            let deferred = defer == Defer::ToLastHolder && previous.released_ms.is_none();
            // "My previous run" is this name *and* this installation: a
            // copy of this node's config elsewhere is another node.
            let mine = previous.holder.as_deref() == Some(node.as_str())
                && holder_installation.as_deref() == Some(installation.as_str());
            match &previous.holder {
                Some(holder) if (live || deferred) && !mine => {
                    return Ok(Acquire::Held {
                        holder: holder.clone(),
                        expires_in_ms: previous.expires_ms - now_ms,
                    });
                }
                _ => {}
            }
            let generation = previous.generation + 1;
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE ha_lease SET holder = $1, generation = $2, acquired_ms = {NOW_MS}, \
                         renewed_ms = {NOW_MS}, released_ms = NULL, expires_ms = {NOW_MS} + $3, \
                         holder_installation = $4 WHERE id = 1 RETURNING expires_ms, renewed_ms"
                    ),
                    &[&node, &generation, &ttl_ms, &installation],
                )
                .await?;
            let held = Held {
                generation,
                expires_ms: row.try_get(0)?,
                granted_ms: row.try_get(1)?,
            };
            tx.commit().await?;
            Ok(Acquire::Won { held, previous })
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("acquire the lease", within))?
    }

    /// Extends the lease of `generation`; `None` when this node no longer
    /// holds it (taken over, released, or run out).
    pub async fn renew(
        &mut self,
        generation: i64,
        within: Duration,
    ) -> Result<Option<Held>, DbError> {
        let node = self.node.clone();
        let ttl_ms = millis(self.ttl);
        let client = self.client(within).await?;
        let work = async move {
            let row = client
                .query_opt(
                    &format!(
                        "UPDATE ha_lease SET renewed_ms = {NOW_MS}, expires_ms = {NOW_MS} + $3 \
                         WHERE id = 1 AND holder = $1 AND generation = $2 AND released_ms IS NULL \
                         AND expires_ms > {NOW_MS} RETURNING expires_ms, renewed_ms"
                    ),
                    &[&node, &generation, &ttl_ms],
                )
                .await?;
            row.map(|row| {
                Ok(Held {
                    generation,
                    expires_ms: row.try_get(0)?,
                    granted_ms: row.try_get(1)?,
                })
            })
            .transpose()
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("renew the lease", within))?
    }

    /// True while this node holds a live lease of `generation` (the
    /// re-check before acting on AWS).
    pub async fn holds(&mut self, generation: i64, within: Duration) -> Result<bool, DbError> {
        let node = self.node.clone();
        let client = self.client(within).await?;
        let work = async move {
            let row = client
                .query_one(
                    &format!(
                        "SELECT holder = $1 AND generation = $2 AND released_ms IS NULL \
                         AND expires_ms > {NOW_MS} FROM ha_lease WHERE id = 1"
                    ),
                    &[&node, &generation],
                )
                .await?;
            Ok(row.try_get::<_, Option<bool>>(0)?.unwrap_or(false))
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("check the lease", within))?
    }

    /// Ends the lease of `generation` now; false when this node did not
    /// hold it.
    pub async fn release(&mut self, generation: i64, within: Duration) -> Result<bool, DbError> {
        let node = self.node.clone();
        let client = self.client(within).await?;
        let work = async move {
            let changed = client
                .execute(
                    &format!(
                        "UPDATE ha_lease SET released_ms = {NOW_MS}, expires_ms = {NOW_MS} \
                         WHERE id = 1 AND holder = $1 AND generation = $2 AND released_ms IS NULL"
                    ),
                    &[&node, &generation],
                )
                .await?;
            Ok(changed == 1)
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("release the lease", within))?
    }

    /// Before the loop starts: refuses the name while another installation
    /// has reported under it within the lease's TTL (its last report was
    /// not "stopped"); else records this installation under the name, as a
    /// standby, with `addresses` (this node's own, for the SSH
    /// certificates' `source-address`).
    pub async fn register(
        &mut self,
        addresses: &[IpAddr],
        within: Duration,
    ) -> Result<Registration, DbError> {
        let node = self.node.clone();
        let installation = self.installation.as_str().to_string();
        let addresses = serde_json::to_string(addresses).unwrap_or_else(|_| "[]".to_string());
        let ttl_ms = millis(self.ttl);
        let client = self.client(within).await?;
        let work = async move {
            let tx = client.transaction().await?;
            let found = tx
                .query_opt(
                    &format!(
                        "SELECT installation, {NOW_MS} - seen_ms, role FROM ha_nodes \
                         WHERE node = $1 FOR UPDATE"
                    ),
                    &[&node],
                )
                .await?;
            if let Some(row) = found {
                let other: Option<String> = row.try_get(0)?;
                let seen_ms_ago: i64 = row.try_get(1)?;
                let role: String = row.try_get(2)?;
                // A row of no installation is from before installations
                // were kept: this node's own previous run, most likely.
                if let Some(other) = other
                    && other != installation
                    && seen_ms_ago < ttl_ms
                    && role != "stopped"
                {
                    return Ok(Registration::NameTaken {
                        installation: other,
                        seen_ms_ago,
                    });
                }
            }
            tx.execute(
                &format!(
                    "INSERT INTO ha_nodes (node, role, generation, seen_ms, detail, installation, \
                     addresses) VALUES ($1, 'standby', 0, {NOW_MS}, '{{}}', $2, $3) \
                     ON CONFLICT (node) DO UPDATE SET role = 'standby', seen_ms = excluded.seen_ms, \
                     installation = excluded.installation, addresses = excluded.addresses"
                ),
                &[&node, &installation, &addresses],
            )
            .await?;
            tx.commit().await?;
            Ok(Registration::Registered)
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("register this node", within))?
    }

    /// Records this node's role for `accessctl ha status`. False when
    /// another installation has taken the name since this one registered
    /// (two nodes started with one `ha.node` at the same moment): the row
    /// is left to it, and the caller says so.
    pub async fn report(
        &mut self,
        role: &str,
        generation: i64,
        detail: &serde_json::Value,
        within: Duration,
    ) -> Result<bool, DbError> {
        let node = self.node.clone();
        let installation = self.installation.as_str().to_string();
        let detail = detail.to_string();
        let role = role.to_string();
        let client = self.client(within).await?;
        let work = async move {
            let written = client
                .execute(
                    &format!(
                        "INSERT INTO ha_nodes (node, role, generation, seen_ms, detail, installation) \
                         VALUES ($1, $2, $3, {NOW_MS}, $4, $5) ON CONFLICT (node) DO UPDATE SET \
                         role = excluded.role, generation = excluded.generation, \
                         seen_ms = excluded.seen_ms, detail = excluded.detail, \
                         installation = excluded.installation \
                         WHERE ha_nodes.installation IS NULL \
                         OR ha_nodes.installation = excluded.installation"
                    ),
                    &[&node, &role, &generation, &detail, &installation],
                )
                .await?;
            Ok(written == 1)
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("report the node's role", within))?
    }

    /// The lease and every node's last report.
    pub async fn view(&mut self, within: Duration) -> Result<LeaseView, DbError> {
        let client = self.client(within).await?;
        let work = async move {
            let row = client
                .query_one(
                    &format!(
                        "SELECT CASE WHEN released_ms IS NULL AND expires_ms > {NOW_MS} \
                         THEN holder END, generation, acquired_ms, renewed_ms, expires_ms, {NOW_MS} \
                         FROM ha_lease WHERE id = 1"
                    ),
                    &[],
                )
                .await?;
            let nodes = client
                .query(
                    "SELECT node, role, generation, seen_ms, detail, installation, addresses \
                     FROM ha_nodes ORDER BY node",
                    &[],
                )
                .await?
                .iter()
                .map(|n| {
                    let detail: String = n.try_get(4)?;
                    let addresses: String = n.try_get(6)?;
                    Ok(NodeView {
                        node: n.try_get(0)?,
                        role: n.try_get(1)?,
                        generation: n.try_get(2)?,
                        seen_ms: n.try_get(3)?,
                        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                        installation: n.try_get(5)?,
                        addresses: serde_json::from_str(&addresses).unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, DbError>>()?;
            Ok(LeaseView {
                holder: row.try_get(0)?,
                generation: row.try_get(1)?,
                acquired_ms: row.try_get(2)?,
                renewed_ms: row.try_get(3)?,
                expires_ms: row.try_get(4)?,
                now_ms: row.try_get(5)?,
                nodes,
            })
        };
        tokio::time::timeout(within, work)
            .await
            .map_err(|_| timed_out("read the lease", within))?
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn timed_out(what: &str, within: Duration) -> DbError {
    DbError::NoConnection {
        reason: format!("could not {what} within {} ms", within.as_millis()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::fixtures::TestStore;

    const WITHIN: Duration = Duration::from_secs(5);

    /// The lease as `node` of its one installation (a restart is the same).
    fn lease(db: &TestStore, store: &crate::store::Store, node: &str, ttl_ms: u64) -> LeaseDb {
        let installation = format!("{:0>32}", hex_of(node));
        installed(db, store, node, &installation, ttl_ms)
    }

    /// The lease as `node` of `installation` (32 hex digits).
    fn installed(
        db: &TestStore,
        store: &crate::store::Store,
        node: &str,
        installation: &str,
        ttl_ms: u64,
    ) -> LeaseDb {
        let _ = db;
        LeaseDb::new(
            store.postgres_target().unwrap().clone(),
            node,
            InstallationId::parse(installation).unwrap(),
            Duration::from_millis(ttl_ms),
        )
    }

    fn hex_of(text: &str) -> String {
        text.bytes().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn won(acquired: Acquire) -> (Held, Previous) {
        match acquired {
            Acquire::Won { held, previous } => (held, previous),
            other => panic!("not won: {other:?}"),
        }
    }

    /// One node takes the free lease; the other sees it held; the holder
    /// renews; once it stops renewing, the lease runs out and the other
    /// takes it with the next generation; the old holder's renewal then
    /// fails (the fencing token is stale) and so does its release.
    #[test]
    fn one_holder_at_a_time_and_a_stale_generation_is_fenced_off() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        let rt = crate::store::fixtures::multi_thread_runtime();
        rt.block_on(async {
            let mut a = lease(&db, &store, "gw-a", 600);
            let mut b = lease(&db, &store, "gw-b", 600);
            let (held_a, previous) = won(a.acquire(WITHIN, Defer::No).await.unwrap());
            assert_eq!(held_a.generation, 1);
            assert_eq!(previous.holder, None);
            assert_eq!(held_a.lasts(), Duration::from_millis(600));
            match b.acquire(WITHIN, Defer::No).await.unwrap() {
                Acquire::Held {
                    holder,
                    expires_in_ms,
                } => {
                    assert_eq!(holder, "gw-a");
                    assert!((1..=600).contains(&expires_in_ms), "{expires_in_ms}");
                }
                other => panic!("{other:?}"),
            }
            let renewed = a.renew(1, WITHIN).await.unwrap().unwrap();
            assert!(renewed.expires_ms >= held_a.expires_ms);
            assert!(a.holds(1, WITHIN).await.unwrap());
            assert!(!b.holds(1, WITHIN).await.unwrap());

            // gw-a stops renewing (paused): past the TTL its lease is gone
            // even before anyone takes it.
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(!a.holds(1, WITHIN).await.unwrap());
            assert_eq!(
                a.renew(1, WITHIN).await.unwrap(),
                None,
                "renewed a lease that ran out"
            );
            let (held_b, previous) = won(b.acquire(WITHIN, Defer::No).await.unwrap());
            assert_eq!(held_b.generation, 2);
            assert_eq!(previous.holder.as_deref(), Some("gw-a"));
            assert!(previous.renewed_ms.unwrap() <= previous.expires_ms);
            assert_eq!(
                a.renew(1, WITHIN).await.unwrap(),
                None,
                "the stale generation renewed"
            );
            assert!(
                !a.release(1, WITHIN).await.unwrap(),
                "the stale generation released"
            );
            assert!(b.holds(2, WITHIN).await.unwrap());

            // A planned stop: released, so gw-a takes it at once.
            assert!(b.release(2, WITHIN).await.unwrap());
            assert!(!b.holds(2, WITHIN).await.unwrap(), "released is not held");
            let (held_a, previous) = won(a.acquire(WITHIN, Defer::No).await.unwrap());
            assert_eq!(held_a.generation, 3);
            assert_eq!(previous.holder.as_deref(), Some("gw-b"));
            assert!(previous.released_ms.is_some(), "a release is told apart");

            // A restarted node takes back its own live lease at once.
            let mut a_again = lease(&db, &store, "gw-a", 600);
            let (held, _) = won(a_again.acquire(WITHIN, Defer::No).await.unwrap());
            assert_eq!(held.generation, 4);
            assert_eq!(a.renew(3, WITHIN).await.unwrap(), None);

            a_again
                .report("active", 4, &serde_json::json!({"x": 1}), WITHIN)
                .await
                .unwrap();
            b.report("standby", 0, &serde_json::json!({}), WITHIN)
                .await
                .unwrap();
            let view = b.view(WITHIN).await.unwrap();
            assert_eq!(view.holder.as_deref(), Some("gw-a"));
            assert_eq!(view.generation, 4);
            let roles: Vec<(&str, &str)> = view
                .nodes
                .iter()
                .map(|n| (n.node.as_str(), n.role.as_str()))
                .collect();
            assert_eq!(roles, [("gw-a", "active"), ("gw-b", "standby")]);
        });
        drop(rt);
    }

    /// Two installations given the same `ha.node` (a copied config): the
    /// second must not take the first's live lease as if it were the
    /// first restarting, or the two take it from each other every second.
    #[test]
    fn a_second_installation_with_the_same_node_name_does_not_take_a_live_lease() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        let rt = crate::store::fixtures::multi_thread_runtime();
        rt.block_on(async {
            let mut first = lease(&db, &store, "gw-a", 60_000);
            let mut copy = installed(&db, &store, "gw-a", &"c".repeat(32), 60_000);
            let (held, _) = won(first.acquire(WITHIN, Defer::No).await.unwrap());
            match copy.acquire(WITHIN, Defer::No).await.unwrap() {
                Acquire::Held { holder, .. } => assert_eq!(holder, "gw-a"),
                other => panic!("the copy took the live lease: {other:?}"),
            }
            assert!(
                first
                    .renew(held.generation, WITHIN)
                    .await
                    .unwrap()
                    .is_some(),
                "the first installation lost its lease to the copy"
            );
        });
        drop(rt);
    }

    /// At start a node claims its name for its installation: refused, naming
    /// the other, while another installation reports under it within the
    /// TTL; its own restart, or a name whose node stopped, is fine. A copy
    /// that registered anyway (a race) finds its reports refused.
    #[test]
    fn a_node_name_reported_by_another_installation_is_refused_at_start() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        let rt = crate::store::fixtures::multi_thread_runtime();
        rt.block_on(async {
            let here: IpAddr = "10.0.1.5".parse().unwrap();
            let mut first = lease(&db, &store, "gw-a", 60_000);
            let copy_id = "c".repeat(32);
            let mut copy = installed(&db, &store, "gw-a", &copy_id, 60_000);
            assert_eq!(
                first.register(&[here], WITHIN).await.unwrap(),
                Registration::Registered
            );
            match copy.register(&[], WITHIN).await.unwrap() {
                Registration::NameTaken {
                    installation,
                    seen_ms_ago,
                } => {
                    assert_eq!(installation, format!("{:0>32}", hex_of("gw-a")));
                    assert!((0..60_000).contains(&seen_ms_ago), "{seen_ms_ago}");
                }
                other => panic!("the copy registered: {other:?}"),
            }
            // The first one restarting is itself.
            let mut again = lease(&db, &store, "gw-a", 60_000);
            assert_eq!(
                again.register(&[here], WITHIN).await.unwrap(),
                Registration::Registered
            );
            assert!(
                first
                    .report("standby", 0, &serde_json::json!({}), WITHIN)
                    .await
                    .unwrap()
            );
            assert!(
                !copy
                    .report("active", 9, &serde_json::json!({}), WITHIN)
                    .await
                    .unwrap(),
                "the copy overwrote the first's report"
            );
            let view = first.view(WITHIN).await.unwrap();
            assert_eq!(view.nodes.len(), 1);
            assert_eq!(view.nodes[0].addresses, [here]);
            assert_eq!(view.nodes[0].role, "standby");

            // Once the first has stopped, the name is free for another.
            assert!(
                first
                    .report("stopped", 0, &serde_json::json!({}), WITHIN)
                    .await
                    .unwrap()
            );
            assert_eq!(
                copy.register(&[], WITHIN).await.unwrap(),
                Registration::Registered
            );
        });
        drop(rt);
    }

    /// Deferring (just after an outage), a node leaves a lease that ran out
    /// to its last holder, which takes it back; a released lease is taken
    /// at once even so; without deferring, the run-out lease is taken.
    #[test]
    fn deferring_leaves_a_run_out_lease_to_its_last_holder() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        let rt = crate::store::fixtures::multi_thread_runtime();
        rt.block_on(async {
            let mut a = lease(&db, &store, "gw-a", 300);
            let mut b = lease(&db, &store, "gw-b", 300);
            won(a.acquire(WITHIN, Defer::No).await.unwrap());
            tokio::time::sleep(Duration::from_millis(400)).await;
            match b.acquire(WITHIN, Defer::ToLastHolder).await.unwrap() {
                Acquire::Held {
                    holder,
                    expires_in_ms,
                } => {
                    assert_eq!(holder, "gw-a");
                    assert!(expires_in_ms <= 0, "{expires_in_ms}");
                }
                other => panic!("took the lease from its last holder: {other:?}"),
            }
            let (held, _) = won(a.acquire(WITHIN, Defer::ToLastHolder).await.unwrap());
            assert_eq!(held.generation, 2);
            assert!(a.release(2, WITHIN).await.unwrap());
            let (held, _) = won(b.acquire(WITHIN, Defer::ToLastHolder).await.unwrap());
            assert_eq!(held.generation, 3, "a released lease is not deferred");
            tokio::time::sleep(Duration::from_millis(400)).await;
            let (held, previous) = won(a.acquire(WITHIN, Defer::No).await.unwrap());
            assert_eq!(
                (held.generation, previous.holder.as_deref()),
                (4, Some("gw-b"))
            );
        });
        drop(rt);
    }

    /// Two nodes racing for a free lease: exactly one wins each generation.
    #[test]
    fn racing_nodes_never_both_win() {
        let Some(db) = TestStore::postgres() else {
            return;
        };
        let store = db.open();
        let rt = crate::store::fixtures::multi_thread_runtime();
        rt.block_on(async {
            for round in 0..20 {
                let mut a = lease(&db, &store, "gw-a", 60_000);
                let mut b = lease(&db, &store, "gw-b", 60_000);
                let (ra, rb) =
                    tokio::join!(a.acquire(WITHIN, Defer::No), b.acquire(WITHIN, Defer::No));
                let winners = [ra.unwrap(), rb.unwrap()]
                    .iter()
                    .filter(|r| matches!(r, Acquire::Won { .. }))
                    .count();
                assert_eq!(winners, 1, "round {round}");
                let view = a.view(WITHIN).await.unwrap();
                let holder = view.holder.clone().unwrap();
                let mut owner = if holder == "gw-a" { a } else { b };
                assert!(owner.release(view.generation, WITHIN).await.unwrap());
            }
        });
        drop(rt);
    }
}
