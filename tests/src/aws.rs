//! Harness for the AWS provisioner's end-to-end tests: a network namespace
//! of the test's own holding the real moto server (PyPI `moto[server]`, from
//! the venv `tests/run.sh` installs), a fake IMDSv2 endpoint, a recording
//! proxy in front of moto ([`fakes`]), and accessd with the VPN on (so that
//! `vpn.nat = "route"` applies). Independent checks describe moto directly
//! with boto3 from the same venv ([`AwsLab::python`]), never through accessd.
//!
//! Typical use (see `tests/tests/aws.rs`):
//! ```no_run
//! use gatehouse_tests::aws::AwsLab;
//! let Some(lab) = AwsLab::create() else { return };
//! let gw = lab.start_gateway(&lab.config(""));
//! gw.ctl_ok(&["aws", "apply"]);
//! let groups = lab.python("out = ec2.describe_security_groups()['SecurityGroups']");
//! ```
//!
//! [`LoopbackMoto`] is a lighter moto of a test's own, on the host's loopback
//! (no namespace, no root), for the real AWS CLI ([`aws_cli`]) to talk to.

pub mod fakes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::{Daemon, have_tool, is_root, output_within, require, stderr, stdout};
use fakes::{AwsProxy, FakeImds};

pub const REGION: &str = "eu-west-3";
/// moto's port inside the lab's namespace.
const MOTO_PORT: u16 = 5000;
pub const POOL: &str = "10.200.0.0/24";
pub const ADMIN_CIDR: &str = "203.0.113.7/32";
/// The VPN's port in [`AwsLab::config`]: an "auto" endpoint is the elastic IP
/// and this port.
pub const VPN_PORT: u16 = 51820;

/// The venv holding moto and boto3 (`GATEHOUSE_MOTO_VENV`, as tests/run.sh sets it).
pub fn moto_venv() -> PathBuf {
    std::env::var_os("GATEHOUSE_MOTO_VENV").map_or_else(
        || PathBuf::from("/var/tmp/gatehouse-moto-venv"),
        PathBuf::from,
    )
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets
/// made there belong to that namespace for their whole life.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(Path::new("/run/netns").join(ns))
                    .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
                f()
            })
            .join()
            .expect("netns thread")
    })
}

/// The EC2 world moto holds for one test: a VPC with a public subnet (the
/// gateway's), a private route table, and the gateway instance.
#[derive(Debug, Clone)]
pub struct World {
    pub vpc: String,
    pub subnet: String,
    pub route_table: String,
    pub az: String,
    pub instance: String,
    pub eni: String,
    pub mac: String,
}

/// One test's namespace with moto, the fakes, and a temp dir.
pub struct AwsLab {
    pub ns: String,
    pub iface: String,
    dir: TempDir,
    moto: Mutex<Option<Child>>,
    pub imds: FakeImds,
    pub proxy: AwsProxy,
    pub world: World,
}

static NEXT: AtomicU32 = AtomicU32::new(0);
static CREATE_LOCK: Mutex<()> = Mutex::new(());

