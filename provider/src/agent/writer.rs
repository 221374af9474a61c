//! Atomic publication of a set of files into a folder, the way the driver (Kubernetes'
//! AtomicWriter) does it, so that readers never see a half-written set:
//!
//! 1. the files are written into a new hidden folder `..<timestamp>` and fsynced;
//! 2. a symlink `..data_tmp` -> `..<timestamp>` is renamed over `..data` (one atomic step);
//! 3. every top-level name is a symlink `<name>` -> `..data/<name>` (created by rename too);
//! 4. top-level symlinks of names no longer published, and older `..<timestamp>` folders, are removed.
//!
//! A failure before step 2 removes the new folder and leaves the published files as they were.

use crate::{sensitive::SecretBytes, spc::file_name};
use std::{
    collections::BTreeSet,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
};
use zeroize::Zeroizing;

/// The symlink to the current timestamped folder.
pub const DATA_LINK: &str = "..data";
const DATA_TMP: &str = "..data_tmp";
const LINK_TMP: &str = "..link_tmp";
/// Mode of the folders the writer creates.
const DIR_MODE: u32 = 0o755;

/// One file to publish.
#[derive(Debug, Clone)]
pub struct FileToWrite {
    /// Relative path (sub-folders allowed).
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Contents.
    pub contents: SecretBytes,
}

/// Errors publishing files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A path is not a clean relative file name (never produced by a valid mount).
    #[error("file name \"{path}\" {problem}")]
    Path {
        /// The path.
        path: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The target folder holds a directory where a published name's symlink must go.
    #[error(
        "{path} is a directory that the agent did not create; move it away or choose another --target-dir"
    )]
    Occupied {
        /// The directory.
        path: PathBuf,
    },
    /// A file system operation failed (permissions, disk full, read-only file system).
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl WriteError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Path { .. } => "bad_path",
            Self::Occupied { .. } => "target_occupied",
            Self::Io { .. } => "io",
        }
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Publishes file sets into one folder.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    dir: PathBuf,
}

impl AtomicWriter {
    /// A writer for `dir` (created on the first write if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The target folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the published files are exactly `files` (same paths, modes and contents), e.g.
    /// after a restart; `false` when nothing is published or anything differs or cannot be read.
    pub fn matches(&self, files: &[FileToWrite]) -> bool {
        let Ok(target) = fs::read_link(self.dir.join(DATA_LINK)) else {
            return false;
        };
        let root = self.dir.join(target);
        let mut published = BTreeSet::new();
        if list_files(&root, "", &mut published).is_err() {
            return false;
        }
        let wanted: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        if published
            .iter()
            .map(String::as_str)
            .ne(wanted.iter().copied())
        {
            return false;
        }
        files.iter().all(|file| {
            let path = root.join(&file.path);
            let Ok(meta) = fs::metadata(&path) else {
                return false;
            };
            let mut contents = Zeroizing::new(Vec::new());
            meta.permissions().mode() & 0o777 == file.mode
                && File::open(&path)
                    .and_then(|mut f| f.read_to_end(&mut contents))
                    .is_ok()
                && contents.as_slice() == file.contents.expose()
        })
    }

    /// Publishes `files`, replacing what was published before, atomically.
    pub fn write(&self, files: &[FileToWrite]) -> Result<(), WriteError> {
        let mut top: BTreeSet<&str> = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for file in files {
            file_name::check(&file.path).map_err(|problem| WriteError::Path {
                path: file.path.clone(),
                problem,
            })?;
            if !seen.insert(file.path.as_str()) {
                return Err(WriteError::Path {
                    path: file.path.clone(),
                    problem: "appears twice",
                });
            }
            top.insert(file.path.split('/').next().unwrap_or_default());
        }
        if !self.dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&self.dir)
                .map_err(io_error("creating", &self.dir))?;
        }
        for name in &top {
            let path = self.dir.join(name);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                return Err(WriteError::Occupied { path });
            }
        }

        let (folder_name, folder) = self.new_folder()?;
        if let Err(e) = write_tree(&folder, files) {
            let _ = fs::remove_dir_all(&folder);
            return Err(e);
        }

        // The one step that makes the new set visible.
        let data_tmp = self.dir.join(DATA_TMP);
        let _ = fs::remove_file(&data_tmp);
        let swap = symlink(&folder_name, &data_tmp)
            .map_err(io_error("creating the symlink", &data_tmp))
            .and_then(|()| {
                fs::rename(&data_tmp, self.dir.join(DATA_LINK))
                    .map_err(io_error("renaming over", &self.dir.join(DATA_LINK)))
            });
        if let Err(e) = swap {
            let _ = fs::remove_file(&data_tmp);
            let _ = fs::remove_dir_all(&folder);
            return Err(e);
        }
        sync_dir(&self.dir)?;

        for name in &top {
            self.link(name)?;
        }
        self.clean(&top, &folder_name)?;
        sync_dir(&self.dir)
    }

    /// Creates `..<timestamp>` (unique).
    fn new_folder(&self) -> Result<(String, PathBuf), WriteError> {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.nanosecond()
        );
        for attempt in 0u32..100 {
            let name = if attempt == 0 {
                stamp.clone()
            } else {
                format!("{stamp}_{attempt}")
            };
            let path = self.dir.join(&name);
            match DirBuilder::new().mode(DIR_MODE).create(&path) {
                Ok(()) => {
                    set_mode(&path, DIR_MODE)?;
                    return Ok((name, path));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("creating", &path)(e)),
            }
        }
        Err(WriteError::Io {
            action: "creating",
            path: self.dir.join(stamp),
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }

    /// Points `<name>` at `..data/<name>` (replacing a stale file or symlink by rename).
    fn link(&self, name: &str) -> Result<(), WriteError> {
        let path = self.dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if fs::read_link(&path).is_ok_and(|t| t == target) {
            return Ok(());
        }
        let tmp = self.dir.join(LINK_TMP);
        let _ = fs::remove_file(&tmp);
        symlink(&target, &tmp).map_err(io_error("creating the symlink", &tmp))?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error("renaming over", &path)(e)
        })
    }

    /// Removes symlinks of names no longer published and every older `..` folder.
    fn clean(&self, top: &BTreeSet<&str>, current: &str) -> Result<(), WriteError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if name.starts_with("..") {
                if name == DATA_LINK || name == current {
                    continue;
                }
                let removed = if meta.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(io_error("removing", &path))?;
            } else if meta.file_type().is_symlink()
                && !top.contains(name)
                && fs::read_link(&path).is_ok_and(|t| t.starts_with(DATA_LINK))
            {
                fs::remove_file(&path).map_err(io_error("removing", &path))?;
            }
        }
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WriteError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("setting the mode of", path))
}

