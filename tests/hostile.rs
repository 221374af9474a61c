//! Hostile input through the real binary: traversal and odd file names, YAML bombs, hostile
//! parameters, oversized requests and replies, bytes that are not UTF-8. Each ends in a defined
//! status, reaches no Azure service when it is invalid, and leaves the process serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::too_many_lines,
    clippy::format_push_string
)]

mod support;

use akv_csi_provider::v1alpha1::{
    MountResponse, csi_driver_provider_client::CsiDriverProviderClient,
};
use futures::future::join_all;
use support::{
    env::{Env, sp_secrets},
    fake_azure::Service,
    provider::{NO_SECRET_REF, mount_request, objects_yaml},
};
use tonic::Code;

/// A YAML double-quoted scalar for any string: everything but printable ASCII is escaped, so the
/// odd character reaches the object's YAML, not the SecretProviderClass text around it.
fn yaml_quoted(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// At least 30 forms of traversal and odd names, for objectAlias.
fn hostile_aliases() -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("absolute path", "/etc/passwd".into()),
        ("root alone", "/".into()),
        ("UNC-like", "//server/share/x".into()),
        ("parent", "..".into()),
        ("parent prefix", "../x".into()),
        ("deep parent", "../../../../etc/shadow".into()),
        ("parent inside", "a/../../x".into()),
        ("trailing parent", "a/..".into()),
        ("current dir", ".".into()),
        ("current dir prefix", "./a".into()),
        ("current dir inside", "a/./b".into()),
        ("empty element", "a//b".into()),
        ("trailing slash", "a/".into()),
        ("atomic writer data link", "..data".into()),
        (
            "atomic writer timestamp dir",
            "..2024_01_01_00_00_00.000000000".into(),
        ),
        ("three dots", "...".into()),
        ("backslash", "a\\b".into()),
        ("backslash traversal", "..\\..\\windows\\system32".into()),
        ("drive letter", "C:\\Windows\\x".into()),
        ("device path", "\\\\?\\C:\\x".into()),
        ("NUL inside", "a\u{0}b".into()),
        ("NUL at the end", "passwd\u{0}.txt".into()),
        ("newline (log forging)", "a\nlevel=ERROR forged-line".into()),
        ("carriage return", "a\rb".into()),
        ("tab", "a\tb".into()),
        ("terminal escape", "\u{1b}[31mred".into()),
        ("DEL", "a\u{7f}".into()),
        ("C1 control", "a\u{85}b".into()),
        ("right-to-left override", "\u{202E}fdp.exe".into()),
        ("zero-width space", "\u{200B}config".into()),
        ("byte order mark", "\u{FEFF}config".into()),
        ("line separator", "a\u{2028}b".into()),
        ("soft hyphen", "pass\u{AD}word".into()),
        ("Unicode tag characters", "a\u{E0041}".into()),
        ("fullwidth dots", "\u{FF0E}\u{FF0E}/etc/passwd".into()),
        ("two dot leader", "\u{2025}/etc/passwd".into()),
        ("one dot leaders", "\u{2024}\u{2024}/x".into()),
        ("division slash", "..\u{2215}x".into()),
        ("fullwidth solidus", "a\u{FF0F}b".into()),
        ("fullwidth reverse solidus", "a\u{FF3C}b".into()),
        ("percent-encoded dots", "%2e%2e/etc/passwd".into()),
        ("percent-encoded slash", "..%2fetc".into()),
        ("percent-encoded slash inside", "a%2Fb".into()),
        ("percent-encoded backslash", "a%5cb".into()),
        ("percent-encoded NUL", "a%00b".into()),
        ("overlong UTF-8 dot, encoded", "%c0%ae%c0%ae/x".into()),
        ("element of 256 bytes", "a".repeat(256)),
        ("path of 1025 bytes", format!("{}/b", "a".repeat(1022))),
        ("100 000 bytes", "x".repeat(100_000)),
        ("2000 nested folders", "a/".repeat(2000) + "b"),
    ];
    v.sort_by_key(|(name, _)| *name);
    v
}

