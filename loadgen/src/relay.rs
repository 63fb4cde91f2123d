//! The relay under load: started here (and measured through `/proc`) or attached to.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::process::{Child, Command};

use crate::client::Http;
use crate::Result;

/// Which relay to load.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Attach to a relay already running at this loopback URL (e.g. http://127.0.0.1:7700) instead
    /// of starting one. Its memory is only reported when --relay-pid is given too.
    #[arg(long)]
    pub url: Option<String>,

    /// Process id of the relay given by --url, to read its memory and CPU from /proc.
    #[arg(long, requires = "url")]
    pub relay_pid: Option<u32>,

    /// Relay binary to start [default: `sotto-server` next to this executable].
    #[arg(long, conflicts_with = "url")]
    pub relay_bin: Option<PathBuf>,

    /// Database of the started relay [default: a fresh SQLite file in a temporary directory].
    /// For PostgreSQL give a fresh, empty database, e.g. postgres://postgres@127.0.0.1:5432/load1
    #[arg(long, conflicts_with = "url")]
    pub database_url: Option<String>,

    /// Extra flag for the started relay, repeatable (e.g. --relay-arg=--ws-max-unacked=1024).
    /// The relay is always started with --listen on a free loopback port, --database-url, cheap
    /// password hashing (--argon2-memory-kib 64 --argon2-iterations 1), since the runs measure
    /// messaging, not login, and (unless --keep-rate-limits) --config with rate limits off.
    #[arg(long = "relay-arg", allow_hyphen_values = true, conflicts_with = "url")]
    pub relay_args: Vec<String>,

    /// Keep the started relay's rate limits. By default it gets a config file turning them off,
    /// since one account may send only 100 messages a minute.
    #[arg(long, conflicts_with = "url")]
    pub keep_rate_limits: bool,

    /// File for the started relay's log [default: relay.log in the temporary directory, deleted
    /// at exit]. RUST_LOG is passed through (default `warn`). With several processes, process i
    /// logs to this path with `.i` appended.
    #[arg(long, conflicts_with = "url")]
    pub relay_log: Option<PathBuf>,

    /// Relay processes to start on the one database (more than one needs PostgreSQL: give
    /// --database-url); accounts are spread over them round-robin, each account's WebSocket and
    /// requests going to its process. Memory and CPU are summed over the processes.
    #[arg(long, default_value_t = 1, conflicts_with = "url")]
    pub processes: usize,
}

/// The started relay's configuration file: every rate limit off.
const RATE_LIMITS_OFF: &str = "[rate-limits]
messages = \"off\"
login = \"off\"
registration = \"off\"
bundle-fetch = \"off\"
provisioning = \"off\"
";

/// A relay to talk to: one process, or several on one database.
#[derive(Debug)]
pub struct Relay {
    /// The (first) process's loopback address.
    pub addr: SocketAddr,
    procs: Vec<Proc>,
    _dir: Option<tempfile::TempDir>,
}

/// One relay process.
#[derive(Debug)]
struct Proc {
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<Child>,
}

impl Relay {
    /// Starts or attaches to the relay and waits until `/healthz` answers.
    pub async fn start(args: &RelayArgs) -> Result<Self> {
        let relay = match &args.url {
            Some(url) => {
                let addr = parse_loopback_url(url)?;
                Relay {
                    addr,
                    procs: vec![Proc {
                        addr,
                        pid: args.relay_pid,
                        child: None,
                    }],
                    _dir: None,
                }
            }
            None => Self::spawn(args)?,
        };
        relay.wait_healthy(Duration::from_secs(60)).await?;
        Ok(relay)
    }

    /// The process account `index` talks to (round-robin).
    pub fn addr_for(&self, index: usize) -> SocketAddr {
        self.procs
            .get(index % self.procs.len().max(1))
            .map_or(self.addr, |p| p.addr)
    }

    /// How many processes.
    pub fn processes(&self) -> usize {
        self.procs.len()
    }

    fn spawn(args: &RelayArgs) -> Result<Self> {
        let n = args.processes.max(1);
        if n > 1
            && !args
                .database_url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres"))
        {
            return Err("--processes above 1 needs a PostgreSQL --database-url".into());
        }
        let dir = tempfile::Builder::new().prefix("sotto-load-").tempdir()?;
        let mut procs = Vec::with_capacity(n);
        for i in 0..n {
            procs.push(Self::spawn_one(args, &dir, i, n)?);
        }
        Ok(Relay {
            addr: procs.first().map(|p| p.addr).ok_or("no relay process")?,
            procs,
            _dir: Some(dir),
        })
    }

