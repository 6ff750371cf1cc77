//! The U-Boot environment as `fw_printenv` and `fw_setenv` (Debian's
//! libubootenv-tool) and U-Boot itself read and write it.
//!
//! A copy is `size` bytes at `offset` of a device or file: a CRC-32 of the
//! data area (little-endian), for redundant environments one flags byte,
//! then the data area: `name=value` strings, each ended by a NUL, a second
//! NUL after the last, zero padding. With two copies the valid copy with the
//! higher flags counter is current, and a write goes to the other copy with
//! the counter plus one, so a power cut during a write leaves the previous
//! environment intact. The format is written by hand because no crate
//! implements it; the tests check every write with the real tools.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::BootEnvError;

/// One copy of the environment: where it is and how large.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootCopy {
    pub device: PathBuf,
    #[serde(default)]
    pub offset: u64,
    pub size: u64,
}

/// A single or redundant U-Boot environment.
#[derive(Debug, Clone)]
pub struct UbootEnv {
    copies: Vec<UbootCopy>,
}

/// A copy read from its device.
struct CopyState {
    vars: Option<BTreeMap<String, String>>,
    flags: u8,
}

impl UbootEnv {
    /// Takes one copy, or two for a redundant environment.
    pub fn new(copies: Vec<UbootCopy>) -> Result<Self, BootEnvError> {
        if copies.is_empty() || copies.len() > 2 {
            return Err(BootEnvError::Config(format!("a U-Boot environment has one or two copies, not {}", copies.len())));
        }
        if let Some(copy) = copies.iter().find(|c| c.size < 16 || c.size > 1 << 20) {
            return Err(BootEnvError::Config(format!("U-Boot environment size {} of {} is outside 16 bytes to 1 MiB", copy.size, copy.device.display())));
        }
        Ok(Self { copies })
    }

    fn redundant(&self) -> bool {
        self.copies.len() == 2
    }

    fn header_len(&self) -> usize {
        if self.redundant() { 5 } else { 4 }
    }

    fn read_copy(&self, copy: &UbootCopy) -> Result<CopyState, BootEnvError> {
        let io = |source| BootEnvError::Io { path: copy.device.clone(), source };
        let mut file = File::open(&copy.device).map_err(io)?;
        file.seek(SeekFrom::Start(copy.offset)).map_err(io)?;
        let mut bytes = vec![0u8; copy.size as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let header = self.header_len();
        let flags = if self.redundant() { bytes[4] } else { 0 };
        let data = &bytes[header..];
        if crc32fast::hash(data) != stored {
            return Ok(CopyState { vars: None, flags });
        }
        Ok(CopyState { vars: parse_data(data), flags })
    }

    /// Index of the current copy among the valid ones, and the states.
    fn current(&self) -> Result<(Option<usize>, Vec<CopyState>), BootEnvError> {
        let states = self.copies.iter().map(|copy| self.read_copy(copy)).collect::<Result<Vec<_>, _>>()?;
        let current = match (states.first(), states.get(1)) {
            (Some(a), Some(b)) => match (a.vars.is_some(), b.vars.is_some()) {
                (true, true) => Some(if newer(b.flags, a.flags) { 1 } else { 0 }),
                (true, false) => Some(0),
                (false, true) => Some(1),
                (false, false) => None,
            },
            (Some(a), None) => a.vars.is_some().then_some(0),
            _ => None,
        };
        Ok((current, states))
    }

    /// Reads the current environment. Fails when no copy is valid.
    pub fn read(&self) -> Result<BTreeMap<String, String>, BootEnvError> {
        let (current, mut states) = self.current()?;
        match current {
            Some(index) => Ok(states.swap_remove(index).vars.unwrap_or_default()),
            None => Err(self.no_valid_copy()),
        }
    }

    /// Checks that every copy's device opens for writing.
    pub fn check_writable(&self) -> Result<(), BootEnvError> {
        for copy in &self.copies {
            OpenOptions::new()
                .write(true)
                .open(&copy.device)
                .map_err(|source| BootEnvError::NotWritable { path: copy.device.clone(), source })?;
        }
        Ok(())
    }

    /// Writes `vars` as the new environment and reads it back. With two
    /// copies the write goes to the older or damaged copy, so the current one
    /// survives a power cut; a damaged copy is repaired by the next write.
    pub fn write(&self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let (current, states) = self.current()?;
        let Some(current) = current else {
            // Writing a made-up environment could leave a robot that no
            // longer boots, so the robot stops here.
            return Err(self.no_valid_copy());
        };
        let (target, flags) = if self.redundant() {
            (1 - current, states[current].flags.wrapping_add(1))
        } else {
            (0, 0)
        };
        let copy = &self.copies[target];
        let header = self.header_len();
        let mut data = vec![0u8; copy.size as usize - header];
        let mut at = 0;
        for (name, value) in vars {
            let entry = format!("{name}={value}");
            if name.is_empty() || name.contains('=') || entry.contains('\0') {
                return Err(BootEnvError::Value { name: name.clone() });
            }
            if at + entry.len() + 2 > data.len() {
                return Err(BootEnvError::Full { path: copy.device.clone(), size: copy.size });
            }
            data[at..at + entry.len()].copy_from_slice(entry.as_bytes());
            at += entry.len() + 1;
        }
        let mut bytes = crc32fast::hash(&data).to_le_bytes().to_vec();
        if self.redundant() {
            bytes.push(flags);
        }
        bytes.extend_from_slice(&data);

        let io = |source| BootEnvError::Io { path: copy.device.clone(), source };
        let mut file = OpenOptions::new().write(true).open(&copy.device).map_err(io)?;
        file.seek(SeekFrom::Start(copy.offset)).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);

        let written = self.read_copy(copy)?;
        if written.vars.as_ref() != Some(vars) || written.flags != flags {
            return Err(BootEnvError::ReadBack { path: copy.device.clone() });
        }
        Ok(())
    }

