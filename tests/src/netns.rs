//! DESIGN.md's network, built from network namespaces for the VPN end-to-end
//! tests ([`Topology`]), and a stock WireGuard client (wireguard-go + `wg`)
//! configured from a wg-quick file exactly as a user would ([`WgClient`], in
//! `netns/wg_client.rs`).
//!
//! ```text
//!  client  ns  internet 198.18.N.2/24 ─┐ bridge "internet" 198.18.N.1/24 ┐
//!  client2 ns  internet 198.18.N.3/24 ─┘ (the gateway's public address)   │ gateway ns
//!  research ns eth0 10.0.3.140/24 ── research 10.0.3.1/24 ──────────────────┤ ip_forward=1
//!  private2 ns eth0 10.0.4.10/24  ── private2 10.0.4.1/24 ──────────────────┘ accessd here
//! ```
//!
//! - `lo` is up everywhere; research and private2 route everything via the
//!   gateway and serve `http://<addr>/whoami.txt` (content: `research`,
//!   `private2`) with `python3 -m http.server`; they answer ping.
//! - The clients' default route goes via 198.18.N.1 on their `internet` veth,
//!   so "the default route does not use the tunnel" is checkable. Two client
//!   namespaces exist because two wg-quick configs with the same `AllowedIPs`
//!   cannot both install their routes in one namespace.
//! - Like the real internet, the "internet" cannot route to the private
//!   subnets: the gateway refuses to forward anything that arrives on its
//!   `internet` bridge (`ip rule iif internet prohibit`); its own addresses
//!   still answer. Only the tunnel leads inside.
//!
//! Names are unique per topology (`gh<pid>-<n>-<role>` namespaces,
//! `ghg<pid>-<n>` / `ghc<pid>-<n>` WireGuard interfaces of at most 15
//! characters), because tests run in parallel and wireguard-go's UAPI sockets
//! share `/var/run/wireguard/`. Everything is torn down in `Drop`, processes
//! first, then namespaces, so a failed test leaves nothing behind. Every
//! command runs with a time limit ([`crate::output_within`]).
//!
//! Typical use (see `tests/tests/vpn.rs`):
//! ```no_run
//! use gatehouse_tests::netns::{Topology, WgClient, POOL};
//! let Some(topo) = Topology::create() else { return };
//! let gw = topo.start_gateway(&topo.gateway_config(POOL, ""));
//! gw.ctl_ok(&["user", "add", "alice", "--group", "research"]);
//! let conf = topo.dir().join("alice.conf");
//! gw.ctl_ok(&["device", "config", "alice", "laptop", "--out", conf.to_str().unwrap()]);
//! let alice = WgClient::up(&topo, &conf);
//! let body = alice.wait_fetch("http://10.0.3.140/whoami.txt", std::time::Duration::from_secs(10));
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::{Daemon, have_tool, is_root, output_within, require, stderr, stdout};

mod wg_client;

pub use wg_client::WgClient;

/// The VPN pool the tests use; the gateway's tunnel address is its first host.
pub const POOL: &str = "10.200.0.0/24";
/// The gateway's tunnel address in [`POOL`].
pub const GATEWAY_TUNNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The subnet of group `research`.
pub const RESEARCH_SUBNET: &str = "10.0.3.0/24";
/// The subnet of group `private2` (the tests' users are not members).
pub const PRIVATE2_SUBNET: &str = "10.0.4.0/24";
/// The gateway's own address in the research subnet.
pub const GATEWAY_RESEARCH_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);
/// The gateway's own address in the private2 subnet.
pub const GATEWAY_PRIVATE2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 4, 1);
/// The UDP port accessd listens on.
pub const VPN_PORT: u16 = 51820;

/// Upper bound for one helper command (`ip`, `wg`, ...), so a hung tool fails
/// the test instead of hanging the run.
pub(crate) const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// One namespace of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    Client,
    Client2,
    Gateway,
    Research,
    Private2,
}