    fn spawn_one(args: &RelayArgs, dir: &tempfile::TempDir, i: usize, n: usize) -> Result<Proc> {
        let bin = match &args.relay_bin {
            Some(bin) => bin.clone(),
            None => std::env::current_exe()?.with_file_name("sotto-server"),
        };
        let database_url = match &args.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", dir.path().join("relay.sqlite").display()),
        };
        // A free port: bind, read, release. The relay binds it a moment later.
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut log_path = args
            .relay_log
            .clone()
            .unwrap_or_else(|| dir.path().join("relay.log"));
        if n > 1 {
            log_path.as_mut_os_string().push(format!(".{i}"));
        }
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(&bin);
        if !args.keep_rate_limits {
            let config = dir.path().join("relay.toml");
            std::fs::write(&config, RATE_LIMITS_OFF)?;
            command.arg("--config").arg(config);
        }
        command
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--database-url")
            .arg(&database_url)
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            // The generated accounts never wrote to each other: without this, a group run's adds
            // would be pending invitations and no group message would be routed.
            .arg("--open-group-adds")
            .args((n > 1).then(|| format!("--relay-processes={n}")))
            .args(&args.relay_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start relay {}: {e}", bin.display()))?;
        let pid = child.id();
        eprintln!(
            "relay: started {} (pid {}, process {} of {n}) on {addr}, database {database_url}, log {}",
            bin.display(),
            pid.map_or_else(|| "?".into(), |p| p.to_string()),
            i + 1,
            log_path.display()
        );
        Ok(Proc {
            addr,
            pid,
            child: Some(child),
        })
    }

    async fn wait_healthy(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        for proc in &self.procs {
            loop {
                if let Ok(mut http) = Http::connect(proc.addr).await {
                    if let Ok((status, _)) = http.get("/healthz", None).await {
                        if status.is_success() {
                            break;
                        }
                    }
                }
                if Instant::now() > deadline {
                    return Err(
                        format!("relay at {} not healthy after {within:?}", proc.addr).into(),
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Resident memory of the relay in KiB (`VmRSS`, summed over its processes), when every
    /// process is known.
    pub fn rss_kib(&self) -> Option<u64> {
        self.procs.iter().map(|p| p.rss_kib()).sum()
    }

    /// CPU time the relay has used so far (summed over its processes), when every process is
    /// known.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.procs
            .iter()
            .map(|p| process_cpu_time(&format!("/proc/{}/stat", p.pid?)))
            .sum()
    }

    /// Stops the processes started here.
    pub async fn stop(self) {
        for mut proc in self.procs {
            if let Some(mut child) = proc.child.take() {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            }
        }
    }
}

impl Proc {
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// CPU time used by this load generator so far.
pub fn own_cpu_time() -> Option<Duration> {
    process_cpu_time("/proc/self/stat")
}

/// utime + stime from a `/proc/<pid>/stat` file (in clock ticks of 1/100 s, Linux's USER_HZ).
fn process_cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// `http://127.0.0.1:7700` → its address; anything not on loopback is refused.
fn parse_loopback_url(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("http://").ok_or(
        "--url must start with http:// (the load generator speaks plain HTTP on loopback)",
    )?;
    let authority = rest.split('/').next().unwrap_or_default();
    let addr = match authority.strip_prefix("localhost:") {
        Some(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, port.parse::<u16>()?)),
        None => authority
            .parse::<SocketAddr>()
            .map_err(|e| format!("--url {url:?}: expected http://<loopback ip>:<port>: {e}"))?,
    };
    if !addr.ip().is_loopback() {
        return Err(format!("--url {url:?} is not a loopback address; refusing to load it").into());
    }
    Ok(addr)
}

/// Raises this process's open-file limit (soft and, as far as allowed, hard) to at least `wanted`.
pub fn raise_fd_limit(wanted: u64) -> Result<()> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft >= wanted {
        return Ok(());
    }
    let target_hard = hard.max(wanted);
    if rlimit::Resource::NOFILE.set(wanted, target_hard).is_err() {
        // Not allowed to raise the hard limit: go as high as it allows.
        rlimit::Resource::NOFILE.set(hard.min(wanted), hard)?;
    }
    let (soft, _) = rlimit::Resource::NOFILE.get()?;
    if soft < wanted {
        return Err(format!(
            "this run needs {wanted} open files but the limit is {soft} and its hard limit cannot be \
             raised here (needs root with CAP_SYS_RESOURCE); the relay started by this process has \
             the same limit, so use at most about {} connections",
            soft.saturating_sub(600)
        )
        .into());
    }
    Ok(())
}

/// The loopback source addresses 127.0.0.2 ... used to get past one address's ephemeral ports.
pub fn source_addr(index: usize, count: usize) -> IpAddr {
    let n = u32::try_from(index % count.max(1)).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls() {
        assert_eq!(
            parse_loopback_url("http://127.0.0.1:7700").unwrap(),
            "127.0.0.1:7700".parse().unwrap()
        );
        assert!(parse_loopback_url("http://localhost:80/").is_ok());
        assert!(parse_loopback_url("http://[::1]:80").is_ok());
        assert!(parse_loopback_url("http://10.0.0.1:7700").is_err());
        assert!(parse_loopback_url("https://127.0.0.1:7700").is_err());
        assert!(parse_loopback_url("http://example.com:80").is_err());
    }

    #[test]
    fn source_addresses_cycle_from_127_0_0_2() {
        assert_eq!(source_addr(0, 4).to_string(), "127.0.0.2");
        assert_eq!(source_addr(5, 4).to_string(), "127.0.0.3");
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(own_cpu_time().is_some());
    }
}
