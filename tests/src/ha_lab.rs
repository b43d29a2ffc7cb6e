//! An HA pair behind one elastic IP, for the failover tests and benchmark
//! (issue 14): two accessd in namespaces of their own, sharing a real
//! PostgreSQL and a moto "AWS", in front of the [`Topology`]'s stock
//! WireGuard client and research host.
//!
//! ```text
//!  client ns ── internet bridge ──┐
//!                                  edge ns (the Topology's gateway ns): the internet's
//!  gw-a ns  eth0 10.9.1.2 ── ea ──┤  edge and the VPC's router; 10.9.0.1 on its lo
//!  gw-b ns  eth0 10.9.2.2 ── eb ──┤  serves moto (:5000), PostgreSQL, and runs the
//!  research ns 10.0.3.140 ────────┘  "EIP router"
//! ```
//!
//! The gateways keep their shared identity (WireGuard key, SSH host key,
//! secrets key, portal certificate) in moto's SSM, as on AWS: the first to
//! start stores it, the other reads it.
//!
//! Both gateways hold the elastic IP (198.51.100.10) on their loopback and
//! answer from it; the edge routes it, and the VPN pool, to whichever
//! gateway moto says: the EIP router (a Python loop in the edge namespace,
//! bounded in time) asks moto every 100 ms which network interface the
//! elastic IP is associated with and where the private route table's pool
//! route points, and replaces the edge's routes when that changes, as AWS's
//! edge and VPC router would. The client follows the elastic IP exactly as
//! on AWS: its config never changes.
//!
//! A gateway can reach moto through a fault-injecting proxy of its own, in
//! its namespace ([`PairLab::aws_proxy`], [`PairLab::start_via`]).
//!
//! Everything is torn down on drop (the Topology's namespaces; the two
//! gateway namespaces; the PostgreSQL server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::aws::fakes::AwsProxy;
use crate::aws::{REGION, aws_env, boto3_in, boto3_prelude, moto_venv};
use crate::netns::{Host, POOL, RESEARCH_SUBNET, Topology};
use crate::postgres::PgServer;
use crate::{Daemon, output_within, require, stderr, stdout};

/// The pair's elastic IP, as the clients and the edge see it.
pub const ELASTIC_IP: &str = "198.51.100.10";
/// The portal's port on the elastic IP.
pub const PORTAL_PORT: u16 = 8443;
/// The pair's name (`gateway.name`, the AWS tag).
pub const PAIR: &str = "gh-pair";
/// Where the edge serves moto and PostgreSQL to both gateways.
const SERVICES: &str = "10.9.0.1";
const MOTO_PORT: u16 = 5000;
/// The EIP router gives up after this (every loop is bounded).
const ROUTER_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The moto world of a pair: one VPC, two subnets in two zones, one
/// private route table, one instance (and interface) per gateway.
#[derive(Debug, Clone)]
pub struct PairWorld {
    pub vpc: String,
    pub route_table: String,
    pub nodes: [NodeFacts; 2],
}

/// What one gateway's instance looks like to AWS.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: &'static str,
    pub subnet: String,
    pub az: String,
    pub instance: String,
    pub eni: String,
    /// Its namespace, and its address on the link to the edge.
    pub ns: String,
    pub addr: String,
}

pub struct PairLab {
    /// Unique per lab in this process: the gateways' interface names.
    id: u32,
    pub topo: Topology,
    pub pg: PgServer,
    pub world: PairWorld,
    dir: PathBuf,
}