impl Host {
    /// Every host, in creation order.
    pub const ALL: [Host; 5] = [
        Host::Gateway,
        Host::Client,
        Host::Client2,
        Host::Research,
        Host::Private2,
    ];

    fn role(self) -> &'static str {
        match self {
            Host::Client => "client",
            Host::Client2 => "client2",
            Host::Gateway => "gw",
            Host::Research => "research",
            Host::Private2 => "private2",
        }
    }

    fn index(self) -> usize {
        match self {
            Host::Gateway => 0,
            Host::Client => 1,
            Host::Client2 => 2,
            Host::Research => 3,
            Host::Private2 => 4,
        }
    }
}

/// The namespaces of one test, their processes and a temp dir for files.
pub struct Topology {
    /// `<pid>-<n>`: makes every name of this topology unique on the machine.
    tag: String,
    /// N in 198.18.N.0/24, the "internet".
    net: u8,
    names: [String; 5],
    /// How many of `names` (in [`Host::ALL`] order) exist.
    created: usize,
    gateway_iface: String,
    /// Started by [`Topology::spawn`]; stopped in `Drop`.
    processes: Mutex<Vec<Child>>,
    dir: TempDir,
}

/// Serializes namespace creation within this process: the first `ip netns
/// add` on a machine sets up the `/run/netns` mount, which races with itself.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

impl Topology {
    /// Builds the topology, or returns `None` (printing `SKIPPED: <reason>`)
    /// when a prerequisite is missing: root, `/dev/net/tun`, `ip`,
    /// wireguard-go, `wg`, `wg-quick`, curl, python3, ping. With
    /// `GATEHOUSE_E2E=1` a missing prerequisite fails the test instead.
    pub fn create() -> Option<Topology> {
        if !prerequisites() {
            return None;
        }
        let n = next_id();
        let tag = format!("{}-{n}", std::process::id());
        let mut topo = Topology {
            names: Host::ALL.map(|h| format!("gh{tag}-{}", h.role())),
            net: u8::try_from(n % 250 + 1).unwrap(),
            gateway_iface: iface_name("ghg", &tag),
            created: 0,
            processes: Mutex::new(Vec::new()),
            dir: tempfile::Builder::new()
                .prefix(&format!("gh{tag}-"))
                .tempdir()
                .unwrap(),
            tag,
        };
        // From here on a panic unwinds through Drop, which removes what exists.
        topo.build();
        Some(topo)
    }

    /// The namespace name of `host` (for `ip netns exec`).
    pub fn ns(&self, host: Host) -> &str {
        &self.names[host.index()]
    }

    /// The address of `host`: the gateway's is its public ("internet") one.
    pub fn addr(&self, host: Host) -> IpAddr {
        IpAddr::V4(match host {
            Host::Gateway => Ipv4Addr::new(198, 18, self.net, 1),
            Host::Client => Ipv4Addr::new(198, 18, self.net, 2),
            Host::Client2 => Ipv4Addr::new(198, 18, self.net, 3),
            Host::Research => Ipv4Addr::new(10, 0, 3, 140),
            Host::Private2 => Ipv4Addr::new(10, 0, 4, 10),
        })
    }

    /// `http://<addr>/whoami.txt` of the research or private2 host.
    pub fn whoami_url(&self, host: Host) -> String {
        format!("http://{}/whoami.txt", self.addr(host))
    }

    /// A temp dir that lives as long as the topology (configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `vpn.interface` of [`Topology::gateway_config`]; accessd's UAPI
    /// socket is `/var/run/wireguard/<this>.sock`.
    pub fn gateway_interface(&self) -> &str {
        &self.gateway_iface
    }

    /// Runs `argv` inside `host`'s namespace and returns its output.
    pub fn exec(&self, host: Host, argv: &[&str]) -> Output {
        output_within(self.command(host, argv), COMMAND_LIMIT)
    }