impl AwsLab {
    /// Builds the lab, or returns `None` (printing `SKIPPED: <reason>`) when
    /// root, `ip`, `/dev/net/tun` or the moto venv is missing; with
    /// `GATEHOUSE_E2E=1` a missing prerequisite fails instead.
    pub fn create() -> Option<Self> {
        let venv = moto_venv();
        if !(require(
            is_root(),
            "the AWS tests need root (network namespaces, a TUN device)",
        ) && require(have_tool("ip"), "the AWS tests need `ip` (iproute2)")
            && require(
                Path::new("/dev/net/tun").exists(),
                "the AWS tests need /dev/net/tun",
            )
            && require(
                venv.join("bin/moto_server").exists(),
                &format!(
                    "the AWS tests need moto[server] in {} (tests/run.sh installs it)",
                    venv.display()
                ),
            ))
        {
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let ns = format!("ghaws{pid}-{n}");
        {
            let _serial = CREATE_LOCK
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            run_ok(Command::new("ip").args(["netns", "add", &ns]));
        }
        // From here a panic must still remove the namespace: build inside a guard.
        let guard = NsGuard(ns.clone());
        run_ok(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{ns}-"))
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let moto = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(venv.join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &MOTO_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        let moto_addr: SocketAddr = ([127, 0, 0, 1], MOTO_PORT).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !in_netns(&ns, || {
            std::net::TcpStream::connect_timeout(&moto_addr, Duration::from_millis(200)).is_ok()
        }) {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start:\n{}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let imds = FakeImds::start(Some(&ns));
        let proxy = AwsProxy::start(Some(&ns), Some(moto_addr));
        std::mem::forget(guard);
        let mut lab = AwsLab {
            iface: format!("gha{}-{n}", pid % 100_000),
            ns,
            dir,
            moto: Mutex::new(Some(moto)),
            imds,
            proxy,
            world: World {
                vpc: String::new(),
                subnet: String::new(),
                route_table: String::new(),
                az: String::new(),
                instance: String::new(),
                eni: String::new(),
                mac: String::new(),
            },
        };
        lab.world = lab.build_world();
        lab.serve_metadata();
        Some(lab)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs Python with boto3 clients `ec2` and `ssm` on moto (directly, not
    /// through the proxy) and returns the JSON of the variable `out`.
    pub fn python(&self, code: &str) -> Value {
        boto3_in(&self.ns, &format!("http://127.0.0.1:{MOTO_PORT}"), code)
    }

    /// A new gateway instance in the same subnet (the old one is terminated),
    /// and IMDS now describes it: what replacing the instance looks like.
    pub fn replace_instance(&mut self) {
        let old = self.world.instance.clone();
        let new = self.python(&format!(
            "ec2.terminate_instances(InstanceIds=['{old}'])\n{}",
            run_instance(
                &format!("'{}'", self.world.vpc),
                &format!("'{}'", self.world.subnet)
            )
        ));
        self.world.instance = str_of(&new, "instance");
        self.world.eni = str_of(&new, "eni");
        self.world.mac = str_of(&new, "mac");
        self.serve_metadata();
    }

    /// accessd's config: VPN on (route mode) on loopback of the namespace,
    /// `public_endpoint = "auto"`, two groups (one with ports), and an
    /// `[aws]` section on the proxy and the fake IMDS. `aws_extra` is added
    /// to `[aws]`.
    pub fn config(&self, aws_extra: &str) -> String {
        format!(
            r#"[gateway]
name = "gh-aws"
public_endpoint = "auto"

[vpn]
listen = "127.0.0.1:{VPN_PORT}"
interface = "{iface}"
pool = "{POOL}"
require_login = false
nat = "route"

[ssh]
listen = "127.0.0.1:2222"

[portal]
listen = "127.0.0.1:8443"
require_totp = false

[metrics]
listen = "127.0.0.1:9586"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]

[[group]]
name = "apps"
subnets = ["10.0.2.0/24"]
ports = [22, 9000]

[aws]
region = "{REGION}"
endpoint_url = "{endpoint}"
imds_endpoint = "{imds}"
private_route_tables = ["{rtb}"]
admin_cidrs = ["{ADMIN_CIDR}"]
{aws_extra}
"#,
            iface = self.iface,
            endpoint = self.proxy.url(),
            imds = self.imds.url(),
            rtb = self.world.route_table,
        )
    }

    /// Starts accessd in the lab's namespace with test credentials.
    pub fn start_gateway(&self, config: &str) -> Daemon {
        Daemon::start_in_with_env(Some(&self.ns), config, &aws_env())
    }

    fn build_world(&self) -> World {
        let made = self.python(&format!(
            "vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']\n\
             az = '{REGION}a'\n\
             subnet = ec2.create_subnet(VpcId=vpc, CidrBlock='10.0.1.0/24', AvailabilityZone=az)['Subnet']['SubnetId']\n\
             rtb = ec2.create_route_table(VpcId=vpc)['RouteTable']['RouteTableId']\n\
             {}\n\
             out.update(vpc=vpc, subnet=subnet, rtb=rtb, az=az)\n",
            run_instance("vpc", "subnet")
        ));
        World {
            vpc: str_of(&made, "vpc"),
            subnet: str_of(&made, "subnet"),
            route_table: str_of(&made, "rtb"),
            az: str_of(&made, "az"),
            instance: str_of(&made, "instance"),
            eni: str_of(&made, "eni"),
            mac: str_of(&made, "mac"),
        }
    }

    fn serve_metadata(&self) {
        let w = &self.world;
        self.imds.set("instance-id", &w.instance);
        self.imds.set("placement/region", REGION);
        self.imds.set("placement/availability-zone", &w.az);
        self.imds.set("mac", &w.mac);
        let mac = format!("network/interfaces/macs/{}", w.mac);
        self.imds.set(&format!("{mac}/interface-id"), &w.eni);
        self.imds.set(&format!("{mac}/vpc-id"), &w.vpc);
        self.imds.set(&format!("{mac}/subnet-id"), &w.subnet);
    }
}

impl Drop for AwsLab {
    fn drop(&mut self) {
        if let Some(mut moto) = self
            .moto
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = moto.kill();
            let _ = moto.wait();
        }
        NsGuard::remove(&self.ns);
    }
}

/// A moto server of one test's own on the host's loopback, on a port the
/// kernel picks: no namespace and no root, for clients that need only the
/// AWS API (the private host's AWS CLI in `tests/tests/packaging.rs`).
/// Stopped when dropped.
pub struct LoopbackMoto {
    child: Child,
    url: String,
    _log: tempfile::NamedTempFile,
}

impl LoopbackMoto {
    /// Starts it, or returns `None` (printed `SKIPPED`, or a failure under
    /// `GATEHOUSE_E2E=1`) without the moto venv.
    pub fn start() -> Option<Self> {
        let venv = moto_venv();
        if !require(
            venv.join("bin/moto_server").exists(),
            &format!(
                "moto[server] in {} (tests/run.sh installs it)",
                venv.display()
            ),
        ) {
            return None;
        }
        // Port 0 and the port printed: no race for a free port between
        // tests. The server stops when its stdin closes, should Drop not run.
        const SERVE: &str = "import sys\n\
            from moto.server import ThreadedMotoServer\n\
            server = ThreadedMotoServer('127.0.0.1', 0, verbose=False)\n\
            server.start()\n\
            print(server.get_host_and_port()[1], flush=True)\n\
            sys.stdin.read()\n";
        // Its request log goes to a file, shown if it does not start.
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(venv.join("bin/python"))
            .args(["-c", SERVE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start moto");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "moto did not start:\n{}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        };
        Some(LoopbackMoto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _log: log,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The environment that points the AWS CLI (v1.29+ and v2 read
    /// `AWS_ENDPOINT_URL`) at this server, with test credentials and no
    /// config file or instance metadata of the machine's.
    pub fn cli_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }
}

impl Drop for LoopbackMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AWS CLI (PyPI `awscli`, which tests/run.sh installs into the moto
/// venv), or `None` (printed `SKIPPED`, or a failure under `GATEHOUSE_E2E=1`).
pub fn aws_cli() -> Option<PathBuf> {
    let aws = moto_venv().join("bin/aws");
    require(
        aws.exists(),
        &format!(
            "the AWS CLI in {} (tests/run.sh installs awscli there)",
            moto_venv().display()
        ),
    )
    .then_some(aws)
}

/// Removes a namespace (and kills what runs in it) unless forgotten.
struct NsGuard(String);

impl NsGuard {
    fn remove(ns: &str) {
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", ns]).output() {
            for pid in stdout(&pids).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        Self::remove(&self.0);
    }
}

/// Runs Python with boto3 clients `ec2` and `ssm` on the moto at
/// `endpoint`, in the namespace `ns`, and returns the JSON of the variable
/// `out` the code sets.
pub fn boto3_in(ns: &str, endpoint: &str, code: &str) -> Value {
    let script = format!(
        "{}{code}\nprint(json.dumps(out, default=str))\n",
        boto3_prelude(endpoint)
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(moto_venv().join("bin/python"))
        .args(["-c", &script]);
    let out = output_within(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "python failed:\n{code}\n{}",
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// Python that makes boto3 clients `ec2` and `ssm` on the moto at
/// `endpoint` and sets `out = None`.
pub fn boto3_prelude(endpoint: &str) -> String {
    format!(
        "import json, base64, boto3\n\
         kw = dict(endpoint_url='{endpoint}', region_name='{REGION}', \
         aws_access_key_id='testing', aws_secret_access_key='testing')\n\
         ec2 = boto3.client('ec2', **kw)\nssm = boto3.client('ssm', **kw)\nout = None\n"
    )
}

/// Static test credentials for accessd (moto accepts any).
pub fn aws_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_CONFIG_FILE", "/dev/null"),
    ]
}

/// Python that runs one instance in subnet `subnet` of VPC `vpc` (Python
/// expressions), in the VPC's default security group (which the gateway
/// must keep), and sets `out` to its instance, ENI and MAC.
fn run_instance(vpc: &str, subnet: &str) -> String {
    format!(
        "image = ec2.describe_images(Owners=['amazon'])['Images'][0]['ImageId']\n\
         base = ec2.describe_security_groups(Filters=[{{'Name': 'vpc-id', 'Values': [{vpc}]}}, {{'Name': 'group-name', 'Values': ['default']}}])['SecurityGroups'][0]['GroupId']\n\
         inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType='t3.micro', SubnetId={subnet}, SecurityGroupIds=[base], TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [{{'Key': 'gatehouse:gateway', 'Value': 'gh-aws'}}]}}])['Instances'][0]\n\
         eni = inst['NetworkInterfaces'][0]\n\
         out = dict(instance=inst['InstanceId'], eni=eni['NetworkInterfaceId'], mac=eni['MacAddress'])\n"
    )
}

fn str_of(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
        .to_string()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
}