fn sync_dir(path: &Path) -> Result<(), WriteError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing", path))
}

/// Writes every file below `root`, with its mode, and fsyncs files and folders.
fn write_tree(root: &Path, files: &[FileToWrite]) -> Result<(), WriteError> {
    let mut folders = BTreeSet::new();
    for file in files {
        let path = root.join(&file.path);
        if let Some(parent) = path.parent()
            && parent != root
            && folders.insert(parent.to_path_buf())
        {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(parent)
                .map_err(io_error("creating", parent))?;
            // Every folder between root and parent gets DIR_MODE whatever the umask.
            let mut folder = parent;
            while folder != root {
                set_mode(folder, DIR_MODE)?;
                folders.insert(folder.to_path_buf());
                match folder.parent() {
                    Some(up) => folder = up,
                    None => break,
                }
            }
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)
            .map_err(io_error("creating", &path))?;
        set_mode(&path, file.mode)?;
        out.write_all(file.contents.expose())
            .and_then(|()| out.sync_all())
            .map_err(io_error("writing", &path))?;
    }
    for folder in folders.iter().rev() {
        sync_dir(folder)?;
    }
    sync_dir(root)
}

/// Every file below `dir` as `prefix/relative/path`.
fn list_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type()?.is_dir() {
            list_files(&entry.path(), &relative, out)?;
        } else {
            out.insert(relative);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32, contents: &str) -> FileToWrite {
        FileToWrite {
            path: path.to_owned(),
            mode,
            contents: SecretBytes::new(contents.as_bytes().to_vec()),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn read(dir: &Path, path: &str) -> String {
        fs::read_to_string(dir.join(path)).unwrap_or_default()
    }

    #[test]
    fn publishes_swaps_and_cleans_up() {
        let tmp = tempfile::tempdir().ok();
        let dir = tmp
            .as_ref()
            .map(|t| t.path().join("target"))
            .unwrap_or_default();
        let writer = AtomicWriter::new(&dir);
        let first = [
            file("a", 0o644, "one"),
            file("sub/b", 0o600, "two"),
            file("old", 0o644, "gone later"),
        ];
        assert!(!writer.matches(&first));
        assert!(writer.write(&first).is_ok());
        assert!(writer.matches(&first));
        assert_eq!(read(&dir, "a"), "one");
        assert_eq!(read(&dir, "sub/b"), "two");
        let mode = fs::metadata(dir.join("sub/b")).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        assert_eq!(
            fs::read_link(dir.join("a")).ok(),
            Some(PathBuf::from("..data/a"))
        );
        let visible: Vec<String> = names(&dir)
            .into_iter()
            .filter(|n| !n.starts_with(".."))
            .collect();
        assert_eq!(visible, ["a", "old", "sub"]);

        let second = [file("a", 0o640, "one v2"), file("sub/b", 0o600, "two")];
        assert!(!writer.matches(&second));
        assert!(writer.write(&second).is_ok());
        assert!(writer.matches(&second));
        assert_eq!(read(&dir, "a"), "one v2");
        let all = names(&dir);
        assert!(!all.contains(&"old".to_owned()), "{all:?}");
        let hidden: Vec<&String> = all.iter().filter(|n| n.starts_with("..")).collect();
        assert_eq!(
            hidden.len(),
            2,
            "only ..data and one timestamped folder: {all:?}"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_published_set() {
        let tmp = tempfile::tempdir().ok();
        let dir = tmp
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_default();
        let writer = AtomicWriter::new(&dir);
        assert!(writer.write(&[file("a", 0o644, "good")]).is_ok());
        let bad = [file("a", 0o644, "new"), file("../escape", 0o644, "x")];
        assert!(matches!(writer.write(&bad), Err(WriteError::Path { .. })));
        let dup = [file("a", 0o644, "new"), file("a", 0o644, "again")];
        assert!(writer.write(&dup).is_err());
        // A file and a folder of the same name cannot both be created: the new folder is removed.
        let clash = [file("x", 0o644, "file"), file("x/y", 0o644, "nested")];
        assert!(writer.write(&clash).is_err());
        assert_eq!(read(&dir, "a"), "good");
        assert_eq!(
            names(&dir).iter().filter(|n| n.starts_with("..")).count(),
            2,
            "{:?}",
            names(&dir)
        );
        // A directory the agent did not create is never replaced.
        assert!(fs::create_dir(dir.join("mine")).is_ok());
        let occupied = writer.write(&[file("mine", 0o644, "x")]);
        assert!(matches!(occupied, Err(WriteError::Occupied { .. })));
    }
}
