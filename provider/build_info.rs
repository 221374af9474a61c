//! The git commit recorded for `--version` and `akv_build_info`, shared by `build.rs` and a unit
//! test of the library (`build_info_tests`), so the rules are tested without running cargo.
//!
//! `git rev-parse` wins when it works (a checkout); otherwise the `GIT_COMMIT` environment
//! variable (the Dockerfile's build argument: the image is built without `.git`); otherwise
//! `unknown`. The build script reruns when HEAD moves: it watches HEAD, the ref HEAD points to
//! and `packed-refs`, and the variable.

use std::path::{Path, PathBuf};

/// Longest commit id kept (git's short form used by `--version`).
pub const COMMIT_CHARS: usize = 12;

/// The commit to record: `from_git` (output of `git rev-parse --short=12 HEAD`), else
/// `from_env` (`GIT_COMMIT`), else `unknown`. Only hex digits are accepted, at most
/// [`COMMIT_CHARS`] of them.
pub fn commit(from_git: Option<&str>, from_env: Option<&str>) -> String {
    let clean = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())).then(|| {
            s.chars()
                .take(COMMIT_CHARS)
                .collect::<String>()
                .to_ascii_lowercase()
        })
    };
    from_git
        .and_then(clean)
        .or_else(|| from_env.and_then(clean))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The files whose change moves HEAD: `<git_dir>/HEAD`, the ref it names (`ref: refs/heads/x`,
/// under `common_dir`: in a worktree the refs are shared) and `<common_dir>/packed-refs`.
/// Only files that exist are returned (cargo reruns every time for a missing one).
pub fn watched(git_dir: &Path, common_dir: &Path) -> Vec<PathBuf> {
    let head = git_dir.join("HEAD");
    let mut paths = vec![head.clone()];
    if let Ok(text) = std::fs::read_to_string(&head)
        && let Some(reference) = text.trim().strip_prefix("ref: ")
    {
        paths.push(git_dir.join(reference));
        paths.push(common_dir.join(reference));
    }
    paths.push(common_dir.join("packed-refs"));
    let mut seen = Vec::new();
    for path in paths {
        if path.is_file() && !seen.contains(&path) {
            seen.push(path);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::{commit, watched};

    #[test]
    fn commit_from_git_then_the_build_argument_then_unknown() {
        assert_eq!(commit(Some("7e61785abcde\n"), Some("ffff")), "7e61785abcde");
        // No .git (the image build): the Dockerfile's GIT_COMMIT.
        assert_eq!(
            commit(None, Some("7E61785ABCDEF0123456789")),
            "7e61785abcde"
        );
        assert_eq!(commit(None, Some("  ")), "unknown");
        assert_eq!(commit(None, Some("main; rm -rf /")), "unknown");
        assert_eq!(commit(None, None), "unknown");
    }

    #[test]
    fn watches_head_the_branch_it_names_and_packed_refs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let git = dir.path();
        std::fs::create_dir_all(git.join("refs/heads")).expect("write");
        std::fs::write(git.join("HEAD"), "ref: refs/heads/faults\n").expect("write");
        // The branch has no loose ref yet (only packed): nothing missing is watched.
        std::fs::write(git.join("packed-refs"), "").expect("write");
        assert_eq!(
            watched(git, git),
            vec![git.join("HEAD"), git.join("packed-refs")]
        );
        std::fs::write(git.join("refs/heads/faults"), "7e61785\n").expect("write");
        assert_eq!(
            watched(git, git),
            vec![
                git.join("HEAD"),
                git.join("refs/heads/faults"),
                git.join("packed-refs")
            ]
        );
        // A detached HEAD: HEAD itself changes on checkout.
        std::fs::write(git.join("HEAD"), "7e61785abcdef\n").expect("write");
        assert_eq!(
            watched(git, git),
            vec![git.join("HEAD"), git.join("packed-refs")]
        );
    }
}
