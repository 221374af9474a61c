//! Starts the real `akv-csi-provider` binary on a temporary socket and talks to it the way the
//! Secrets Store CSI driver does (plain gRPC over the unix socket, authority `localhost`).

use akv_csi_provider::v1alpha1::{
    MountRequest, csi_driver_provider_client::CsiDriverProviderClient,
};
use hyper_util::rt::TokioIo;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};
use tonic::transport::{Channel, Endpoint};

/// A running provider process.
pub struct Provider {
    child: Option<Child>,
    /// The socket path.
    pub socket: PathBuf,
    /// Where the process's stderr (its logs) goes.
    pub log_file: PathBuf,
    /// Port of the health probe.
    pub healthz_port: u16,
    /// Port of `/metrics`.
    pub metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Provider {
    /// Starts the binary with `args` (plus `--endpoint` on a fresh socket) and waits for the socket.
    pub fn start(args: &[String]) -> Provider {
        Self::start_with_env(args, &[])
    }

    /// Like [`Self::start`], with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Provider {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("providers/azure.sock");
        Self::spawn(args, env, socket, dir)
    }

    /// Starts the binary listening on `socket`; `dir` is kept alive with the process.
    pub fn start_at(args: &[String], socket: PathBuf, dir: tempfile::TempDir) -> Provider {
        Self::spawn(args, &[], socket, dir)
    }

    fn spawn(
        args: &[String],
        env: &[(&str, &str)],
        socket: PathBuf,
        dir: tempfile::TempDir,
    ) -> Provider {
        let log_file = dir.path().join(format!(
            "provider-{}.log",
            std::process::id() ^ rand_suffix()
        ));
        let log = std::fs::File::create(&log_file).expect("log file");
        let has = |flag: &str| args.iter().any(|a| a.starts_with(flag));
        let healthz_port = if has("--healthz-port") {
            0
        } else {
            free_port()
        };
        let metrics_port = if has("--prometheus-port") {
            0
        } else {
            free_port()
        };
        let mut ports = Vec::new();
        if healthz_port != 0 {
            ports.push(format!("--healthz-port={healthz_port}"));
        }
        if metrics_port != 0 {
            ports.push(format!("--prometheus-port={metrics_port}"));
        }
        let child = Command::new(binary())
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(ports)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the provider binary");
        let mut provider = Provider {
            child: Some(child),
            socket,
            log_file,
            healthz_port,
            metrics_port,
            _dir: dir,
        };
        provider.wait_for_socket();
        provider
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("provider exited early with {status}; log:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("provider socket did not appear; log:\n{}", self.logs());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Everything the provider logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// A gRPC channel over the unix socket.
    pub async fn channel(&self) -> Channel {
        channel(&self.socket).await
    }

    /// The driver-side client.
    pub async fn client(&self) -> CsiDriverProviderClient<Channel> {
        CsiDriverProviderClient::new(self.channel().await)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    /// Waits (at most 20 s) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "provider did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Every test's provider output goes through the leak scanner.
        if !std::thread::panicking() {
            super::leaks::assert_clean(
                &format!("the provider log {}", self.log_file.display()),
                &self.logs(),
            );
        }
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET `http://127.0.0.1:<port><path>`: (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("HTTP GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

impl Provider {
    /// This provider's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").await.1
    }

    /// The `akv_mounts_in_flight` gauge of this provider's /metrics.
    pub async fn mounts_in_flight(&self) -> u64 {
        let (_, body) = http_get(self.metrics_port, "/metrics").await;
        body.lines()
            .find(|l| l.starts_with("akv_mounts_in_flight "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Connects to a unix socket the way the driver does (authority `localhost`).
pub async fn channel(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the provider socket")
}

/// Pod attributes the driver adds to the SPC parameters.
pub fn pod_attributes() -> BTreeMap<String, String> {
    [
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("csi.storage.k8s.io/pod.namespace", "shop"),
        (
            "csi.storage.k8s.io/pod.uid",
            "0b7c2f1e-8f0a-4c4e-9f59-3f6c1f0e2a11",
        ),
        ("csi.storage.k8s.io/serviceAccount.name", "web"),
        ("csi.storage.k8s.io/ephemeral", "false"),
        ("secretProviderClass", "azure-kv"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The `serviceAccount.tokens` attribute value for one audience, as the driver builds it.
pub fn tokens_attribute(audience: &str, token: &str) -> String {
    serde_json::json!({ audience: { "token": token, "expirationTimestamp": "2099-01-01T00:00:00Z" } }).to_string()
}

/// `objects` YAML for a list of object bodies (each a YAML mapping text).
pub fn objects_yaml(objects: &[&str]) -> String {
    let mut yaml = String::from("array:\n");
    for object in objects {
        yaml.push_str("  - |\n");
        for line in object.lines() {
            yaml.push_str("    ");
            yaml.push_str(line);
            yaml.push('\n');
        }
    }
    yaml
}

/// The provider binary under test: `AKV_PROVIDER_BIN` (e.g. an older build, to show that a test
/// fails on it), else the one cargo built for these tests.
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("AKV_PROVIDER_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_akv-csi-provider").into(),
        std::path::PathBuf::from,
    )
}

/// The `secrets` the driver sends for a volume without a `nodePublishSecretRef` (workload
/// identity, managed identity, pod identity): `json.Marshal` of a nil map in the driver v1.6.0's
/// `pkg/secrets-store/nodeserver.go`, i.e. `null`, never `{}`.
pub const NO_SECRET_REF: &str = "null";

/// A Mount request like the driver's: SPC parameters plus pod attributes, permission 420.
pub fn mount_request(parameters: &[(&str, String)], secrets: &str) -> MountRequest {
    let mut attributes = pod_attributes();
    for (k, v) in parameters {
        attributes.insert((*k).to_owned(), v.clone());
    }
    MountRequest {
        attributes: serde_json::to_string(&attributes).expect("json"),
        secrets: secrets.to_owned(),
        target_path: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/secrets/mount".to_owned(),
        permission: "420".to_owned(),
        current_object_version: Vec::new(),
    }
}

/// A memory field of `/proc/<pid>/status` in KiB: `VmRSS` (now) or `VmHWM` (peak).
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
