//! GRUB's environment block, as `grub-editenv` and GRUB's `load_env` and
//! `save_env` read and write it: exactly 1024 bytes, a fixed first line,
//! then `name=value` lines, padded with `#`. GRUB cannot change a file's
//! size from the boot loader, so the length is part of the format.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::BootEnvError;

const HEADER: &str = "# GRUB Environment Block\n";
const BLOCK_BYTES: usize = 1024;

/// A GRUB environment block file, such as `/boot/grub/grubenv`.
#[derive(Debug, Clone)]
pub struct GrubEnv {
    path: PathBuf,
}

impl GrubEnv {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Reads the block. Fails when it is not a valid block, since GRUB would
    /// ignore it too.
    pub fn read(&self) -> Result<BTreeMap<String, String>, BootEnvError> {
        let bytes = std::fs::read(&self.path).map_err(|source| BootEnvError::Io { path: self.path.clone(), source })?;
        parse(&bytes).ok_or_else(|| BootEnvError::NoValidCopy { what: format!("GRUB environment block {}", self.path.display()) })
    }

    /// Checks that the block and its directory, where the temporary file of
    /// a write goes, are writable.
    pub fn check_writable(&self) -> Result<(), BootEnvError> {
        let not_writable = |source: std::io::Error| BootEnvError::NotWritable { path: self.path.clone(), source };
        std::fs::OpenOptions::new().write(true).open(&self.path).map_err(not_writable)?;
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).map_err(|e| not_writable(e.into()))?;
        Ok(())
    }

    /// Writes `vars` through a temporary file and a rename, then reads the
    /// block back. Refuses when the current block is not valid.
    pub fn write(&self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        self.read()?;
        let mut text = String::from(HEADER);
        for (name, value) in vars {
            if name.is_empty() || name.contains(['=', '\n']) || value.contains('\n') {
                return Err(BootEnvError::Value { name: name.clone() });
            }
            text.push_str(&format!("{name}={value}\n"));
        }
        if text.len() > BLOCK_BYTES {
            return Err(BootEnvError::Full { path: self.path.clone(), size: BLOCK_BYTES as u64 });
        }
        let mut bytes = text.into_bytes();
        bytes.resize(BLOCK_BYTES, b'#');
        crate::fsutil::write_atomic(&self.path, &bytes)
            .map_err(|e| BootEnvError::Io { path: self.path.clone(), source: e.source })?;
        if self.read()? != *vars {
            return Err(BootEnvError::ReadBack { path: self.path.clone() });
        }
        Ok(())
    }
}

fn parse(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    if bytes.len() != BLOCK_BYTES {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let body = text.strip_prefix(HEADER)?;
    let mut vars = BTreeMap::new();
    for line in body.split('\n') {
        // Comments and the `#` padding; grub-editenv adds a warning comment.
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=')?;
        vars.insert(name.to_owned(), value.to_owned());
    }
    Some(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips_at_its_fixed_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grubenv");
        let mut empty = HEADER.as_bytes().to_vec();
        empty.resize(BLOCK_BYTES, b'#');
        std::fs::write(&path, empty).expect("seed");
        let env = GrubEnv::new(path.clone());
        let vars = BTreeMap::from([("tender_slot".to_owned(), "b".to_owned())]);
        env.write(&vars).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), BLOCK_BYTES as u64);
        assert_eq!(env.read().expect("read"), vars);
    }

    #[test]
    fn invalid_block_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("grubenv");
        std::fs::write(&path, b"garbage").expect("seed");
        let error = GrubEnv::new(path.clone()).write(&BTreeMap::new()).expect_err("invalid").to_string();
        assert!(error.contains("no valid copy"), "{error}");
        assert_eq!(std::fs::read(&path).expect("read"), b"garbage");
    }
}