/// Forms for objectName (no alias): Key Vault names are letters, digits and '-'.
fn hostile_names() -> Vec<(&'static str, String)> {
    vec![
        ("absolute path", "/etc/passwd".into()),
        ("parent", "..".into()),
        ("parent prefix", "../x".into()),
        ("slash", "a/b".into()),
        ("backslash", "a\\b".into()),
        ("dot", "a.b".into()),
        ("NUL", "a\u{0}b".into()),
        ("newline", "a\nb".into()),
        ("percent-encoded", "%2e%2e".into()),
        ("non-ASCII", "s\u{E9}cret".into()),
        ("right-to-left override", "\u{202E}abc".into()),
        ("128 characters", "a".repeat(128)),
        ("100 000 characters", "a".repeat(100_000)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_odd_file_names_are_invalid_argument() {
    let env = Env::start(&[]).await;
    env.secret("s", "hostile-suite-value-1");
    let aliases = hostile_aliases();
    let names = hostile_names();
    assert!(aliases.len() >= 30, "{} alias forms", aliases.len());
    let cases: Vec<(String, String, &str)> = aliases
        .iter()
        .map(|(label, alias)| {
            (
                format!("objectAlias: {label}"),
                format!(
                    "objectName: s\nobjectType: secret\nobjectAlias: {}",
                    yaml_quoted(alias)
                ),
                "objectAlias",
            )
        })
        .chain(names.iter().map(|(label, name)| {
            (
                format!("objectName: {label}"),
                format!("objectName: {}\nobjectType: secret", yaml_quoted(name)),
                "objectName",
            )
        }))
        .collect();
    let runs = cases.iter().map(|(label, object, field)| {
        let env = &env;
        async move {
            let result = env.mount_sp(&[object]).await;
            (label, field, result)
        }
    });
    let mut rejected = 0;
    for (label, field, result) in join_all(runs).await {
        let status = result.expect_err(label);
        assert_eq!(status.code(), Code::InvalidArgument, "{label}: {status:?}");
        assert!(
            status.message().contains(field),
            "{label}: {}",
            status.message()
        );
        assert!(
            status.message().len() <= 2048,
            "{label}: message of {} bytes",
            status.message().len()
        );
        assert!(
            !status.message().contains('\n'),
            "{label}: raw newline in the message"
        );
        rejected += 1;
    }
    println!(
        "hostile file names rejected with InvalidArgument: {} objectAlias + {} objectName forms",
        aliases.len(),
        names.len()
    );
    assert_eq!(rejected, aliases.len() + names.len());
    assert_eq!(
        env.fake.count(|r| r.service != Service::Other),
        0,
        "invalid requests never reach Azure"
    );
    // A forged log line never starts a line of its own.
    let logs = env.provider.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.starts_with("level=ERROR forged-line")),
        "log forging"
    );
    // Still serving, and a good alias with dots and sub-folders works.
    let ok = env
        .mount_sp(&["objectName: s\nobjectType: secret\nobjectAlias: conf.d/app..v1/.hidden"])
        .await
        .expect("good alias");
    assert_eq!(ok.files[0].path, "conf.d/app..v1/.hidden");
}

/// A 300,000-character `objectNamePrefix` (and tag value): the status message and every log line
/// stay short; the value shows cut (`text::quote`: 100 characters and the length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_user_values_make_short_messages_and_log_lines() {
    let env = Env::start(&["--log-format-json"]).await;
    let prefix = "p".repeat(300_000);
    for object in [
        format!("objectNamePrefix: {prefix}\nobjectType: secret"),
        format!(
            "objectNamePrefix: \"{prefix}\\n\"\nobjectTags:\n  team: {prefix}\nobjectType: secret"
        ),
    ] {
        let status = env.mount_sp(&[&object]).await.expect_err("invalid");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{}",
            &status.message()[..200]
        );
        assert!(
            status.message().len() < 1024,
            "{} bytes",
            status.message().len()
        );
        assert!(
            status
                .message()
                .contains(&format!("{}…(300000 characters)", "p".repeat(100))),
            "{}",
            status.message()
        );
    }
    let logs = env.provider.logs();
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
    assert_eq!(
        logs.lines().filter(|l| l.contains("mount failed")).count(),
        2,
        "{}",
        &logs[..logs.len().min(2000)]
    );
}

