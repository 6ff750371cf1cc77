//! Signers of TUF metadata: an ed25519 key file, or an external program that
//! has the key (an HSM or a cloud KMS behind a small wrapper).
//!
//! A key spec is either a path to a key file (see `tender keys generate`) or
//! `cmd:PROGRAM ARG…`. The program receives the canonical JSON bytes to sign
//! on stdin and must print the ed25519 signature as hex on stdout and exit 0.
//! It is run without a shell and its arguments are split on white space.
//! Its key id is found by checking the signature against the public keys
//! that may sign the document, so the program never has to print it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tender_keys::{KeyId, PrivateKey, PublicKey, Signature};

/// Prefix of a key spec that names an external signing program.
pub const COMMAND_PREFIX: &str = "cmd:";

/// Time an external signer may take before it is killed.
pub const SIGNER_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest signature output read from an external signer; an ed25519
/// signature is 128 hex digits.
const MAX_SIGNER_OUTPUT: u64 = 4096;

/// Failures to load or run a signer.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error(transparent)]
    Key(#[from] tender_keys::Error),

    #[error("key spec {spec:?} names no program; write it as cmd:PROGRAM ARG…")]
    EmptyCommand { spec: String },

    #[error("cannot run the external signer {spec:?}: {source}; check that the program exists and is executable")]
    Spawn { spec: String, source: std::io::Error },

    #[error("the external signer {spec:?} timed out after {} s and was killed", SIGNER_TIMEOUT.as_secs())]
    Timeout { spec: String },

    #[error("the external signer {spec:?} failed with {status}: {stderr}")]
    Failed { spec: String, status: std::process::ExitStatus, stderr: String },

    #[error("the external signer {spec:?} printed {output:?}, not a hex ed25519 signature (128 hex digits)")]
    BadOutput { spec: String, output: String },

    #[error("the signature of {signer} over {what} verifies with none of the keys of {role} ({candidates}); add the signer's public key with `tender repo add-key`, or pass the right key")]
    UnknownKey { signer: String, what: String, role: String, candidates: String },

    #[error("key {keyid} of {signer} is not a {role} key of the root; the keys of {role} are {candidates}")]
    NotInRole { keyid: KeyId, signer: String, role: String, candidates: String },
}

/// Location of a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySpec {
    File(PathBuf),
    Command { spec: String, program: String, args: Vec<String> },
}

impl KeySpec {
    /// Parses a key spec as the command line gives it.
    pub fn parse(text: &str) -> Result<Self, SignerError> {
        let Some(command) = text.strip_prefix(COMMAND_PREFIX) else {
            return Ok(KeySpec::File(PathBuf::from(text)));
        };
        // TODO: arguments are split on white space, so an argument cannot
        // contain a space; wrap such a call in a script.
        let mut words = command.split_whitespace().map(str::to_owned);
        let program = words.next().ok_or_else(|| SignerError::EmptyCommand { spec: text.to_owned() })?;
        Ok(KeySpec::Command { spec: text.to_owned(), program, args: words.collect() })
    }

    /// Loads the key file, or prepares the external program.
    pub fn load(&self) -> Result<Signer, SignerError> {
        match self {
            KeySpec::File(path) => {
                let key = PrivateKey::load(path)?;
                let keyid = key.key_id()?;
                Ok(Signer::Local { key, keyid, path: path.clone() })
            }
            KeySpec::Command { spec, program, args } => {
                Ok(Signer::External { spec: spec.clone(), program: program.clone(), args: args.clone() })
            }
        }
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySpec::File(path) => write!(f, "{}", path.display()),
            KeySpec::Command { spec, .. } => f.write_str(spec),
        }
    }
}

/// clap value parser for key specs.
pub fn parse_key_spec(text: &str) -> Result<KeySpec, String> {
    KeySpec::parse(text).map_err(|e| e.to_string())
}

/// A loaded signer. Its `Debug` output never shows a secret.
#[derive(Debug)]
pub enum Signer {
    Local { key: PrivateKey, keyid: KeyId, path: PathBuf },
    External { spec: String, program: String, args: Vec<String> },
}

impl Signer {
    /// Names the signer in messages: the key file or the `cmd:` spec.
    pub fn describe(&self) -> String {
        match self {
            Signer::Local { path, .. } => path.display().to_string(),
            Signer::External { spec, .. } => spec.clone(),
        }
    }

    /// Returns the key id when it is known without signing.
    pub fn known_key_id(&self) -> Option<&KeyId> {
        match self {
            Signer::Local { keyid, .. } => Some(keyid),
            Signer::External { .. } => None,
        }
    }

    /// Returns the public key when it is known without signing.
    pub fn known_public_key(&self) -> Option<PublicKey> {
        match self {
            Signer::Local { key, .. } => Some(key.public()),
            Signer::External { .. } => None,
        }
    }

