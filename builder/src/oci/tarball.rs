//! Deterministic tar entries for layers and archives.
//!
//! Every header is ustar with the fields set from the entry alone: numeric
//! uid and gid, empty user and group names, device numbers 0, and the
//! entry's own mtime. Values that ustar cannot store go into a PAX extended
//! header (POSIX.1-2001 `pax` format) written just before the entry. These
//! are a path longer than the ustar name and prefix fields, a link target
//! over 100 bytes, and ids or sizes too large for their octal fields.
//! Extended attributes become `SCHILY.xattr.NAME` records, the form that GNU
//! tar and Go's archive/tar (and so umoci) read.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// Largest value of the 8-byte octal uid and gid fields.
const MAX_USTAR_ID: u64 = 0o7_777_777;
/// Largest value of the 12-byte octal size field.
const MAX_USTAR_SIZE: u64 = 0o77_777_777_777;
/// Lengths of the ustar name, prefix and link name fields.
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;
const LINK_NAME_LEN: usize = 100;

/// Kind of a tar entry, with what that kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarKind {
    Dir,
    /// A regular file of `size` bytes; its data is given to [`append_entry`].
    File { size: u64 },
    Symlink { target: String },
    /// A hard link to the earlier entry at `target`, a path in the archive.
    Hardlink { target: String },
}

/// One archive member, described without its data.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// Path in the archive, relative, `/`-separated, without a trailing `/`.
    pub path: String,
    pub kind: TarKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Modification time in seconds since the Unix epoch.
    pub mtime: u64,
    /// Extended attributes with their raw values.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Appends `entry` to `archive`, with `data` as the content of a file
/// entry. Other kinds read nothing from `data`.
pub fn append_entry<W: Write>(archive: &mut tar::Builder<W>, entry: &TarEntry, data: impl Read) -> io::Result<()> {
    // Directories carry a trailing slash, as GNU tar writes them.
    let name = match entry.kind {
        TarKind::Dir => format!("{}/", entry.path),
        _ => entry.path.clone(),
    };
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut header = tar::Header::new_ustar();
    if !set_ustar_path(&mut header, name.as_bytes()) {
        pax.push(("path".to_owned(), name.clone().into_bytes()));
        set_ustar_path(&mut header, truncate(name.as_bytes(), NAME_LEN));
    }

    let (entry_type, size) = match &entry.kind {
        TarKind::Dir => (tar::EntryType::Directory, 0),
        TarKind::File { size } => (tar::EntryType::Regular, *size),
        TarKind::Symlink { target } => (tar::EntryType::Symlink, set_link(&mut header, target, &mut pax)),
        TarKind::Hardlink { target } => (tar::EntryType::Link, set_link(&mut header, target, &mut pax)),
    };
    header.set_entry_type(entry_type);
    header.set_mode(entry.mode);
    header.set_mtime(entry.mtime);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_device_major(0)?;
    header.set_device_minor(0)?;
    set_number(&mut header, "uid", entry.uid, MAX_USTAR_ID, &mut pax, tar::Header::set_uid);
    set_number(&mut header, "gid", entry.gid, MAX_USTAR_ID, &mut pax, tar::Header::set_gid);
    set_number(&mut header, "size", size, MAX_USTAR_SIZE, &mut pax, tar::Header::set_size);
    for (xattr, value) in &entry.xattrs {
        pax.push((format!("SCHILY.xattr.{xattr}"), value.clone()));
    }

    if !pax.is_empty() {
        append_pax_header(archive, &name, entry.mtime, &pax)?;
    }
    header.set_cksum();
    if size == 0 {
        archive.append(&header, io::empty())
    } else {
        // Fail rather than pad when the data is shorter than the header declares.
        archive.append(&header, LengthChecked { inner: data.take(size), remaining: size })
    }
}

/// Sets the link name, or a PAX `linkpath` when it is too long, and
/// returns the entry's data size, which is 0 for links.
fn set_link(header: &mut tar::Header, target: &str, pax: &mut Vec<(String, Vec<u8>)>) -> u64 {
    let bytes = target.as_bytes();
    if bytes.len() > LINK_NAME_LEN {
        pax.push(("linkpath".to_owned(), bytes.to_vec()));
    }
    let field = &mut header.as_old_mut().linkname;
    let stored = truncate(bytes, LINK_NAME_LEN);
    field[..stored.len()].copy_from_slice(stored);
    0
}

/// Sets a numeric field, or a PAX record with its decimal value when it
/// exceeds the octal field. The field is then 0.
fn set_number(
    header: &mut tar::Header,
    key: &str,
    value: u64,
    max: u64,
    pax: &mut Vec<(String, Vec<u8>)>,
    set: fn(&mut tar::Header, u64),
) {
    if value > max {
        pax.push((key.to_owned(), value.to_string().into_bytes()));
        set(header, 0);
    } else {
        set(header, value);
    }
}

/// Writes `path` into the ustar name field, or split at a `/` into the
/// prefix and name fields. Returns `false` when it fits neither way.
fn set_ustar_path(header: &mut tar::Header, path: &[u8]) -> bool {
    let Some(ustar) = header.as_ustar_mut() else { return false };
    ustar.name = [0; NAME_LEN];
    ustar.prefix = [0; PREFIX_LEN];
    if path.len() <= NAME_LEN {
        ustar.name[..path.len()].copy_from_slice(path);
        return true;
    }
    // The split slash belongs to neither field; a directory's trailing slash
    // stays in the name.
    let search = &path[..path.len() - 1];
    for (index, byte) in search.iter().enumerate().rev() {
        if *byte != b'/' {
            continue;
        }
        let (prefix, name) = (&path[..index], &path[index + 1..]);
        if name.len() > NAME_LEN {
            return false;
        }
        if prefix.len() <= PREFIX_LEN && !prefix.is_empty() {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..name.len()].copy_from_slice(name);
            return true;
        }
    }
    false
}

