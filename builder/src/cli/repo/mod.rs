//! `tender repo`: change the keys and thresholds of a published repository
//! through a draft of its next root version, and collect the signatures that
//! publish it.

mod add_key;
mod allow_downgrade;
mod retarget;
mod rollout;
mod add_signature;
mod revoke_key;
mod rotate_root;
mod sign;
mod sign_root;
mod threshold;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tender_builder::rootedit::{changed_roles, RootEditor};
use tender_keys::{Role, Root, Verified};

/// Manage the root of a published repository: keys, thresholds, rotation and signatures.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: RepoCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RepoCommand {
    AddKey(add_key::Args),
    AllowDowngrade(allow_downgrade::Args),
    Rollout(rollout::Args),
    RevokeKey(revoke_key::Args),
    Threshold(threshold::Args),
    SignRoot(sign_root::Args),
    Sign(sign::Args),
    AddSignature(add_signature::Args),
    RotateRoot(rotate_root::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        RepoCommand::AddKey(args) => add_key::run(args),
        RepoCommand::AllowDowngrade(args) => allow_downgrade::run(args),
        RepoCommand::Rollout(args) => rollout::run(args),
        RepoCommand::RevokeKey(args) => revoke_key::run(args),
        RepoCommand::Threshold(args) => threshold::run(args),
        RepoCommand::SignRoot(args) => sign_root::run(args),
        RepoCommand::Sign(args) => sign::run(args),
        RepoCommand::AddSignature(args) => add_signature::run(args),
        RepoCommand::RotateRoot(args) => rotate_root::run(args),
    }
}

/// The repository and the lifetime of a new draft, shared by the commands
/// that edit the draft root.
#[derive(Debug, clap::Args)]
struct DraftArgs {
    /// Repository directory (OUT/repo of `tender release`). The draft of
    /// the next root is kept next to it, in OUT/root-draft.json.
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,

    /// How long a newly started draft root stays valid from now, such as 365d.
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    expires: Duration,
}

impl DraftArgs {
    fn open(&self) -> anyhow::Result<RootEditor> {
        let expires = SystemTime::now()
            .checked_add(self.expires)
            .with_context(|| format!("--expires {:?} is too far in the future", self.expires))?;
        RootEditor::open(&self.repo, expires).with_context(|| format!("cannot open the root of {}", self.repo.display()))
    }
}

/// Parses a top-level role name for clap.
fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "root" => Ok(Role::Root),
        "targets" => Ok(Role::Targets),
        "snapshot" => Ok(Role::Snapshot),
        "timestamp" => Ok(Role::Timestamp),
        other => Err(format!("unknown role {other:?}; use root, targets, snapshot or timestamp")),
    }
}

/// Prints the draft's signature status, or the published root.
fn report(editor: &RootEditor, published: Option<&Verified<Root>>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(root) = published {
        writeln!(out, "published root version {} in {}", root.version, editor.repo.dir().display())?;
        let changed = changed_roles(editor.previous(), root);
        let online: Vec<&str> =
            changed.iter().filter(|role| **role != Role::Root).map(|role| role.as_str()).collect();
        if !online.is_empty() {
            writeln!(
                out,
                "the keys of {} changed: TUF clients reject the current metadata of those roles until \
                 `tender release` (or `tender timestamp` for the timestamp role) signs new versions",
                online.join(", ")
            )?;
        }
        return Ok(());
    }
    let status = editor.status()?;
    let short = |ids: &[tender_keys::KeyId]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.iter().map(|id| id.short().to_owned()).collect::<Vec<_>>().join(", ")
        }
    };
    writeln!(out, "draft root version {} saved in {}", status.version, editor.draft_path.display())?;
    writeln!(
        out,
        "  signed by {} of {} required key(s) of published root version {}",
        short(&status.previous_signed),
        status.previous_threshold,
        editor.previous().version
    )?;
    writeln!(out, "  signed by {} of {} required key(s) of the draft itself", short(&status.own_signed), status.own_threshold)?;
    writeln!(
        out,
        "  sign it with `tender repo sign-root --repo {} --key FILE`, or collect signatures with \
         `tender repo sign` and `tender repo add-signature`",
        editor.repo.dir().display()
    )?;
    Ok(())
}

/// Applies an edit, saves the draft and reports it.
fn edit_and_report(
    args: &DraftArgs,
    describe: &str,
    change: impl FnOnce(&mut Root) -> Result<(), tender_builder::rootedit::RootEditError>,
) -> anyhow::Result<()> {
    let mut editor = args.open()?;
    let removed = editor.edit(change).with_context(|| format!("cannot {describe}"))?;
    editor.save()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{describe}")?;
    if removed > 0 {
        writeln!(out, "removed {removed} signature(s) of the draft, which no longer cover it")?;
    }
    drop(out);
    report(&editor, None)
}