    /// Signs `message` and returns the hex signature.
    pub fn sign_bytes(&self, message: &[u8]) -> Result<String, SignerError> {
        match self {
            Signer::Local { key, .. } => Ok(key.sign(message)),
            Signer::External { spec, program, args } => run_external(spec, program, args, message),
        }
    }

    /// Signs the canonical bytes `message` of document `what` for `role`,
    /// whose keys are `role_keyids` out of `keys`. Checks that the signer's
    /// key belongs to the role and returns the signature with its key id.
    pub fn sign_for_role(
        &self,
        message: &[u8],
        what: &str,
        role: &str,
        keys: &BTreeMap<KeyId, PublicKey>,
        role_keyids: &[KeyId],
    ) -> Result<Signature, SignerError> {
        let candidates = || role_keyids.iter().map(|id| id.short().to_owned()).collect::<Vec<_>>().join(", ");
        if let Some(keyid) = self.known_key_id() {
            if !role_keyids.contains(keyid) {
                return Err(SignerError::NotInRole {
                    keyid: keyid.clone(),
                    signer: self.describe(),
                    role: role.to_owned(),
                    candidates: candidates(),
                });
            }
        }
        let sig = self.sign_bytes(message)?;
        let matching = role_keyids
            .iter()
            .find(|id| keys.get(*id).is_some_and(|key| key.verify(message, &sig)))
            .cloned();
        match matching {
            Some(keyid) => Ok(Signature { keyid, sig }),
            None => Err(SignerError::UnknownKey {
                signer: self.describe(),
                what: what.to_owned(),
                role: role.to_owned(),
                candidates: candidates(),
            }),
        }
    }
}

/// Loads every spec in order.
pub fn load_signers(specs: &[KeySpec]) -> Result<Vec<Signer>, SignerError> {
    specs.iter().map(KeySpec::load).collect()
}

/// Runs an external signer with a time limit and returns its hex signature.
fn run_external(spec: &str, program: &str, args: &[String], message: &[u8]) -> Result<String, SignerError> {
    let spawn_error = |source| SignerError::Spawn { spec: spec.to_owned(), source };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    tracing::debug!(signer = spec, bytes = message.len(), "running external signer");

    // Metadata is small, but a large message could fill the pipe while the
    // program writes, so stdin is fed from a thread.
    let mut stdin = child.stdin.take();
    let input = message.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            // A program that exits without reading its input fails below.
            let _ = stdin.write_all(&input);
        }
    });
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(stdout) = stdout {
            let _ = stdout.take(MAX_SIGNER_OUTPUT).read_to_end(&mut text);
        }
        text
    });
    let stderr = child.stderr.take();
    let error_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(MAX_SIGNER_OUTPUT).read_to_end(&mut text);
        }
        text
    });

    let deadline = Instant::now() + SIGNER_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(spawn_error)? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SignerError::Timeout { spec: spec.to_owned() });
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let _ = writer.join();
    let output = reader.join().unwrap_or_default();
    let errors = error_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(SignerError::Failed {
            spec: spec.to_owned(),
            status,
            stderr: String::from_utf8_lossy(&errors).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&output).trim().to_owned();
    let valid = text.len() == 128 && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(SignerError::BadOutput { spec: spec.to_owned(), output: text.chars().take(80).collect() });
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spec_parses_file_and_command() {
        assert_eq!(KeySpec::parse("keys/release.key").expect("file"), KeySpec::File("keys/release.key".into()));
        let spec = KeySpec::parse("cmd:/usr/bin/kms-sign --key fleet").expect("command");
        let KeySpec::Command { program, args, .. } = spec else { panic!("not a command spec") };
        assert_eq!(program, "/usr/bin/kms-sign");
        assert_eq!(args, ["--key", "fleet"]);
        assert!(matches!(KeySpec::parse("cmd:  "), Err(SignerError::EmptyCommand { .. })));
    }

    #[test]
    fn external_signer_output_must_be_hex_signature() {
        let signer = KeySpec::parse("cmd:echo not-a-signature").expect("spec").load().expect("load");
        let err = signer.sign_bytes(b"{}").expect_err("bad output");
        assert!(matches!(err, SignerError::BadOutput { .. }), "{err}");
    }

    #[test]
    fn failing_external_signer_reports_status() {
        let signer = KeySpec::parse("cmd:false").expect("spec").load().expect("load");
        let err = signer.sign_bytes(b"{}").expect_err("failure");
        assert!(matches!(err, SignerError::Failed { .. }), "{err}");
    }

    #[test]
    fn local_signer_outside_role_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        PrivateKey::generate().write_new(&path, false).expect("write");
        let signer = KeySpec::File(path).load().expect("load");
        let other = PrivateKey::generate();
        let keys = BTreeMap::from([(other.key_id().expect("id"), other.public())]);
        let role = [other.key_id().expect("id")];
        let err = signer.sign_for_role(b"x", "targets.json", "targets", &keys, &role).expect_err("not in role");
        assert!(matches!(err, SignerError::NotInRole { .. }), "{err}");
    }
}