    /// Like [`Topology::exec`], asserting success; returns stdout.
    pub fn exec_ok(&self, host: Host, argv: &[&str]) -> String {
        let out = self.exec(host, argv);
        assert!(
            out.status.success(),
            "in {}: {argv:?} failed ({}):\n{}{}",
            self.ns(host),
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Starts `argv` in `host`'s namespace in the background, its output in
    /// `<dir>/<name>.log`. It is killed on drop (or by [`Topology::stop`]).
    /// `ip netns exec` and `env` exec, so the pid is the program's own.
    pub fn spawn(&self, host: Host, name: &str, argv: &[&str]) -> u32 {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let child = self
            .command(host, argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?} in {}: {e}", self.ns(host)));
        let pid = child.id();
        self.processes().push(child);
        pid
    }

    /// The exit status of a process started by [`Topology::spawn`], once it
    /// has exited.
    pub fn exited(&self, pid: u32) -> Option<ExitStatus> {
        self.processes()
            .iter_mut()
            .find(|c| c.id() == pid)
            .and_then(|c| c.try_wait().unwrap())
    }

    /// Stops a process started by [`Topology::spawn`]: SIGTERM, then SIGKILL
    /// after a second.
    pub fn stop(&self, pid: u32) {
        let child = {
            let mut all = self.processes();
            let found = all.iter().position(|c| c.id() == pid);
            found.map(|i| all.remove(i))
        };
        if let Some(child) = child {
            terminate(vec![child]);
        }
    }

    /// What a process started as `name` has written so far.
    pub fn process_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// A gatehouse.toml for accessd in the gateway namespace: the public
    /// endpoint is the gateway's internet address, `vpn.listen` 0.0.0.0:51820,
    /// a unique `vpn.interface`, `require_login = false` (devices are live
    /// while their user is enabled), `nat = "route"`, groups `research` =
    /// 10.0.3.0/24 and `private2` = 10.0.4.0/24, the other listeners on
    /// loopback of the gateway namespace. `extra` is appended at the end, so
    /// it must start with a table header (e.g. another `[[group]]`).
    pub fn gateway_config(&self, pool: &str, extra: &str) -> String {
        let dir = self.dir().display();
        format!(
            r#"# accessd in the gateway namespace of test topology {tag}
[gateway]
name = "gh-test"
public_endpoint = "{public}"
state_dir = "{dir}/state"

[vpn]
listen = "0.0.0.0:{VPN_PORT}"
interface = "{iface}"
pool = "{pool}"
mtu = 1420
persistent_keepalive = 25
require_login = false
nat = "route"

[ssh]
listen = "127.0.0.1:2222"

[portal]
listen = "127.0.0.1:8443"
require_totp = false

[admin]
socket = "{dir}/admin.sock"

[metrics]
listen = "127.0.0.1:9586"

[[group]]
name = "research"
subnets = ["{RESEARCH_SUBNET}"]

[[group]]
name = "private2"
subnets = ["{PRIVATE2_SUBNET}"]
{extra}"#,
            tag = self.tag,
            public = self.addr(Host::Gateway),
            iface = self.gateway_iface,
        )
    }

    /// Starts accessd with `config` inside the gateway namespace.
    pub fn start_gateway(&self, config: &str) -> Daemon {
        Daemon::start_in(Some(self.ns(Host::Gateway)), config)
    }

    /// Serves a directory holding `whoami.txt` (content `whoami`) over HTTP
    /// on `bind`:80 in `host`'s namespace, and waits until it answers.
    pub fn serve_http(&self, host: Host, bind: &str, whoami: &str) -> u32 {
        let name = format!("http-{}-{bind}", host.role());
        let root = self.dir().join(&name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("whoami.txt"), format!("{whoami}\n")).unwrap();
        let root = root.to_str().unwrap();
        let pid = self.spawn(
            host,
            &name,
            &[
                python3(),
                "-m",
                "http.server",
                "80",
                "--bind",
                bind,
                "--directory",
                root,
            ],
        );
        let probe = if bind == "0.0.0.0" { "127.0.0.1" } else { bind };
        let url = format!("http://{probe}/whoami.txt");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self
                .http_get(host, &url, Duration::from_secs(1), None)
                .is_ok()
            {
                return pid;
            }
            if let Some(status) = self.exited(pid) {
                panic!(
                    "the HTTP server in {} exited ({status}):\n{}",
                    self.ns(host),
                    self.process_log(&name)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the HTTP server in {} did not answer within 15 s:\n{}",
                self.ns(host),
                self.process_log(&name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The request log of the HTTP server [`Topology::create`] started on
    /// research or private2 (`<client address> - - [...] "GET /whoami.txt ..."`).
    pub fn http_log(&self, host: Host) -> String {
        self.process_log(&format!("http-{}-{}", host.role(), self.addr(host)))
    }

    /// HTTP GET from `host` with curl (no proxy), bounded by `timeout`;
    /// `source` binds the source address (`curl --interface`). Ok is the body
    /// of any HTTP answer; Err means no answer came (refused, unreachable,
    /// timed out, reset). A failure on the client's side (bad option, a
    /// source address that is not configured) fails the test instead, so a
    /// negative probe cannot pass by accident.
    pub fn http_get(
        &self,
        host: Host,
        url: &str,
        timeout: Duration,
        source: Option<&str>,
    ) -> Result<String, String> {
        let secs = format!("{:.2}", timeout.as_secs_f64());
        let mut argv = vec!["curl", "-sS", "--noproxy", "*", "--max-time", &secs];
        if let Some(source) = source {
            argv.extend(["--interface", source]);
        }
        argv.push(url);
        let out = output_within(self.command(host, &argv), timeout + COMMAND_LIMIT);
        // 7 cannot connect, 28 timeout, 52 empty reply, 55/56 send/receive failure.
        match out.status.code() {
            Some(0) => Ok(stdout(&out)),
            Some(7 | 28 | 52 | 55 | 56) => Err(format!("curl {url}: {}", stderr(&out).trim())),
            _ => panic!(
                "curl {argv:?} in {} failed on the client's side ({}): {}",
                self.ns(host),
                out.status,
                stderr(&out)
            ),
        }
    }

    /// Sends `count` pings (0.2 s apart) from `host` to `dst`, waiting at most
    /// `timeout` for each reply; `source` binds the source address (`-I`).
    /// Returns how many replies came back. A ping that could not send at all
    /// (no route, address not configured) fails the test.
    pub fn ping(
        &self,
        host: Host,
        dst: &str,
        count: u32,
        timeout: Duration,
        source: Option<&str>,
    ) -> u32 {
        let count_s = count.to_string();
        let wait = format!("{:.1}", timeout.as_secs_f64());
        // Overall deadline: the sends plus one reply timeout.
        let deadline = (f64::from(count) * 0.2 + timeout.as_secs_f64()).ceil();
        let deadline = format!("{deadline:.0}");
        let mut argv = vec![
            "ping", "-n", "-q", "-c", &count_s, "-i", "0.2", "-W", &wait, "-w", &deadline,
        ];
        if let Some(source) = source {
            argv.extend(["-I", source]);
        }
        argv.push(dst);
        let out = self.exec(host, &argv);
        // "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 402ms"
        let text = stdout(&out);
        let count_of = |what: &str| -> Option<u32> {
            text.lines()
                .find(|l| l.contains("packets transmitted"))?
                .split(',')
                .find_map(|part| part.trim().strip_suffix(what))
                .and_then(|n| n.trim().parse().ok())
        };
        let sent = count_of(" packets transmitted").unwrap_or(0);
        assert!(
            sent > 0,
            "ping {argv:?} in {} sent nothing ({}):\n{text}{}",
            self.ns(host),
            out.status,
            stderr(&out)
        );
        count_of(" received").unwrap_or(0)
    }

    /// ICMP echo requests `host`'s kernel has received so far (`Icmp:
    /// InEchos` of its namespace): tells whether a packet arrived at all,
    /// even when its reply cannot come back.
    pub fn icmp_echoes_received(&self, host: Host) -> u64 {
        self.snmp_counter(host, "Icmp", "InEchos")
    }

    /// One counter of `host`'s `/proc/net/snmp` (per namespace), e.g.
    /// `Ip` `ReasmReqds`: fragments that arrived there.
    pub fn snmp_counter(&self, host: Host, table: &str, counter: &str) -> u64 {
        let snmp = self.exec_ok(host, &["cat", "/proc/net/snmp"]);
        let prefix = format!("{table}: ");
        let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
        let (Some(header), Some(values)) = (lines.next(), lines.next()) else {
            panic!("no {table} lines in /proc/net/snmp:\n{snmp}");
        };
        let column = header
            .split_whitespace()
            .position(|h| h == counter)
            .unwrap_or_else(|| panic!("no {counter} column in {header}"));
        values
            .split_whitespace()
            .nth(column)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `ip route get <dst>` in `host`'s namespace (a lookup only: no packet
    /// is sent).
    pub fn route_get(&self, host: Host, dst: &str) -> String {
        self.exec_ok(host, &["ip", "route", "get", dst])
    }

    /// True when a TCP connection from `host`'s namespace to `addr`:`port`
    /// is accepted within `timeout` (bash's `/dev/tcp`; nothing is sent).
    pub fn tcp_open(&self, host: Host, addr: &str, port: u16, timeout: Duration) -> bool {
        let secs = format!("{:.1}", timeout.as_secs_f64());
        let probe = format!("exec 3<>/dev/tcp/{addr}/{port}");
        let argv = ["timeout", secs.as_str(), "bash", "-c", probe.as_str()];
        output_within(self.command(host, &argv), timeout + COMMAND_LIMIT)
            .status
            .success()
    }

    /// Polls [`Topology::tcp_open`] until `addr`:`port` accepts from `host`,
    /// failing the test after `within`; `what` names the listener and `log`
    /// gives the process log to show when it does not come up.
    pub fn wait_tcp(&self, host: Host, addr: &str, port: u16, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        while !self.tcp_open(host, addr, port, Duration::from_secs(1)) {
            assert!(
                Instant::now() < deadline,
                "{what} does not accept on {addr}:{port} from {} within {within:?}",
                self.ns(host)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Gives `host`'s namespace its own `/etc/hosts` (`lines` after the
    /// usual localhost entries): `ip netns exec` bind-mounts
    /// `/etc/netns/<ns>/hosts` over `/etc/hosts` for every program it starts
    /// there, so the host's file stays untouched. Programs started before
    /// this call keep the old file. The file goes when the guard drops.
    pub fn etc_hosts(&self, host: Host, lines: &str) -> NetnsEtcHosts {
        let dir = Path::new("/etc/netns").join(self.ns(host));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let guard = NetnsEtcHosts { dir };
        let text = format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{lines}\n");
        std::fs::write(guard.dir.join("hosts"), text).unwrap();
        guard
    }

    fn command(&self, host: Host, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(host)]).args(argv);
        cmd
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.log"))
    }

    fn processes(&self) -> MutexGuard<'_, Vec<Child>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `ip <line>` on the host, asserting success. The line is split on
    /// whitespace: it only holds names and addresses made here (all topology
    /// edits use `-n <namespace>`).
    fn ip(&self, line: &str) {
        let mut cmd = Command::new("ip");
        cmd.args(line.split_whitespace());
        let out = output_within(cmd, COMMAND_LIMIT);
        assert!(out.status.success(), "ip {line} failed: {}", stderr(&out));
    }

    fn build(&mut self) {
        {
            let _serial = CREATE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
            for host in Host::ALL {
                self.ip(&format!("netns add {}", self.ns(host)));
                self.created += 1;
            }
        }
        for host in Host::ALL {
            self.ip(&format!("-n {} link set lo up", self.ns(host)));
        }
        let gw = self.ns(Host::Gateway).to_owned();
        let public = self.addr(Host::Gateway);
        self.exec_ok(Host::Gateway, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        self.ip(&format!("-n {gw} link add internet type bridge"));
        self.ip(&format!("-n {gw} addr add {public}/24 dev internet"));
        self.ip(&format!("-n {gw} link set internet up"));
        // Nothing from the "internet" is forwarded inside; local delivery
        // (rule 0, the local table) comes first, so the gateway answers.
        self.ip(&format!("-n {gw} rule add iif internet prohibit pref 100"));
        for (host, port) in [(Host::Client, "c1"), (Host::Client2, "c2")] {
            let (ns, addr) = (self.ns(host).to_owned(), self.addr(host));
            self.ip(&format!(
                "-n {gw} link add {port} type veth peer name internet netns {ns}"
            ));
            self.ip(&format!("-n {gw} link set {port} master internet up"));
            self.ip(&format!("-n {ns} addr add {addr}/24 dev internet"));
            self.ip(&format!("-n {ns} link set internet up"));
            self.ip(&format!("-n {ns} route add default via {public}"));
        }
        for (host, leg, leg_addr) in [
            (Host::Research, "research", GATEWAY_RESEARCH_ADDR),
            (Host::Private2, "private2", GATEWAY_PRIVATE2_ADDR),
        ] {
            let (ns, addr) = (self.ns(host).to_owned(), self.addr(host));
            self.ip(&format!(
                "-n {gw} link add {leg} type veth peer name eth0 netns {ns}"
            ));
            self.ip(&format!("-n {gw} addr add {leg_addr}/24 dev {leg}"));
            self.ip(&format!("-n {gw} link set {leg} up"));
            self.ip(&format!("-n {ns} addr add {addr}/24 dev eth0"));
            self.ip(&format!("-n {ns} link set eth0 up"));
            self.ip(&format!("-n {ns} route add default via {leg_addr}"));
        }
        for (host, whoami) in [(Host::Research, "research"), (Host::Private2, "private2")] {
            let bind = self.addr(host).to_string();
            self.serve_http(host, &bind, whoami);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes first: a namespace with a live process in it outlives `ip netns del`.
        let children = std::mem::take(&mut *self.processes());
        terminate(children);
        for ns in &self.names[..self.created] {
            // Anything still inside was started by this test (an accessd whose
            // Daemon outlived us, a grandchild): kill it by pid.
            let Ok(pids) = Command::new("ip").args(["netns", "pids", ns]).output() else {
                continue;
            };
            for pid in stdout(&pids).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        for ns in self.names[..self.created].iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(uapi_socket(&self.gateway_iface));
    }
}

/// A namespace's own `/etc/hosts` (see [`Topology::etc_hosts`]); removes
/// `/etc/netns/<ns>/` on drop.
pub struct NetnsEtcHosts {
    dir: PathBuf,
}

impl Drop for NetnsEtcHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("hosts"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The UAPI socket of a userspace WireGuard interface (wireguard-go, accessd).
pub fn uapi_socket(iface: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{iface}.sock"))
}

fn prerequisites() -> bool {
    require(
        is_root(),
        "the VPN end-to-end tests need root (network namespaces, TUN)",
    ) && require(
        Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing (the VPN end-to-end tests need TUN)",
    ) && [
        ("ip", "iproute2"),
        ("wireguard-go", "wireguard-go"),
        ("wg", "wireguard-tools"),
        ("wg-quick", "wireguard-tools"),
        ("curl", "curl"),
        ("ping", "iputils-ping"),
        (python3(), "python3"),
    ]
    .iter()
    .all(|(tool, package)| {
        require(
            have_tool(tool),
            &format!("{tool} is not installed (Debian package {package})"),
        )
    })
}

/// Debian's python3 when present (a pyenv shim on PATH is slow to start).
fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

pub(crate) fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `<prefix><pid>-<n>`, cut to Linux's 15-character interface names.
pub(crate) fn iface_name(prefix: &str, tag: &str) -> String {
    let name = format!("{prefix}{tag}");
    assert!(name.len() <= 15, "interface name {name} is too long");
    name
}

/// SIGTERM to each, a second's grace, then SIGKILL; reaps them all.
fn terminate(mut children: Vec<Child>) {
    for child in &children {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
}