/// Returns at most `len` leading bytes of `bytes`.
fn truncate(bytes: &[u8], len: usize) -> &[u8] {
    &bytes[..bytes.len().min(len)]
}

/// Appends a PAX extended header (type `x`) with `records`, which apply to
/// the entry that follows it.
fn append_pax_header<W: Write>(
    archive: &mut tar::Builder<W>,
    name: &str,
    mtime: u64,
    records: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut body = Vec::new();
    for (key, value) in records {
        body.extend_from_slice(&pax_record(key, value));
    }
    // The header's own name matters to no reader; GNU tar's form keeps it
    // recognisable in listings by tools that do not read PAX.
    let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    let pax_name = format!("PaxHeaders/{}", String::from_utf8_lossy(truncate(base.as_bytes(), 80)));
    let mut header = tar::Header::new_ustar();
    set_ustar_path(&mut header, truncate(pax_name.as_bytes(), NAME_LEN));
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(body.len() as u64);
    header.set_cksum();
    archive.append(&header, body.as_slice())
}

/// Encodes one PAX record, `LENGTH KEY=VALUE\n`, where LENGTH counts the
/// whole record including its own digits.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut length = rest + 1;
    while rest + length.to_string().len() != length {
        length = rest + length.to_string().len();
    }
    let mut record = format!("{length} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A reader that fails when its source ends before `remaining` bytes.
struct LengthChecked<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for LengthChecked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let read = self.inner.read(buf)?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file data ended {} bytes before its declared size", self.remaining),
            ));
        }
        self.remaining -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: TarKind) -> TarEntry {
        TarEntry { path: path.to_owned(), kind, mode: 0o755, uid: 1000, gid: 1000, mtime: 1_700_000_000, xattrs: BTreeMap::new() }
    }

    fn write(entries: &[(TarEntry, &[u8])]) -> Vec<u8> {
        let mut archive = tar::Builder::new(Vec::new());
        for (entry, data) in entries {
            append_entry(&mut archive, entry, *data).expect("append");
        }
        archive.into_inner().expect("finish")
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        // 4 + 95 + 3 bytes plus a 3-digit length crosses from 2 to 3 digits.
        let record = pax_record("path", &[b'x'; 95]);
        assert_eq!(record.len(), 105);
        assert!(record.starts_with(b"105 path="));
    }

    #[test]
    fn long_paths_links_and_xattrs_survive() {
        let deep = format!("opt/ecar/current/{}/{}", "d".repeat(120), "f".repeat(90));
        let huge_name = format!("opt/{}", "n".repeat(150));
        let long_target = "t".repeat(140);
        let mut file = entry(&deep, TarKind::File { size: 5 });
        file.xattrs.insert("security.capability".to_owned(), vec![1, 0, 0, 2, 0, 32]);
        let entries = [
            (file, b"hello".as_slice()),
            (entry(&huge_name, TarKind::File { size: 0 }), b"".as_slice()),
            (entry("opt/link", TarKind::Symlink { target: long_target.clone() }), b"".as_slice()),
            (entry("opt/hard", TarKind::Hardlink { target: deep.clone() }), b"".as_slice()),
        ];
        let bytes = write(&entries);

        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for member in archive.entries().expect("entries") {
            let mut member = member.expect("member");
            let path = member.path().expect("path").to_string_lossy().into_owned();
            let link = member.link_name().expect("link").map(|l| l.to_string_lossy().into_owned());
            let xattrs: Vec<(String, Vec<u8>)> = member
                .pax_extensions()
                .expect("pax")
                .into_iter()
                .flatten()
                .map(|ext| ext.expect("record"))
                .filter_map(|ext| Some((ext.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_owned(), ext.value_bytes().to_vec())))
                .collect();
            let mut data = Vec::new();
            member.read_to_end(&mut data).expect("data");
            seen.push((path, link, xattrs, data));
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].0, deep);
        assert_eq!(seen[0].2, vec![("security.capability".to_owned(), vec![1, 0, 0, 2, 0, 32])]);
        assert_eq!(seen[0].3, b"hello");
        assert_eq!(seen[1].0, huge_name);
        assert_eq!(seen[2].1.as_deref(), Some(long_target.as_str()));
        assert_eq!(seen[3].1.as_deref(), Some(deep.as_str()));
    }

    #[test]
    fn directory_names_end_with_slash() {
        let bytes = write(&[(entry("opt/ecar", TarKind::Dir), b"".as_slice())]);
        assert_eq!(&bytes[..9], b"opt/ecar/");
        assert_eq!(bytes[156], b'5');
    }

    #[test]
    fn short_file_data_is_an_error() {
        let mut archive = tar::Builder::new(Vec::new());
        let result = append_entry(&mut archive, &entry("opt/x", TarKind::File { size: 10 }), b"abc".as_slice());
        assert!(result.is_err());
    }

    #[test]
    fn large_ids_go_to_pax() {
        let mut big = entry("opt/x", TarKind::Dir);
        big.uid = 100_000_000;
        let bytes = write(&[(big, b"".as_slice())]);
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut member = archive.entries().expect("entries").next().expect("one").expect("member");
        let uid = member.pax_extensions().expect("pax").into_iter().flatten().map(|e| e.expect("record")).find(|e| e.key().ok() == Some("uid"));
        assert_eq!(uid.map(|e| e.value_bytes().to_vec()), Some(b"100000000".to_vec()));
    }
}