impl PairLab {
    /// Builds the world, or `None` (printing why) when a prerequisite is
    /// missing; with `GATEHOUSE_E2E=1` that fails.
    pub fn create() -> Option<PairLab> {
        let venv = moto_venv();
        if !require(
            venv.join("bin/moto_server").exists(),
            &format!(
                "the HA failover tests need moto[server] in {} (tests/run.sh installs it)",
                venv.display()
            ),
        ) {
            return None;
        }
        let topo = Topology::create()?;
        let edge = topo.ns(Host::Gateway).to_string();
        let id = crate::netns::next_id();
        let tag = format!("{}-{id}", std::process::id());
        let dir = topo.dir().join("pair");
        std::fs::create_dir_all(&dir).unwrap();
        let ip = |args: &str| {
            let argv: Vec<&str> = args.split_whitespace().collect();
            let out = output_within(
                {
                    let mut cmd = Command::new("ip");
                    cmd.args(&argv);
                    cmd
                },
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "ip {args}: {}", stderr(&out));
        };
        ip(&format!("-n {edge} addr add {SERVICES}/32 dev lo"));
        // The internet reaches the elastic IP, and nothing else inside.
        ip(&format!(
            "-n {edge} rule add iif internet to {ELASTIC_IP}/32 lookup main pref 50"
        ));
        let mut nodes = Vec::new();
        for (i, name) in ["gw-a", "gw-b"].into_iter().enumerate() {
            let ns = format!("ghp{tag}-{name}");
            let leg = format!("e{}", ["a", "b"][i]);
            let net = i + 1;
            let addr = format!("10.9.{net}.2");
            ip(&format!("netns add {ns}"));
            // Removed with the topology's: its drop kills what runs inside
            // the namespaces it made; ours are removed by PairLab's drop.
            ip(&format!("-n {ns} link set lo up"));
            ip(&format!(
                "-n {edge} link add {leg} type veth peer name eth0 netns {ns}"
            ));
            ip(&format!("-n {edge} addr add 10.9.{net}.1/30 dev {leg}"));
            ip(&format!("-n {edge} link set {leg} up"));
            ip(&format!("-n {ns} addr add {addr}/30 dev eth0"));
            ip(&format!("-n {ns} link set eth0 up"));
            ip(&format!("-n {ns} addr add {ELASTIC_IP}/32 dev lo"));
            ip(&format!(
                "-n {ns} route add default via 10.9.{net}.1 src {ELASTIC_IP}"
            ));
            ip(&format!(
                "-n {ns} route add {SERVICES}/32 via 10.9.{net}.1 src {addr}"
            ));
            let sysctl = output_within(
                {
                    let mut cmd = Command::new("ip");
                    cmd.args([
                        "netns",
                        "exec",
                        &ns,
                        "sysctl",
                        "-qw",
                        "net.ipv4.ip_forward=1",
                    ]);
                    cmd
                },
                Duration::from_secs(30),
            );
            assert!(sysctl.status.success(), "{}", stderr(&sysctl));
            nodes.push((name, ns, addr));
        }

        let moto = venv.join("bin/moto_server");
        topo.spawn(
            Host::Gateway,
            "moto",
            &[
                moto.to_str().unwrap(),
                "-H",
                SERVICES,
                "-p",
                &MOTO_PORT.to_string(),
            ],
        );
        topo.wait_tcp(
            Host::Gateway,
            SERVICES,
            MOTO_PORT,
            Duration::from_secs(30),
            "moto",
        );
        let pg = PgServer::start_in(Some((&edge, SERVICES)))?;

        let mut lab = PairLab {
            id,
            topo,
            pg,
            world: PairWorld {
                vpc: String::new(),
                route_table: String::new(),
                nodes: [0, 1].map(|i| NodeFacts {
                    name: nodes[i].0,
                    subnet: String::new(),
                    az: String::new(),
                    instance: String::new(),
                    eni: String::new(),
                    ns: nodes[i].1.clone(),
                    addr: nodes[i].2.clone(),
                }),
            },
            dir,
        };
        lab.build_world();
        lab.start_router();
        lab.make_shared_files();
        Some(lab)
    }

    /// Runs Python with boto3 clients `ec2` and `ssm` on moto, in the edge
    /// namespace, and returns the JSON of the variable `out`.
    pub fn python(&self, code: &str) -> Value {
        boto3_in(self.topo.ns(Host::Gateway), &moto_url(), code)
    }