/// SPC parameters to override.
type Params = Vec<(&'static str, String)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parameters_and_yaml() {
    let env = Env::start(&[]).await;
    let object = "objectName: s\nobjectType: secret";
    let billion_laughs = {
        let mut y = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            y.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 9].join(",")));
        }
        y.push_str("array: *a9\n");
        y
    };
    let deep_flow = format!("array: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let inner_bomb = {
        let mut y = String::from("a0: &a0 lol\n");
        for i in 1..12 {
            y.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{}", i - 1); 10].join(",")
            ));
        }
        y.push_str("objectName: *a11\nobjectType: secret\n");
        y
    };
    let many = objects_yaml(&vec![object; 1001]);
    let cases: Vec<(&str, Params, Code, &str)> = vec![
        (
            "objects: billion laughs",
            vec![("objects", billion_laughs)],
            Code::InvalidArgument,
            "parameter objects",
        ),
        (
            "objects: 100 000 nested flow sequences",
            vec![("objects", deep_flow)],
            Code::InvalidArgument,
            "parameter objects",
        ),
        (
            "objects: alias bomb inside one object",
            vec![("objects", objects_yaml(&[&inner_bomb]))],
            Code::InvalidArgument,
            "objects.array[0]",
        ),
        (
            "objects: 1001 objects",
            vec![("objects", many)],
            Code::InvalidArgument,
            "at most 1000",
        ),
        (
            "objects: over 1 MiB",
            vec![("objects", format!("array: []\n#{}", "x".repeat(1 << 20)))],
            Code::InvalidArgument,
            "at most 1048576",
        ),
        (
            "objects: a YAML tag",
            vec![("objects", "array: !!binary aGVsbG8=".to_owned())],
            Code::InvalidArgument,
            "parameter objects",
        ),
        (
            "objects: objectVersionHistory 101",
            vec![(
                "objects",
                objects_yaml(&["objectName: s\nobjectType: secret\nobjectVersionHistory: 101"]),
            )],
            Code::InvalidArgument,
            "objectVersionHistory",
        ),
        (
            "cloudEnvFileName: /dev/zero",
            vec![("cloudEnvFileName", "/dev/zero".to_owned())],
            Code::FailedPrecondition,
            "not a regular file",
        ),
        (
            "cloudEnvFileName: /proc/self/environ",
            vec![("cloudEnvFileName", "/proc/self/environ".to_owned())],
            Code::InvalidArgument,
            "is not a valid cloud environment",
        ),
        (
            "cloudEnvFileName: a directory",
            vec![("cloudEnvFileName", "/".to_owned())],
            Code::FailedPrecondition,
            "not a regular file",
        ),
        (
            "tenantID with a newline",
            vec![("tenantID", "t\nforged".to_owned())],
            Code::InvalidArgument,
            "tenantID",
        ),
        (
            "tenantID of 300 characters",
            vec![("tenantID", "t".repeat(300))],
            Code::InvalidArgument,
            "tenantID",
        ),
        (
            "keyvaultName with a dot (host injection)",
            vec![("keyvaultName", "evil.com#".to_owned())],
            Code::InvalidArgument,
            "keyvaultName",
        ),
        (
            "clientID with a space",
            vec![("clientID", "a b".to_owned())],
            Code::InvalidArgument,
            "clientID",
        ),
        (
            "usePodIdentity not a boolean",
            vec![("usePodIdentity", "yes\u{1b}[2J".to_owned())],
            Code::InvalidArgument,
            "usePodIdentity",
        ),
        (
            "serviceAccount.tokens not JSON",
            vec![
                ("clientID", "wi".to_owned()),
                (
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    "{{{{".to_owned(),
                ),
            ],
            Code::InvalidArgument,
            "serviceAccount.tokens",
        ),
    ];
    for (label, overrides, code, needle) in cases {
        let mut params = env.params(&[object], &[]);
        for (k, v) in overrides {
            params.retain(|(key, _)| *key != k);
            params.push((k, v));
        }
        let started = std::time::Instant::now();
        let status = env.mount(&params, &sp_secrets()).await.expect_err(label);
        println!(
            "| {label} | {:?} | {} | {:?} |",
            status.code(),
            status.message(),
            started.elapsed()
        );
        assert_eq!(status.code(), code, "{label}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{label}: {}",
            status.message()
        );
        assert!(status.message().len() <= 2048, "{label}");
    }
    // Hostile request fields.
    let mut client = env.provider.client().await;
    for (label, permission) in [
        ("permission 1e9", "1e9"),
        ("permission -1", "-1"),
        ("permission 0x1a4", "0x1a4"),
        ("permission 99999999999999999999", "99999999999999999999"),
    ] {
        let mut req = mount_request(&env.params(&[object], &[]), &sp_secrets());
        req.permission = permission.to_owned();
        let status = client.mount(req).await.expect_err(label);
        assert_eq!(status.code(), Code::InvalidArgument, "{label}");
    }
    for (label, secrets) in [
        ("secrets not JSON", "clientid=x"),
        ("secrets with a number", r#"{"clientid": 1}"#),
        ("secrets nested", r#"{"a": {"b": "c"}}"#),
    ] {
        let req = mount_request(&env.params(&[object], &[]), secrets);
        let status = client.mount(req).await.expect_err(label);
        assert_eq!(status.code(), Code::InvalidArgument, "{label}");
        assert!(
            status.message().starts_with("Mount request field secrets"),
            "{label}: {}",
            status.message()
        );
    }
    assert_eq!(
        env.fake.count(|r| r.service != Service::Other),
        0,
        "invalid requests never reach Azure"
    );
    assert!(env.serving().await);
    let peak = support::provider::rss_kib(env.provider.pid(), "VmHWM");
    println!("provider peak RSS after the hostile suite: {peak} KiB");
    assert!(
        peak < 200 * 1024,
        "a YAML bomb or an oversized value blew the memory: {peak} KiB"
    );
}

/// A raw `MountRequest` whose string fields may hold any bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct RawMountRequest {
    #[prost(bytes = "vec", tag = "1")]
    attributes: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    secrets: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    target_path: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    permission: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_undecodable_requests() {
    let env = Env::start(&[]).await;
    env.secret("s", "oversize-suite-value");
    let object = "objectName: s\nobjectType: secret";
    let mut client = env
        .provider
        .client()
        .await
        .max_encoding_message_size(64 << 20);

    // attributes over 2 MiB (under the 4 MiB message limit): our own message.
    let mut req = mount_request(
        &env.params(&[object], &[("padding", "p".repeat(3 << 20))]),
        &sp_secrets(),
    );
    req.permission = "420".into();
    let status = client.mount(req).await.expect_err("3 MiB attributes");
    println!(
        "| attributes of 3 MiB | {:?} | {} |",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("at most 2097152 are accepted"),
        "{}",
        status.message()
    );

    // secrets over 2 MiB.
    let big = serde_json::json!({"clientid": "x", "clientsecret": "y".repeat(3 << 20)}).to_string();
    let status = client
        .mount(mount_request(&env.params(&[object], &[]), &big))
        .await
        .expect_err("3 MiB secrets");
    println!(
        "| secrets of 3 MiB | {:?} | {} |",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("Mount request field secrets is "),
        "{}",
        status.message()
    );

    // A whole request over 4 MiB is refused before it is decoded.
    let req = mount_request(
        &env.params(&[object], &[("padding", "p".repeat(5 << 20))]),
        &sp_secrets(),
    );
    let status = client.mount(req).await.expect_err("5 MiB request");
    println!(
        "| request of 5 MiB | {:?} | {} |",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("the limit is: 4194304 bytes"),
        "{}",
        status.message()
    );

    // Strings that are not UTF-8.
    let channel = env.provider.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let raw = RawMountRequest {
        attributes: b"{\"a\":\"\xff\xfe\"}".to_vec(),
        secrets: NO_SECRET_REF.as_bytes().to_vec(),
        target_path: b"/t".to_vec(),
        permission: b"420".to_vec(),
    };
    let status = grpc
        .unary::<_, MountResponse, _>(
            tonic::Request::new(raw),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/v1alpha1.CSIDriverProvider/Mount",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("not UTF-8");
    println!(
        "| attributes not UTF-8 | {:?} | {} |",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status.message().contains("not UTF-8"),
        "{}",
        status.message()
    );
    assert!(env.serving().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_over_the_driver_limit_name_the_flag() {
    let env = Env::start(&[]).await;
    // Four values whose contents alone fit in 4 MiB, but whose reply does not.
    let limit = 4 * 1024 * 1024;
    let each = limit / 4 - 2;
    for i in 0..4 {
        env.secret(
            &format!("big{i}"),
            &char::from(b'a' + i).to_string().repeat(each),
        );
    }
    let objects: Vec<String> = (0..4)
        .map(|i| format!("objectName: big{i}\nobjectType: secret"))
        .collect();
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    let status = env.mount_sp(&objects).await.expect_err("over 4 MiB");
    println!(
        "| reply over 4 MiB (contents {} bytes) | {:?} | {} |",
        each * 4,
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("--max-call-recv-msg-size"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("more than the 4194304 bytes"),
        "{}",
        status.message()
    );
    // Three of them fit, and the driver-sized client accepts the reply.
    let ok = env.mount_sp(&objects[..3]).await.expect("under 4 MiB");
    assert_eq!(ok.files.len(), 3);
    drop(env);

    // With both limits raised, the four fit.
    let env = Env::start(&["--max-call-recv-msg-size=8388608"]).await;
    for i in 0..4 {
        env.secret(
            &format!("big{i}"),
            &char::from(b'a' + i).to_string().repeat(each),
        );
    }
    let mut client: CsiDriverProviderClient<_> = env
        .provider
        .client()
        .await
        .max_decoding_message_size(8 << 20);
    let reply = client
        .mount(mount_request(&env.params(&objects, &[]), &sp_secrets()))
        .await
        .expect("8 MiB limit")
        .into_inner();
    assert_eq!(reply.files.len(), 4);
}
