//! `akv-csi-provider agent`: the real binary against the fake Azure services, writing into a
//! temporary folder with the driver's atomic layout and its own rotation loop.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod support;

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};
use support::{
    fake_azure::{FakeAzure, Fault, SecretOpts},
    provider::{free_port, http_get},
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SP_ID: &str = "11111111-2222-3333-4444-555555555555";
const SP_SECRET: &str = "sp-Secret~value.that-must-never-leak";
const WI_ID: &str = "66666666-7777-8888-9999-000000000000";

struct Env {
    fake: FakeAzure,
    dir: tempfile::TempDir,
    target: PathBuf,
    spc: PathBuf,
}

impl Env {
    async fn start() -> Env {
        let fake = FakeAzure::start().await;
        fake.add_vault("kv1", TENANT);
        fake.add_service_principal(TENANT, SP_ID, SP_SECRET);
        fake.grant("kv1", SP_ID, &["get", "list"]);
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("client-secret"), format!("{SP_SECRET}\n")).unwrap();
        let target = dir.path().join("secrets");
        let spc = dir.path().join("spc.yaml");
        Env {
            fake,
            dir,
            target,
            spc,
        }
    }

    /// Writes the SPC file with `objects` (object bodies) and extra parameters.
    fn write_spc(&self, objects: &[&str], extra: &str) {
        let cloud = self.fake.write_cloud_env_file();
        let mut yaml = format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: host-secrets\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kv1\n    tenantID: \"{TENANT}\"\n    cloudName: AzureStackCloud\n    cloudEnvFileName: {}\n{extra}    objects: |\n      array:\n",
            cloud.display()
        );
        for object in objects {
            yaml.push_str("        - |\n");
            for line in object.lines() {
                yaml.push_str("          ");
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
        // A leading unrelated document, as in a real bundle.
        fs::write(
            &self.spc,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{yaml}"),
        )
        .unwrap();
    }

    fn base_args(&self) -> Vec<String> {
        vec![
            "agent".to_owned(),
            format!("--spc={}", self.spc.display()),
            format!("--target-dir={}", self.target.display()),
            format!("--ca-file={}", self.fake.ca_file().display()),
            "--resolve=*.vault.test=127.0.0.1".to_owned(),
            "--resolve=login.test=127.0.0.1".to_owned(),
            format!("--imds-endpoint={}", self.fake.imds_url()),
            "-v=5".to_owned(),
        ]
    }

    fn sp_args(&self) -> Vec<String> {
        let mut args = self.base_args();
        args.push(format!("--client-id={SP_ID}"));
        args.push(format!(
            "--client-secret-file={}",
            self.dir.path().join("client-secret").display()
        ));
        args
    }

    #[allow(clippy::unused_self)] // keeps the call sites uniform: env.run_once(..)
    fn run_once(&self, args: &[String]) -> (ExitStatus, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_akv-csi-provider"))
            .args(args)
            .arg("--once")
            .env_remove("RUST_LOG")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_TENANT_ID")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .output()
            .expect("run the agent");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn spawn(&self, args: &[String]) -> Agent {
        let healthz_port = free_port();
        let metrics_port = free_port();
        let log_file = self.dir.path().join(format!("agent-{healthz_port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_akv-csi-provider"))
            .args(args)
            .arg(format!("--healthz-port={healthz_port}"))
            .arg(format!("--prometheus-port={metrics_port}"))
            .env_remove("RUST_LOG")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_TENANT_ID")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(&log_file).unwrap()))
            .spawn()
            .expect("start the agent");
        Agent {
            child: Some(child),
            log_file,
            healthz_port,
            metrics_port,
        }
    }

    fn read(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.target.join(name)).ok()
    }

    /// The timestamped folder `..data` points to.
    fn data_target(&self) -> Option<PathBuf> {
        fs::read_link(self.target.join("..data")).ok()
    }

    fn hidden(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.target)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".."))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

struct Agent {
    child: Option<Child>,
    log_file: PathBuf,
    healthz_port: u16,
    metrics_port: u16,
}

