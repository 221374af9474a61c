//! Where a valid SecretProviderClass mounts differently here than under the Go provider
//! (v1.8.2), as far as the SPC alone shows it: what `validate` reports as notes for a migration.
//!
//! Each difference is one where the Go provider fails, writes broken output, or ignores a field;
//! everywhere else the files are byte-identical. The README's differences table lists these and
//! the ones only a Mount can show (chains, PFX algorithms, error codes).

use super::{KeyVaultObject, ObjectFormat, ObjectType, SecretProviderClass};

/// One difference found on an SPC: which object (index in `objects.array`) and what changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Index of the object in `objects.array`.
    pub index: usize,
    /// The field that makes the difference.
    pub field: &'static str,
    /// What the Go provider did, what this provider does, and what a migrating user changes.
    pub message: String,
}

/// The object fields this provider reads that the Go provider ignores.
const OPT_IN_FIELDS: [&str; 5] = [
    "optional",
    "jsonKeys",
    "keyvaultName",
    "objectNamePrefix",
    "objectTags",
];

/// Every difference of `spc`'s objects, in object order.
pub fn differences(spc: &SecretProviderClass) -> Vec<Difference> {
    let mut out = Vec::new();
    for (index, object) in spc.objects.iter().enumerate() {
        object_differences(index, object, &mut out);
    }
    out
}

fn object_differences(index: usize, object: &KeyVaultObject, out: &mut Vec<Difference>) {
    let mut note = |field: &'static str, message: String| {
        out.push(Difference {
            index,
            field,
            message,
        });
    };
    if object.version_history > 1 {
        let n = object.version_history;
        note(
            "objectVersionHistory",
            format!(
                "writes exactly {n} versions ({file}/0 to {file}/{last}); the Go provider wrote {plus} when the secret had more ({file}/{n} too): raise objectVersionHistory by one if something reads {file}/{n}",
                file = object.file_name(),
                last = n - 1,
                plus = n + 1,
            ),
        );
        if object.version.is_some() {
            note(
                "objectVersion",
                "the history starts at the pinned version as in the Go provider, but a pinned version that is disabled or unknown fails the Mount here (the Go provider mounted no file for the object and reported success)".to_owned(),
            );
        }
    }
    if object.object_type == ObjectType::Secret && object.format == ObjectFormat::Pfx {
        note(
            "objectFormat",
            "with --write-cert-and-key-in-separate-files the .crt and .key files of a PKCS#12 certificate are PEM here; the Go provider wrote them empty for objectFormat: pfx".to_owned(),
        );
    }
    let used: Vec<&str> = OPT_IN_FIELDS
        .iter()
        .copied()
        .filter(|field| match *field {
            "optional" => object.optional,
            "jsonKeys" => !object.json_keys.is_empty(),
            "keyvaultName" => object.keyvault_name.is_some(),
            "objectNamePrefix" => object.selector.as_ref().is_some_and(|s| s.prefix.is_some()),
            _ => object.selector.as_ref().is_some_and(|s| !s.tags.is_empty()),
        })
        .collect();
    for field in used {
        note(
            field,
            format!(
                "{field} is a field of this provider only: the Go provider ignores it and mounts the object as if it were absent (or fails on an objectNamePrefix/objectTags entry, which has no objectName)"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spc(objects: &str) -> SecretProviderClass {
        let attrs: HashMap<String, String> = [
            ("keyvaultName", "kv1"),
            ("tenantID", "t"),
            ("objects", objects),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        SecretProviderClass::from_attributes(&attrs)
            .unwrap_or_else(|e| unreachable!("valid SPC: {e}"))
    }

    #[test]
    fn each_difference_is_named_once_per_object() {
        let found = differences(&spc(
            "array:\n  - |\n    objectName: plain\n    objectType: secret\n  - |\n    objectName: h\n    objectType: secret\n    objectVersionHistory: 3\n    objectVersion: abc\n  - |\n    objectName: tls\n    objectType: secret\n    objectFormat: pfx\n  - |\n    objectName: j\n    objectType: secret\n    optional: true\n    jsonKeys: [a]\n  - |\n    objectNamePrefix: app-\n    objectType: secret\n",
        ));
        let fields: Vec<(usize, &str)> = found.iter().map(|d| (d.index, d.field)).collect();
        assert_eq!(
            fields,
            [
                (1, "objectVersionHistory"),
                (1, "objectVersion"),
                (2, "objectFormat"),
                (3, "optional"),
                (3, "jsonKeys"),
                (4, "objectNamePrefix"),
            ]
        );
        assert!(
            found[0].message.starts_with(
                "writes exactly 3 versions (h/0 to h/2); the Go provider wrote 4 when the secret had more (h/3 too)"
            ),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_plain_spc_has_none() {
        let found = differences(&spc(
            "array:\n  - |\n    objectName: a\n    objectType: secret\n    objectVersion: abc\n    filePermission: '0600'\n  - |\n    objectName: k\n    objectType: key\n    objectVersionHistory: 1\n",
        ));
        assert_eq!(found, []);
    }
}
