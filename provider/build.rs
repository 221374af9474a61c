//! Compiles `proto/v1alpha1.proto` with protox (pure Rust, no protoc binary) and tonic-prost-build,
//! and records the build date and git commit for `--version`.

use std::time::{SystemTime, UNIX_EPOCH};

fn build_date() -> String {
    // SOURCE_DATE_EPOCH keeps reproducible builds reproducible.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
        });
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

mod build_info;

/// Output of `git <args>` run in the crate's folder, trimmed; `None` when git or `.git` is absent.
fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    let dir = |arg: &str| {
        git(&["rev-parse", "--path-format=absolute", arg]).map(std::path::PathBuf::from)
    };
    if let (Some(git_dir), Some(common_dir)) = (dir("--git-dir"), dir("--git-common-dir")) {
        for path in build_info::watched(&git_dir, &common_dir) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    build_info::commit(
        git(&["rev-parse", "--short=12", "HEAD"]).as_deref(),
        std::env::var("GIT_COMMIT").ok().as_deref(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let proto = proto_dir.join("v1alpha1.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rustc-env=AKV_BUILD_DATE={}", build_date());
    println!("cargo:rustc-env=AKV_GIT_COMMIT={}", git_commit());
    let descriptors = protox::compile([&proto], [&proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Prost, plus zeroizing secret fields once a message is encoded.
        .codec_path("crate::grpc::codec::ScrubbingCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