    fn build_world(&mut self) {
        let made = self.python(&format!(
            "vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']\n\
             rtb = ec2.create_route_table(VpcId=vpc)['RouteTable']['RouteTableId']\n\
             image = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']\n\
             base = ec2.describe_security_groups(Filters=[{{'Name': 'vpc-id', 'Values': [vpc]}}, {{'Name': 'group-name', 'Values': ['default']}}])['SecurityGroups'][0]['GroupId']\n\
             nodes = []\n\
             for i, zone in enumerate(['a', 'b']):\n\
             \x20   az = '{REGION}' + zone\n\
             \x20   subnet = ec2.create_subnet(VpcId=vpc, CidrBlock='10.0.1%d.0/24' % i, AvailabilityZone=az)['Subnet']['SubnetId']\n\
             \x20   inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType='t3.micro', SubnetId=subnet, SecurityGroupIds=[base], TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [{{'Key': 'gatehouse:gateway', 'Value': '{PAIR}'}}]}}])['Instances'][0]\n\
             \x20   nodes.append(dict(subnet=subnet, az=az, instance=inst['InstanceId'], eni=inst['NetworkInterfaces'][0]['NetworkInterfaceId']))\n\
             out = dict(vpc=vpc, rtb=rtb, nodes=nodes)\n"
        ));
        self.world.vpc = text(&made["vpc"]);
        self.world.route_table = text(&made["rtb"]);
        for (i, node) in self.world.nodes.iter_mut().enumerate() {
            let m = &made["nodes"][i];
            node.subnet = text(&m["subnet"]);
            node.az = text(&m["az"]);
            node.instance = text(&m["instance"]);
            node.eni = text(&m["eni"]);
        }
    }

    /// The EIP router (see the module doc); its log says each change with a
    /// timestamp.
    fn start_router(&self) {
        let [a, b] = &self.world.nodes;
        let script = format!(
            "{prelude}import subprocess, time, sys\n\
             hops = {{'{eni_a}': '{addr_a}', '{eni_b}': '{addr_b}'}}\n\
             routes = {{}}\n\
             def point(dst, eni):\n\
             \x20   hop = hops.get(eni)\n\
             \x20   if hop is None or routes.get(dst) == hop:\n\
             \x20       return\n\
             \x20   subprocess.run(['ip', 'route', 'replace', dst, 'via', hop], check=True)\n\
             \x20   routes[dst] = hop\n\
             \x20   print('%.3f %s -> %s' % (time.time(), dst, hop), flush=True)\n\
             end = time.time() + {lifetime}\n\
             while time.time() < end:\n\
             \x20   try:\n\
             \x20       for a in ec2.describe_addresses(Filters=[{{'Name': 'tag:gatehouse:gateway', 'Values': ['{PAIR}']}}])['Addresses']:\n\
             \x20           point('{ELASTIC_IP}/32', a.get('NetworkInterfaceId'))\n\
             \x20       for t in ec2.describe_route_tables(RouteTableIds=['{rtb}'])['RouteTables']:\n\
             \x20           for r in t['Routes']:\n\
             \x20               if r.get('DestinationCidrBlock') == '{POOL}':\n\
             \x20                   point('{POOL}', r.get('NetworkInterfaceId'))\n\
             \x20   except Exception as e:\n\
             \x20       print('error', e, flush=True)\n\
             \x20   time.sleep(0.1)\n",
            prelude = boto3_prelude(&moto_url()),
            eni_a = a.eni,
            eni_b = b.eni,
            addr_a = a.addr,
            addr_b = b.addr,
            rtb = self.world.route_table,
            lifetime = ROUTER_LIFETIME.as_secs(),
        );
        let python = moto_venv().join("bin/python");
        self.topo.spawn(
            Host::Gateway,
            "eip-router",
            &[python.to_str().unwrap(), "-c", &script],
        );
    }

    /// The EIP router's log: one `<unix time> <destination> -> <hop>` line
    /// per change.
    pub fn router_log(&self) -> String {
        self.topo.process_log("eip-router")
    }