    fn no_valid_copy(&self) -> BootEnvError {
        let devices: Vec<String> = self.copies.iter().map(|c| format!("{}@{:#x}", c.device.display(), c.offset)).collect();
        BootEnvError::NoValidCopy { what: format!("U-Boot environment {}", devices.join(" and ")) }
    }
}

/// Returns true when flags counter `a` is newer than `b`, counting the wrap
/// from 255 to 0 as newer.
fn newer(a: u8, b: u8) -> bool {
    a.wrapping_sub(b) as i8 > 0
}

/// Parses the data area; `None` when it does not end its list or an entry
/// has no `=`.
fn parse_data(data: &[u8]) -> Option<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == 0)?;
        if end == 0 {
            return Some(vars);
        }
        let entry = std::str::from_utf8(&rest[..end]).ok()?;
        let (name, value) = entry.split_once('=')?;
        vars.insert(name.to_owned(), value.to_owned());
        rest = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(dir: &std::path::Path, name: &str) -> UbootCopy {
        let device = dir.join(name);
        std::fs::write(&device, vec![0u8; 0x4000 + 0x100]).expect("device");
        UbootCopy { device, offset: 0x100, size: 0x4000 }
    }

    /// Writes a first valid environment the way a board's image would ship it.
    fn seed(env: &UbootEnv) {
        for copy in &env.copies {
            let header = env.header_len();
            let mut data = vec![0u8; copy.size as usize - header];
            data[..11].copy_from_slice(b"bootlimit=3");
            let mut bytes = crc32fast::hash(&data).to_le_bytes().to_vec();
            if env.redundant() {
                bytes.push(0);
            }
            bytes.extend_from_slice(&data);
            let mut file = OpenOptions::new().write(true).open(&copy.device).expect("open");
            file.seek(SeekFrom::Start(copy.offset)).expect("seek");
            file.write_all(&bytes).expect("write");
        }
    }

    #[test]
    fn redundant_writes_alternate_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = UbootEnv::new(vec![copy(dir.path(), "a"), copy(dir.path(), "b")]).expect("env");
        seed(&env);
        let mut vars = env.read().expect("read");
        vars.insert("tender_slot".to_owned(), "b".to_owned());
        env.write(&vars).expect("first write");
        vars.insert("tender_slot".to_owned(), "a".to_owned());
        env.write(&vars).expect("second write");
        assert_eq!(env.read().expect("read")["tender_slot"], "a");
        let (current, states) = env.current().expect("states");
        assert!(states.iter().all(|s| s.vars.is_some()));
        assert_eq!(current, Some(0));
    }

    #[test]
    fn damaged_copy_is_skipped_and_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = UbootEnv::new(vec![copy(dir.path(), "a"), copy(dir.path(), "b")]).expect("env");
        seed(&env);
        let mut vars = env.read().expect("read");
        vars.insert("tender_slot".to_owned(), "b".to_owned());
        env.write(&vars).expect("write");
        // Damage the newer copy: the older one is current again.
        let (current, _) = env.current().expect("states");
        let damaged = &env.copies[current.expect("valid")];
        let mut bytes = std::fs::read(&damaged.device).expect("read");
        bytes[damaged.offset as usize + 10] ^= 0xff;
        std::fs::write(&damaged.device, bytes).expect("damage");
        assert!(!env.read().expect("older copy").contains_key("tender_slot"));
        env.write(&vars).expect("repairing write");
        assert!(env.current().expect("states").1.iter().all(|s| s.vars.is_some()));
    }

    #[test]
    fn no_valid_copy_refuses_to_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = UbootEnv::new(vec![copy(dir.path(), "a")]).expect("env");
        let error = env.write(&BTreeMap::new()).expect_err("no valid copy").to_string();
        assert!(error.contains("no valid copy"), "{error}");
        assert!(std::fs::read(dir.path().join("a")).expect("read").iter().all(|&b| b == 0), "the device was written");
    }

    #[test]
    fn flags_counter_wraps() {
        assert!(newer(0, 255));
        assert!(newer(2, 1));
        assert!(!newer(1, 2));
    }
}
