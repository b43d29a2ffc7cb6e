//! The elastic IP of an HA pair ends on the lease holder (issue 24,
//! finding 3): a node that lost the lease can have an `AssociateAddress`
//! on its way to AWS that lands after the other node took over. A
//! fault-injecting proxy in front of moto, in gw-a's namespace, holds gw-a's
//! first `AssociateAddress` until gw-b is active and has the elastic IP,
//! then lets it through; the lease holder puts the association back. The
//! record of that repair, refused by the database at first, is written once
//! the database takes records again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use gatehouse_tests::ha_lab::{PairLab, time_until};
use gatehouse_tests::ha_role;
use nix::sys::signal::Signal;

/// How soon the lease holder repairs the association (its reconcile runs
/// every 30 s), with a few seconds for the describe and associate calls.
const REPAIRED_WITHIN: Duration = Duration::from_secs(35);

/// gw-a takes the lease with its `AssociateAddress` held in the proxy; it
/// is paused past its 3 s lease, gw-b takes over and moves the elastic IP;
/// then gw-a's held call reaches moto (the elastic IP is on gw-a again,
/// behind the lease holder's back) and gw-a wakes as the standby. Within
/// 35 s the elastic IP is on gw-b again. The database refuses audit
/// records meanwhile; once it takes them again, gw-b's record of the repair
/// is written (kept, not lost) within 35 s.
#[test]
fn a_late_association_by_a_node_that_lost_the_lease_is_put_back_on_the_holder() {
    let Some(lab) = PairLab::create() else {
        return;
    };
    let started = Instant::now();
    let proxy_a = lab.aws_proxy(0);
    proxy_a.hold("ec2:AssociateAddress");
    let a = lab.start_via(0, "3s", &proxy_a);
    time_until(Duration::from_secs(15), || ha_role(&a) == "active").expect("gw-a active");
    assert!(
        proxy_a.wait_holding(Duration::from_secs(15)),
        "gw-a's take-over sent no AssociateAddress:\n{}",
        a.log_tail(30)
    );
    let b = lab.start(1, "3s");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ha_role(&b), "standby");

    // gw-a loses the lease while its call is on its way.
    a.signal(Signal::SIGSTOP);
    let eni_a = lab.world.nodes[0].eni.clone();
    let eni_b = lab.world.nodes[1].eni.clone();
    time_until(Duration::from_secs(20), || {
        lab.elastic_ip_eni().as_deref() == Some(eni_b.as_str())
    })
    .unwrap_or_else(|| {
        panic!(
            "gw-b did not take the elastic IP (role {}):\n{}",
            ha_role(&b),
            b.log_tail(30)
        )
    });
    assert_eq!(ha_role(&b), "active");

    // The held call lands now: the elastic IP moves to the node that lost
    // the lease.
    proxy_a.release();
    let landed = time_until(Duration::from_secs(10), || {
        lab.elastic_ip_eni().as_deref() == Some(eni_a.as_str())
    });
    assert!(
        landed.is_some(),
        "the held AssociateAddress never reached moto"
    );
    let late_at = Instant::now();
    lab.pg.psql(
        "CREATE FUNCTION gh_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$; \
         CREATE TRIGGER gh_refuse BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION gh_refuse();",
    );
    a.signal(Signal::SIGCONT);

    let repaired = time_until(REPAIRED_WITHIN, || {
        lab.elastic_ip_eni().as_deref() == Some(eni_b.as_str())
    });
    eprintln!(
        "late association repaired after {repaired:?} (test {:?} so far)",
        started.elapsed()
    );
    assert!(
        repaired.is_some(),
        "the elastic IP stayed on gw-a, which lost the lease, for {:?} (gw-b is {}):\ngw-b:\n{}",
        late_at.elapsed(),
        ha_role(&b),
        b.log_tail(30)
    );
    assert_eq!(ha_role(&b), "active");
    time_until(Duration::from_secs(10), || ha_role(&a) == "standby").expect("gw-a standby");
    let of_repair = || {
        b.audit_of("aws.change")
            .into_iter()
            .filter(|r| r["source"] == "ha.reconcile")
            .collect::<Vec<_>>()
    };
    assert!(of_repair().is_empty(), "written while refused?");
    lab.pg.psql("DROP TRIGGER gh_refuse ON audit_log;");
    time_until(REPAIRED_WITHIN, || !of_repair().is_empty()).unwrap_or_else(|| {
        panic!(
            "gw-b's record of the repair was lost: {:#?}\n{}",
            b.audit_of("aws.change"),
            b.log_tail(30)
        )
    });
    let repair = of_repair();
    assert!(
        repair
            .iter()
            .any(|r| r["detail"]["change"].to_string().contains("associate")),
        "{repair:#?}"
    );
    let verified = b.ctl_json(&["audit", "verify"]);
    assert_eq!(verified["intact"], true, "{verified}");
    eprintln!("test took {:?}", started.elapsed());
}