impl Agent {
    fn logs(&self) -> String {
        fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
            signal,
        )
        .unwrap();
    }

    fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    async fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").await.1
    }

    async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` until it holds (20 s at most).
async fn eventually(what: &str, agent: Option<&Agent>, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; logs:\n{}",
            agent.map(Agent::logs).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_publishes_with_the_drivers_atomic_layout() {
    let env = Env::start().await;
    env.fake
        .set_secret("kv1", "db-pass", "pa55-agent", SecretOpts::default());
    env.fake.set_secret(
        "kv1",
        "db-creds",
        r#"{"username":"app","password":"json-pw-1"}"#,
        SecretOpts::default(),
    );
    env.fake
        .set_secret("kv1", "app-one", "bulk-1", SecretOpts::default());
    env.write_spc(
        &[
            "objectName: db-pass\nobjectType: secret\nfilePermission: \"0600\"",
            "objectName: db-creds\nobjectType: secret\njsonKeys:\n  - key: password\n    alias: db/password",
            "objectNamePrefix: app-\nobjectType: secret\nobjectAlias: app",
            "objectName: not-there\nobjectType: secret\noptional: true",
        ],
        "",
    );
    let (status, logs) = env.run_once(&env.sp_args());
    assert!(status.success(), "{logs}");
    assert_eq!(env.read("db-pass").as_deref(), Some("pa55-agent"));
    assert_eq!(env.read("db/password").as_deref(), Some("json-pw-1"));
    assert_eq!(env.read("app/app-one").as_deref(), Some("bulk-1"));
    assert_eq!(mode(&env.target.join("db-pass")), 0o600);
    assert_eq!(mode(&env.target.join("db/password")), 0o644);
    // The driver's layout: top-level names are symlinks into ..data, which points at a
    // timestamped folder.
    for name in ["db-pass", "db", "app"] {
        assert_eq!(
            fs::read_link(env.target.join(name)).ok(),
            Some(PathBuf::from("..data").join(name)),
            "{name}"
        );
    }
    let data = env.data_target().expect("..data");
    assert!(data.to_string_lossy().starts_with("..2"), "{data:?}");
    assert_eq!(env.hidden().len(), 2, "{:?}", env.hidden());
    assert!(
        !logs.contains(SP_SECRET) && !logs.contains("pa55-agent") && !logs.contains("json-pw-1")
    );

    // Nothing changed: a second run finds the files published and does not rewrite them.
    let (status, logs) = env.run_once(&env.sp_args());
    assert!(status.success(), "{logs}");
    assert_eq!(env.data_target(), Some(data.clone()));
    assert!(!logs.contains("files updated"), "{logs}");

    // A new version: rewritten, the old folder removed.
    env.fake
        .set_secret("kv1", "db-pass", "pa55-agent-2", SecretOpts::default());
    let (status, logs) = env.run_once(&env.sp_args());
    assert!(status.success(), "{logs}");
    assert_eq!(env.read("db-pass").as_deref(), Some("pa55-agent-2"));
    assert_ne!(env.data_target(), Some(data));
    assert_eq!(env.hidden().len(), 2, "{:?}", env.hidden());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_exit_1_with_the_problem() {
    let env = Env::start().await;
    env.write_spc(&["objectName: s\nobjectType: Secret"], "");
    let (status, logs) = env.run_once(&env.sp_args());
    assert_eq!(status.code(), Some(1));
    assert!(
        logs.contains("spec.parameters.objects.array[0]: object \\\"s\\\": objectType \\\"Secret\\\" is not one of secret, key, cert")
            || logs.contains("spec.parameters.objects.array[0]: object \"s\": objectType \"Secret\" is not one of secret, key, cert"),
        "{logs}"
    );
    env.write_spc(&["objectName: s\nobjectType: secret"], "");
    let mut args = env.sp_args();
    args.push("--managed-identity".into());
    let (status, logs) = env.run_once(&args);
    assert_eq!(status.code(), Some(1));
    assert!(logs.contains("choose one identity"), "{logs}");
    // A failed sync with --once exits 1 and publishes nothing.
    let (status, logs) = env.run_once(&env.sp_args());
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains("was not found in Key Vault kv1"), "{logs}");
    assert!(!env.target.join("..data").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_rotates_rewrites_only_on_change_and_runs_the_hook() {
    let env = Env::start().await;
    env.fake
        .set_secret("kv1", "rotating", "value-1", SecretOpts::default());
    env.write_spc(&["objectName: rotating\nobjectType: secret"], "");
    let hook_log = env.dir.path().join("hook.log");
    let mut args = env.sp_args();
    args.extend([
        "--interval=200ms".to_owned(),
        "--jitter=0s".to_owned(),
        format!(
            "--on-change-command=cat \"$AKV_TARGET_DIR/rotating\" >> {}; echo >> {}",
            hook_log.display(),
            hook_log.display()
        ),
    ]);
    let mut agent = env.spawn(&args);
    let hook_runs = || fs::read_to_string(&hook_log).map_or(0, |t| t.lines().count());
    eventually("the first publication", Some(&agent), || hook_runs() == 1).await;
    assert_eq!(env.read("rotating").as_deref(), Some("value-1"));
    // Several unchanged cycles: no rewrite, no hook.
    let data = env.data_target();
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent
        .metric("akv_agent_syncs_total{result=\"unchanged\"}")
        .await
        < 3.0
    {
        assert!(Instant::now() < deadline, "{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hook_runs(), 1);
    assert_eq!(env.data_target(), data);

    env.fake
        .set_secret("kv1", "rotating", "value-2", SecretOpts::default());
    eventually("the rotation", Some(&agent), || hook_runs() == 2).await;
    assert_eq!(
        fs::read_to_string(&hook_log).unwrap(),
        "value-1\nvalue-2\n",
        "the hook ran after the new files were in place"
    );
    let metrics = agent.metrics().await;
    assert!(
        metrics.contains("akv_agent_syncs_total{result=\"changed\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("akv_agent_hooks_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("akv_agent_consecutive_failures 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyvault_request_bucket"),
        "the provider's series too"
    );
    let (status, body) = http_get(agent.healthz_port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    assert!(agent.stop().success());
    assert!(!agent.logs().contains(SP_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_last_good_files_and_retries_with_backoff() {
    let env = Env::start().await;
    env.fake
        .set_secret("kv1", "steady", "good-value", SecretOpts::default());
    env.write_spc(&["objectName: steady\nobjectType: secret"], "");
    let mut args = env.sp_args();
    args.extend([
        "--interval=200ms".to_owned(),
        "--jitter=0s".to_owned(),
        "--retry-initial=100ms".to_owned(),
        "--retry-max=300ms".to_owned(),
        "--max-retries=0".to_owned(),
        "--healthz-max-age=1h".to_owned(),
    ]);
    let mut agent = env.spawn(&args);
    eventually("the first publication", Some(&agent), || {
        env.read("steady").is_some()
    })
    .await;
    let data = env.data_target();
    env.fake.inject("kv1", "*", Fault::status(503));
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric("akv_agent_consecutive_failures").await < 3.0 {
        assert!(Instant::now() < deadline, "{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last good files stay, nothing half-written is left behind, and the endpoint still
    // reports the recent success (with the failures).
    assert_eq!(env.read("steady").as_deref(), Some("good-value"));
    assert_eq!(env.data_target(), data);
    assert_eq!(env.hidden().len(), 2, "{:?}", env.hidden());
    let (status, body) = http_get(agent.healthz_port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"lastErrorKind\":\"unavailable\""), "{body}");
    assert!(
        agent
            .logs()
            .contains("sync failed; the last good files stay")
    );

    env.fake.clear_faults();
    env.fake
        .set_secret("kv1", "steady", "after-outage", SecretOpts::default());
    eventually("recovery", Some(&agent), || {
        env.read("steady").as_deref() == Some("after-outage")
    })
    .await;
    let (status, body) = http_get(agent.healthz_port, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"consecutiveFailures\":0"), "{body}");
    assert!(agent.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_token_file_is_reread_and_sighup_syncs_now() {
    let env = Env::start().await;
    env.fake
        .add_federated_identity(TENANT, WI_ID, "federated-token-one");
    env.fake
        .add_federated_identity(TENANT, WI_ID, "federated-token-two");
    env.fake.grant("kv1", WI_ID, &["get"]);
    env.fake
        .set_secret("kv1", "wi", "wi-value-1", SecretOpts::default());
    // The SPC names the client id; the token comes from the file.
    env.write_spc(
        &["objectName: wi\nobjectType: secret"],
        &format!("    clientID: \"{WI_ID}\"\n"),
    );
    let token_file = env.dir.path().join("token");
    fs::write(&token_file, "federated-token-one").unwrap();
    let mut args = env.base_args();
    args.extend([
        format!("--federated-token-file={}", token_file.display()),
        "--interval=1h".to_owned(),
    ]);
    let mut agent = env.spawn(&args);
    eventually("the first publication", Some(&agent), || {
        env.read("wi").as_deref() == Some("wi-value-1")
    })
    .await;
    fs::write(&token_file, "federated-token-two").unwrap();
    env.fake
        .set_secret("kv1", "wi", "wi-value-2", SecretOpts::default());
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("a sync on SIGHUP", Some(&agent), || {
        env.read("wi").as_deref() == Some("wi-value-2")
    })
    .await;
    let principals: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.is_vault("kv1") && r.status == 200)
        .map(|r| r.principal)
        .collect();
    assert!(principals.iter().all(|p| p.as_deref() == Some(WI_ID)));
    // One token request per token file content: the file was re-read and the new token used.
    let token_requests = env
        .fake
        .count(|r| r.service == support::fake_azure::Service::Authority && r.status == 200);
    assert_eq!(token_requests, 2);
    let logs = agent.logs();
    assert!(!logs.contains("federated-token-"), "{logs}");
    assert!(agent.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_and_an_on_change_signal() {
    let env = Env::start().await;
    let principal = env.fake.add_managed_identity(Some("uami-agent"));
    env.fake.grant("kv1", &principal, &["get"]);
    env.fake
        .set_secret("kv1", "mi", "mi-value", SecretOpts::default());
    env.write_spc(&["objectName: mi\nobjectType: secret"], "");
    // This test process receives the SIGHUP itself. (A shell with `trap … HUP` cannot: when the
    // tests run under nohup, SIGHUP is ignored on entry and a shell may not trap it.)
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    let pid_file = env.dir.path().join("app.pid");
    fs::write(&pid_file, std::process::id().to_string()).unwrap();
    let mut args = env.base_args();
    args.extend([
        "--managed-identity".to_owned(),
        "--user-assigned-identity-id=uami-agent".to_owned(),
        "--on-change-signal=HUP".to_owned(),
        format!("--on-change-pid-file={}", pid_file.display()),
    ]);
    let (status, logs) = env.run_once(&args);
    assert!(status.success(), "{logs}");
    assert_eq!(env.read("mi").as_deref(), Some("mi-value"));
    tokio::time::timeout(Duration::from_secs(10), hangups.recv())
        .await
        .unwrap_or_else(|_| panic!("no SIGHUP arrived: {logs}"));
}
