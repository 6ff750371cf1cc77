//! File names on the repository and in the trusted metadata directory.
//!
//! Role names and target paths come from signed metadata, but they still
//! become URL paths and file names, so they are percent-encoded here before
//! a fetcher or the store gets them.

/// Characters that stay as they are in an encoded name: the URL unreserved set.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte outside the URL unreserved set, including `/`,
/// so the result is one path component. A leading `.` is encoded too, so the
/// result is never `.`, `..` or a hidden file.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for (index, &byte) in text.as_bytes().iter().enumerate() {
        if is_unreserved(byte) && !(index == 0 && byte == b'.') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Decodes `%XX` escapes; returns `None` for a malformed escape.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Some(decoded)
}

/// Returns the file name of a role's metadata in the trusted directory: the
/// encoded role name plus `.json`, so that a role name cannot leave the directory.
pub fn stored_metadata_name(role: &str) -> String {
    format!("{}.json", percent_encode(role))
}

/// Key of a targets role in the `meta` map of `snapshot.json`, as TUF
/// repositories write it: the role name as is, plus `.json`.
pub fn snapshot_meta_key(role: &str) -> String {
    format!("{role}.json")
}

/// Remote name of a role's metadata: `VERSION.ROLE.json` with consistent
/// snapshots, else `ROLE.json`.
pub fn remote_metadata_name(role: &str, version: Option<u64>) -> String {
    match version {
        Some(version) => format!("{version}.{}.json", percent_encode(role)),
        None => format!("{}.json", percent_encode(role)),
    }
}

/// Remote name of a target file: its path with each component encoded, and
/// with consistent snapshots `DIR/HASH.BASENAME`.
pub fn remote_target_name(target_path: &str, consistent_hash: Option<&str>) -> String {
    let mut components: Vec<String> = target_path.split('/').map(percent_encode_component).collect();
    if let (Some(hash), Some(last)) = (consistent_hash, components.last_mut()) {
        *last = format!("{hash}.{last}");
    }
    components.join("/")
}

/// Encodes one path component of a target path. Unlike [`percent_encode`] a
/// leading `.` stays, because the fetchers reject `.` and `..` components.
fn percent_encode_component(component: &str) -> String {
    let mut encoded = String::with_capacity(component.len());
    for &byte in component.as_bytes() {
        if is_unreserved(byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_role_is_one_component() {
        assert_eq!(percent_encode("releases/arm64"), "releases%2Farm64");
        assert_eq!(percent_encode(".."), "%2E.");
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(stored_metadata_name("../root"), "%2E.%2Froot.json");
    }

    #[test]
    fn percent_decode_reverses_encode() {
        for text in ["releases/arm64", "..", "a b%", "ümlaut"] {
            assert_eq!(percent_decode(&percent_encode(text)).as_deref(), Some(text.as_bytes()));
        }
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn consistent_target_name_prefixes_basename() {
        assert_eq!(remote_target_name("ecar/manifest.json", Some("ab12")), "ecar/ab12.manifest.json");
        assert_eq!(remote_target_name("manifest.json", Some("ab12")), "ab12.manifest.json");
        assert_eq!(remote_target_name("a dir/x.json", None), "a%20dir/x.json");
        assert_eq!(remote_metadata_name("targets", Some(3)), "3.targets.json");
        assert_eq!(remote_metadata_name("snapshot", None), "snapshot.json");
    }
}
