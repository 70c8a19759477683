//! `turbochat block|unblock|blocks|report|unsend`: trust and safety from the
//! command line, over the HTTP API.

use anyhow::{bail, Result};
use clap::Subcommand;
use turbochat_client::{Api, ConversationId, ReportTarget};

/// The safety subcommands.
#[derive(Debug, Subcommand)]
pub enum SafetyCommand {
    /// Block a user: they reach you through no channel in direct conversations.
    Block {
        /// Whom (an argument id other than `user`: that is who you are).
        user_id: String,
    },
    /// Lift a block.
    Unblock {
        /// Whom.
        user_id: String,
    },
    /// List the users you block, one per line.
    Blocks,
    /// Report a message (`--conversation` and `--seq`) or a user
    /// (`--reported-user`, with `--conversation` where you met them);
    /// prints the report's id.
    Report {
        /// The conversation.
        #[arg(long)]
        conversation: Option<ConversationId>,
        /// The message's seq.
        #[arg(long)]
        seq: Option<u64>,
        /// The user (`--user` is who you are).
        #[arg(long)]
        reported_user: Option<String>,
        /// spam, scam, harassment, inappropriate or other.
        #[arg(long)]
        reason: String,
        /// Free text for the operator.
        #[arg(long)]
        note: Option<String>,
    },
    /// Unsend one of your messages (within the server's unsend window).
    Unsend {
        /// The conversation.
        conversation_id: ConversationId,
        /// The message's seq.
        seq: u64,
    },
}

/// Runs one safety subcommand and prints its outcome.
pub async fn run(api: Api, command: &SafetyCommand) -> Result<()> {
    match command {
        SafetyCommand::Block { user_id } => {
            api.block(user_id).await?;
            println!("blocked {user_id}");
        }
        SafetyCommand::Unblock { user_id } => {
            let existed = api.unblock(user_id).await?;
            println!(
                "{}",
                if existed {
                    "unblocked"
                } else {
                    "was not blocked"
                }
            );
        }
        SafetyCommand::Blocks => {
            for user in api.blocks().await? {
                println!("{user}");
            }
        }
        SafetyCommand::Report {
            conversation,
            seq,
            reported_user,
            reason,
            note,
        } => {
            let target = match (conversation, seq, reported_user) {
                (Some(conversation_id), Some(seq), None) => ReportTarget::Message {
                    conversation_id: *conversation_id,
                    seq: *seq,
                },
                (conversation_id, None, Some(user_id)) => ReportTarget::User {
                    user_id: user_id.clone(),
                    conversation_id: *conversation_id,
                },
                _ => {
                    bail!("report a message (--conversation and --seq) or a user (--reported-user)")
                }
            };
            println!("{}", api.report(&target, reason, note.as_deref()).await?);
        }
        SafetyCommand::Unsend {
            conversation_id,
            seq,
        } => {
            let already = api.unsend(*conversation_id, *seq).await?;
            println!("{}", if already { "already unsent" } else { "unsent" });
        }
    }
    Ok(())
}
