//! Two objects may not write one file, nor a file where another writes a folder. Checked on the
//! paths an SPC plans ([`file_conflicts`]) and, after fetching, on the files a Mount actually
//! writes ([`path_conflicts`]: the `.crt`/`.key` files of certificate-backed secrets and the
//! secrets a bulk entry matched are only known then).

use super::{KeyVaultObject, SpcError};
use crate::text::quote;
use std::collections::HashMap;

/// The first file conflict among `objects`, if any.
pub fn check_file_conflicts(objects: &[KeyVaultObject]) -> Result<(), SpcError> {
    match file_conflicts(objects).into_iter().next() {
        Some(conflict) => Err(conflict),
        None => Ok(()),
    }
}

/// Every file conflict among the paths `objects` plan.
pub(crate) fn file_conflicts(objects: &[KeyVaultObject]) -> Vec<SpcError> {
    let owners: Vec<(String, Vec<String>)> = objects
        .iter()
        .map(|o| (o.shown(), o.planned_files()))
        .collect();
    path_conflicts(&owners)
}

/// Every conflict among `owners` (an object as shown in messages, and the paths it writes): two
/// owners writing one path, or one owner's file being another's folder. An owner never
/// conflicts with itself.
pub fn path_conflicts(owners: &[(String, Vec<String>)]) -> Vec<SpcError> {
    // path -> index of its owner; folders are recorded too so that "a" and "a/b" conflict.
    let mut files: HashMap<&str, usize> = HashMap::new();
    let mut folders: HashMap<&str, usize> = HashMap::new();
    let mut conflicts = Vec::new();
    let conflict = |path: &str, first: usize, second: usize| SpcError::FileConflict {
        path: quote(path),
        first: owners[first].0.clone(),
        second: owners[second].0.clone(),
    };
    for (index, (_, paths)) in owners.iter().enumerate() {
        'paths: for path in paths {
            if let Some(&other) = files
                .get(path.as_str())
                .or_else(|| folders.get(path.as_str()))
            {
                if other != index {
                    conflicts.push(conflict(path, other, index));
                }
                continue;
            }
            // Every proper prefix ("a" and "a/b" of "a/b/c") is a folder of this path.
            let folder_ends = path.match_indices('/').map(|(i, _)| i);
            for end in folder_ends.clone() {
                if let Some(&other) = files.get(&path[..end])
                    && other != index
                {
                    conflicts.push(conflict(&path[..end], other, index));
                    continue 'paths;
                }
            }
            for end in folder_ends {
                folders.entry(&path[..end]).or_insert(index);
            }
            files.insert(path, index);
        }
    }
    conflicts
}
