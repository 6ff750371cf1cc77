//! A boot environment behind two commands, for boot loaders without a
//! built-in backend: `get` prints `name=value` lines, `set` reads them on
//! standard input and stores them all.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use super::BootEnvError;

#[derive(Debug, Clone)]
pub struct CommandEnv {
    pub get: Vec<String>,
    pub set: Vec<String>,
}

impl CommandEnv {
    pub fn read(&self) -> Result<BTreeMap<String, String>, BootEnvError> {
        let (program, args) = self.get.split_first().ok_or_else(|| BootEnvError::Config("boot.get_command is empty".to_owned()))?;
        let output = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BootEnvError::Command(format!("cannot run {program}: {e}")))?;
        if !output.status.success() {
            return Err(BootEnvError::Command(format!("{program} exited with {}", output.status)));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }

    /// Sends every variable to the `set` command, then reads them back.
    pub fn write(&self, vars: &BTreeMap<String, String>) -> Result<(), BootEnvError> {
        let (program, args) = self.set.split_first().ok_or_else(|| BootEnvError::Config("boot.set_command is empty".to_owned()))?;
        let mut input = String::new();
        for (name, value) in vars {
            if name.is_empty() || name.contains(['=', '\n']) || value.contains('\n') {
                return Err(BootEnvError::Value { name: name.clone() });
            }
            input.push_str(&format!("{name}={value}\n"));
        }
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| BootEnvError::Command(format!("cannot run {program}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).map_err(|e| BootEnvError::Command(format!("cannot write to {program}: {e}")))?;
        }
        let status = child.wait().map_err(|e| BootEnvError::Command(format!("{program} failed: {e}")))?;
        if !status.success() {
            return Err(BootEnvError::Command(format!("{program} exited with {status}")));
        }
        if self.read()? != *vars {
            return Err(BootEnvError::Command(format!("{program} did not store the variables: reading them back gives other values")));
        }
        Ok(())
    }
}