    /// The file both gateways are given: the password of the database. (The
    /// WireGuard key, the SSH host key, the secrets key and the portal's
    /// certificate they share through SSM, as on AWS.)
    fn make_shared_files(&self) {
        use std::os::unix::fs::PermissionsExt;
        let password = self.dir.join("pg-password");
        std::fs::write(&password, format!("{}\n", self.pg.password())).unwrap();
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config of gateway `i` (0: gw-a, 1: gw-b), with a lease of
    /// `lease_ttl`: the VPN gated by a portal login (`vpn.require_login`,
    /// the default), the portal (no TOTP) and the jump host on every
    /// address, every key from SSM.
    pub fn config(&self, i: usize, lease_ttl: &str) -> String {
        let node = &self.world.nodes[i];
        let iface = format!(
            "ghp{}-{}{}",
            std::process::id() % 100_000,
            self.id % 100,
            ["a", "b"][i]
        );
        format!(
            r#"[gateway]
name = "{PAIR}"
public_endpoint = "{ELASTIC_IP}"

[vpn]
listen = "0.0.0.0:51820"
interface = "{iface}"
pool = "{POOL}"
nat = "route"

[ssh]
listen = "0.0.0.0:2222"

[portal]
listen = "0.0.0.0:{PORTAL_PORT}"
url = "https://{ELASTIC_IP}:{PORTAL_PORT}"
require_totp = false

[metrics]
listen = "127.0.0.1:0"

[[group]]
name = "research"
subnets = ["{RESEARCH_SUBNET}"]

[aws]
region = "{REGION}"
endpoint_url = "{moto}"
apply_on_start = true
private_route_tables = ["{rtb}"]
admin_cidrs = []
instance_id = "{instance}"
network_interface_id = "{eni}"
vpc_id = "{vpc}"
subnet_id = "{subnet}"
availability_zone = "{az}"

[store]
url = "{url}?sslmode=disable"
password_file = "{dir}/pg-password"

[ha]
node = "{name}"
lease_ttl = "{lease_ttl}"
"#,
            dir = self.dir.display(),
            moto = moto_url(),
            rtb = self.world.route_table,
            instance = node.instance,
            eni = node.eni,
            vpc = self.world.vpc,
            subnet = node.subnet,
            az = node.az,
            url = self.pg.url(),
            name = node.name,
        )
    }

    /// Starts gateway `i` in its namespace.
    pub fn start(&self, i: usize, lease_ttl: &str) -> Daemon {
        Daemon::start_in_with_env(
            Some(&self.world.nodes[i].ns),
            &self.config(i, lease_ttl),
            &aws_env(),
        )
    }

    /// A recording, fault-injecting proxy in front of moto for gateway `i`,
    /// in its namespace (drop it before the lab).
    pub fn aws_proxy(&self, i: usize) -> AwsProxy {
        let moto: SocketAddr = format!("{SERVICES}:{MOTO_PORT}")
            .parse()
            .expect("moto's address");
        AwsProxy::start(Some(&self.world.nodes[i].ns), Some(moto))
    }

    /// Starts gateway `i`, its AWS calls through `proxy`.
    pub fn start_via(&self, i: usize, lease_ttl: &str, proxy: &AwsProxy) -> Daemon {
        let config = self.config(i, lease_ttl).replacen(
            &format!("endpoint_url = \"{}\"", moto_url()),
            &format!("endpoint_url = \"{}\"", proxy.url()),
            1,
        );
        Daemon::start_in_with_env(Some(&self.world.nodes[i].ns), &config, &aws_env())
    }

    /// The network interface moto has the pair's elastic IP associated
    /// with, if any.
    pub fn elastic_ip_eni(&self) -> Option<String> {
        let found = self.python(&format!(
            "out = [a.get('NetworkInterfaceId') for a in ec2.describe_addresses(Filters=[{{'Name': 'tag:gatehouse:gateway', 'Values': ['{PAIR}']}}])['Addresses']]"
        ));
        found
            .as_array()
            .and_then(|all| all.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Where the edge routes the elastic IP now (`ip route get`): the hop's
    /// address, if any.
    pub fn elastic_ip_hop(&self) -> Option<String> {
        let out = self.topo.exec(
            Host::Gateway,
            &["ip", "route", "show", &format!("{ELASTIC_IP}/32")],
        );
        let text = stdout(&out);
        text.split_whitespace()
            .skip_while(|w| *w != "via")
            .nth(1)
            .map(str::to_string)
    }
}

impl Drop for PairLab {
    fn drop(&mut self) {
        for node in &self.world.nodes {
            if let Ok(pids) = Command::new("ip")
                .args(["netns", "pids", &node.ns])
                .output()
            {
                for pid in stdout(&pids).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &node.ns]).output();
        }
    }
}

/// moto, as both gateways and the edge reach it.
fn moto_url() -> String {
    format!("http://{SERVICES}:{MOTO_PORT}")
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

/// How long until `probe` first succeeds, polled every 100 ms, at most
/// `limit`.
pub fn time_until(limit: Duration, mut probe: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if probe() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
