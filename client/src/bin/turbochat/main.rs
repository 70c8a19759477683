//! `turbochat`: the command-line client, built on the SDK.
//!
//! Exit codes: 0 success; 1 failure (refused, bad input, server error);
//! 3 timed out waiting for an ack (the message stays in the disk queue and
//! is sent by the next run with the same data directory).

mod safety;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;
use turbochat_client::dev_token::{unverified_subject, DEV_AUDIENCE, DEV_ISSUER, DEV_SECRET};
use turbochat_client::{
    connect, Api, Client, ClientConfig, ConversationId, ConversationView, DevToken, Event,
    MessageState, MessageView, StaticToken, TokenProvider,
};

/// Command-line client for turbochat: chat, send from scripts, tail events.
#[derive(Debug, Parser)]
#[command(name = "turbochat", version, after_help = EXIT_CODES)]
struct Cli {
    /// Router base URL.
    #[arg(
        long,
        env = "TURBOCHAT_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// A JWT to authenticate with.
    #[arg(long, env = "TURBOCHAT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Mint development tokens for this user (signed with --secret; what
    /// `configs/dev.toml` accepts). Takes precedence over --token.
    #[arg(long, global = true)]
    user: Option<String>,
    /// Directory of the offline queue [default: $XDG_DATA_HOME/turbochat/USER,
    /// else ~/.local/share/turbochat/USER].
    #[arg(long, env = "TURBOCHAT_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    signing: Signing,
    /// More logs on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 failed; 3 timed out waiting for an ack (the message stays queued on disk and is sent by the next run, e.g. `turbochat flush`).";

/// How development tokens are signed (defaults: `configs/dev.toml`).
#[derive(Debug, Clone, clap::Args)]
struct Signing {
    /// HS256 secret for minted tokens [default: the secret of configs/dev.toml].
    #[arg(long, global = true, default_value = DEV_SECRET, hide_default_value = true)]
    secret: String,
    /// `iss` of minted tokens.
    #[arg(long, global = true, default_value = DEV_ISSUER)]
    issuer: String,
    /// `aud` of minted tokens.
    #[arg(long, global = true, default_value = DEV_AUDIENCE)]
    audience: String,
    /// Lifetime of minted tokens (e.g. 1h, 30m).
    #[arg(long, global = true, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Display name in minted tokens (`name` claim): what others see.
    #[arg(long, global = true)]
    name: Option<String>,
}

impl Signing {
    fn token_for(&self, sub: &str) -> DevToken {
        DevToken {
            sub: sub.to_string(),
            secret: self.secret.clone(),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            ttl: self.ttl,
            name: self.name.clone(),
            picture: None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a development token (HS256; defaults match configs/dev.toml).
    MintToken {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
    },
    /// List your conversations, most recently active first.
    Conversations {
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print a conversation's messages, oldest first.
    History {
        /// The conversation.
        conversation_id: ConversationId,
        /// Only messages with a seq below this.
        #[arg(long)]
        before: Option<u64>,
        /// How many (at most 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Create (or find) the direct conversation with a user; prints its id.
    CreateDirect {
        /// The other user.
        peer: String,
        /// The listing it is about.
        #[arg(long)]
        listing: Option<String>,
    },
    /// Create a group with you and these users; prints its id.
    CreateGroup {
        /// The other participants.
        #[arg(required = true)]
        participants: Vec<String>,
        /// Its title.
        #[arg(long)]
        title: Option<String>,
    },
    /// Send one message and wait for its ack; prints its seq. Anything
    /// already queued in the data directory is sent first.
    Send {
        /// The conversation.
        conversation_id: ConversationId,
        /// The text.
        text: String,
        /// Give up waiting after this long (exit 3; the message stays queued).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Send whatever is in the offline queue, then exit.
    Flush {
        /// Give up after this long (exit 3).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Chat interactively: stdin lines are sent, messages are printed.
    /// `/quit` or end of input leaves (after pending sends are acked).
    Chat {
        /// The conversation.
        conversation_id: ConversationId,
        /// Show this many earlier messages first.
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
    /// Block, report, unsend.
    #[command(flatten)]
    Safety(safety::SafetyCommand),
    /// Print events as JSON lines until interrupted. With no conversation,
    /// every conversation of the user (and new ones as they appear).
    Tail {
        /// Conversations to follow.
        conversation_ids: Vec<ConversationId>,
        /// Replay messages after this seq first (for the given conversations).
        #[arg(long)]
        since: Option<u64>,
    },
}

/// Exit code for "timed out; still queued".
const EXIT_TIMEOUT: u8 = 3;

/// A failure with a specific exit code.
#[derive(Debug)]
struct Exit(u8, String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("turbochat: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("turbochat: {err:#}");
            match err.downcast_ref::<Exit>() {
                Some(Exit(code, _)) => ExitCode::from(*code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,turbochat_client=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The identity the command runs as, and where its tokens come from.
#[derive(Clone)]
struct Identity {
    user: String,
    auth: Auth,
}

#[derive(Clone)]
enum Auth {
    /// `--user`: a fresh dev token at every connect.
    Dev(DevToken),
    /// `--token`: that token.
    Static(StaticToken),
}

impl TokenProvider for Auth {
    fn token(&self) -> turbochat_client::token::TokenFuture<'_> {
        match self {
            Auth::Dev(minter) => minter.token(),
            Auth::Static(token) => token.token(),
        }
    }
}

impl Identity {
    fn from_cli(cli: &Cli) -> Result<Self> {
        if let Some(user) = &cli.user {
            return Ok(Identity {
                user: user.clone(),
                auth: Auth::Dev(cli.signing.token_for(user)),
            });
        }
        if let Some(token) = &cli.token {
            let user = unverified_subject(token)
                .ok_or_else(|| anyhow!("--token is not a JWT with a `sub`"))?;
            return Ok(Identity {
                user,
                auth: Auth::Static(StaticToken(token.clone())),
            });
        }
        bail!("say who you are: --user NAME (dev token) or --token JWT (or TURBOCHAT_TOKEN)")
    }
}

fn data_dir(cli: &Cli, user: &str) -> Result<PathBuf> {
    if let Some(dir) = &cli.data_dir {
        return Ok(dir.clone());
    }
    let base = match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home =
                std::env::var_os("HOME").ok_or_else(|| anyhow!("no HOME; pass --data-dir"))?;
            PathBuf::from(home).join(".local/share")
        }
    };
    // One queue per user: a user name is safe as a path component only
    // when it is plain.
    let safe: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(base.join("turbochat").join(safe))
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::MintToken { sub } = &cli.command {
        println!("{}", cli.signing.token_for(sub).mint()?);
        return Ok(());
    }
    let identity = Identity::from_cli(&cli)?;
    let api = || Api::new(&cli.url, identity.auth.clone(), Duration::from_secs(15));
    match &cli.command {
        Command::MintToken { .. } => unreachable!("handled above"),
        Command::Safety(command) => safety::run(api(), command).await?,
        Command::Conversations { limit, json } => {
            for conversation in api().conversations(*limit).await? {
                if *json {
                    println!("{}", serde_json::to_string(&conversation)?);
                } else {
                    println!("{}", describe_conversation(&conversation));
                }
            }
        }
        Command::History {
            conversation_id,
            before,
            limit,
            json,
        } => {
            let page = api()
                .history(*conversation_id, *before, Some(*limit))
                .await?;
            let names = if *json {
                Names::default()
            } else {
                Names::of(&api(), *conversation_id).await
            };
            for message in page.messages.iter().rev() {
                if *json {
                    println!("{}", serde_json::to_string(message)?);
                } else {
                    println!("{}", describe_message(message, &names));
                }
            }
        }
        Command::CreateDirect { peer, listing } => {
            let conversation = api().create_direct(peer, listing.as_deref()).await?;
            println!("{}", conversation.conversation_id);
        }
        Command::CreateGroup {
            participants,
            title,
        } => {
            let conversation = api()
                .create_group(participants.clone(), title.clone())
                .await?;
            println!("{}", conversation.conversation_id);
        }
        Command::Send {
            conversation_id,
            text,
            timeout,
        } => {
            let client = open(&cli, &identity).await?;
            let result = send(&client, *conversation_id, text, *timeout).await;
            client.close().await;
            result?;
        }
        Command::Flush { timeout } => {
            let client = open(&cli, &identity).await?;
            let result = flush(&client, *timeout).await;
            client.close().await;
            result?;
        }
        Command::Chat {
            conversation_id,
            last,
        } => {
            let client = open(&cli, &identity).await?;
            let result = chat(&client, &identity.user, *conversation_id, *last).await;
            client.close().await;
            result?;
        }
        Command::Tail {
            conversation_ids,
            since,
        } => {
            let client = open(&cli, &identity).await?;
            let result = tail(&client, conversation_ids, *since).await;
            client.close().await;
            result?;
        }
    }
    Ok(())
}

async fn open(cli: &Cli, identity: &Identity) -> Result<Client> {
    let dir = data_dir(cli, &identity.user)?;
    let config = ClientConfig::new(cli.url.clone(), dir);
    connect(config, identity.auth.clone())
        .await
        .context("cannot start the client")
}

/// Logs connection changes on stderr (stdout is for the command's output).
fn log_connection(event: &Event) {
    match event {
        Event::Connected { user_id, .. } => tracing::info!(%user_id, "connected"),
        Event::Disconnected {
            reason,
            retry_in_ms,
        } => tracing::warn!(%reason, retry_in_ms, "disconnected"),
        _ => {}
    }
}

async fn send(
    client: &Client,
    conversation_id: ConversationId,
    text: &str,
    timeout: Duration,
) -> Result<()> {
    let mut events = client.events();
    let id = client.send(conversation_id, text).await?;
    tracing::info!(client_msg_id = %id, "queued");
    let wait = async {
        while let Some(event) = events.next().await {
            log_connection(&event);
            match event {
                Event::MessageState {
                    client_msg_id,
                    state,
                    ..
                } if client_msg_id == id => match state {
                    MessageState::Sent { seq, .. } => {
                        println!("{seq}");
                        return Ok(());
                    }
                    MessageState::Failed { reason, code } => {
                        bail!("not sent: {code}: {reason}")
                    }
                    MessageState::Pending => {}
                },
                Event::Closed { reason } => bail!("client stopped: {reason}"),
                _ => {}
            }
        }
        bail!("client stopped")
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(result) => result,
        Err(_) => Err(Exit(
            EXIT_TIMEOUT,
            format!("no ack within {timeout:?}; message {id} stays queued and is sent by the next run (`turbochat flush`)"),
        )
        .into()),
    }
}

async fn flush(client: &Client, timeout: Duration) -> Result<()> {
    let mut events = client.events();
    let mut failed = 0usize;
    let wait = async {
        while client.stats().queued > 0 {
            let Some(event) = events.next().await else {
                bail!("client stopped");
            };
            log_connection(&event);
            match event {
                Event::MessageState {
                    client_msg_id,
                    state: MessageState::Sent { seq, .. },
                    ..
                } => println!("sent {client_msg_id} seq {seq}"),
                Event::MessageState {
                    client_msg_id,
                    state: MessageState::Failed { reason, code },
                    ..
                } => {
                    failed += 1;
                    eprintln!("failed {client_msg_id}: {code}: {reason}");
                }
                Event::Closed { reason } => bail!("client stopped: {reason}"),
                _ => {}
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(())) if failed == 0 => Ok(()),
        Ok(Ok(())) => bail!("{failed} message(s) were refused"),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(Exit(
            EXIT_TIMEOUT,
            format!(
                "{} message(s) still queued after {timeout:?}",
                client.stats().queued
            ),
        )
        .into()),
    }
}

async fn chat(client: &Client, me: &str, conversation_id: ConversationId, last: u32) -> Result<()> {
    let mut events = client.events();
    let page = client
        .history(conversation_id, None, Some(last.clamp(1, 200)))
        .await
        .context("cannot open the conversation")?;
    let names = Names::from_views(
        &client.conversations().await.unwrap_or_default(),
        conversation_id,
    );
    let mut since = 0;
    for message in page.messages.iter().rev() {
        println!("{}", describe_message(message, &names));
        since = since.max(message.seq);
    }
    client.subscribe_from(conversation_id, since).await?;
    eprintln!("(type a message and press enter; /quit to leave)");
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    let mut mine_pending = 0usize;
    loop {
        if !input_open && mine_pending == 0 {
            return Ok(());
        }
        tokio::select! {
            line = stdin.next_line(), if input_open => match line? {
                Some(line) if line.trim() == "/quit" => input_open = false,
                Some(line) if line.trim().is_empty() => {}
                Some(line) => {
                    client.send(conversation_id, line).await?;
                    mine_pending += 1;
                }
                None => input_open = false,
            },
            event = events.next() => {
                let Some(event) = event else { bail!("client stopped") };
                match event {
                    Event::Message(message) if message.conversation_id == conversation_id => {
                        println!("{}", describe_message(&message, &names));
                        if message.sender_id != me {
                            client.read(conversation_id, message.seq).await?;
                        }
                    }
                    Event::Typing { conversation_id: c, user_id, state } if c == conversation_id && user_id != me => {
                        eprintln!("({user_id} {})", match state {
                            turbochat_client::TypingState::Start => "is typing…",
                            turbochat_client::TypingState::Stop => "stopped typing",
                        });
                    }
                    Event::MessageState { state: MessageState::Sent { .. }, .. } => {
                        mine_pending = mine_pending.saturating_sub(1);
                    }
                    Event::MessageState { state: MessageState::Failed { reason, code }, .. } => {
                        mine_pending = mine_pending.saturating_sub(1);
                        eprintln!("(not sent: {code}: {reason})");
                    }
                    Event::Connected { .. } => eprintln!("(connected)"),
                    Event::Disconnected { reason, retry_in_ms } => {
                        eprintln!("(disconnected: {reason}; retrying in {:.1}s)", retry_in_ms as f64 / 1000.0);
                    }
                    Event::Closed { reason } => bail!("client stopped: {reason}"),
                    _ => {}
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn tail(
    client: &Client,
    conversation_ids: &[ConversationId],
    since: Option<u64>,
) -> Result<()> {
    let mut events = client.events();
    let follow_all = conversation_ids.is_empty();
    if follow_all {
        for conversation in client.conversations().await? {
            client.subscribe(conversation.conversation_id).await?;
        }
    }
    for id in conversation_ids {
        match since {
            Some(since) => client.subscribe_from(*id, since).await?,
            None => client.subscribe(*id).await?,
        }
    }
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                println!("{}", serde_json::to_string(&event)?);
                if let Event::Conversation(conversation) = &event {
                    if follow_all {
                        client.subscribe(conversation.conversation_id).await?;
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Display names of a conversation's members (their user ids otherwise).
#[derive(Debug, Default)]
struct Names(std::collections::HashMap<String, String>);

impl Names {
    /// The names in `conversation`'s view among `views`.
    fn from_views(views: &[ConversationView], conversation: ConversationId) -> Self {
        views
            .iter()
            .find(|c| c.conversation_id == conversation)
            .map(Self::of_view)
            .unwrap_or_default()
    }

    fn of_view(view: &ConversationView) -> Self {
        Names(
            view.members
                .iter()
                .filter_map(|m| Some((m.user_id.clone(), m.name.clone()?)))
                .collect(),
        )
    }

    /// The names in `conversation` (none if the list cannot be read).
    async fn of(api: &Api, conversation: ConversationId) -> Self {
        Self::from_views(
            &api.conversations(Some(500)).await.unwrap_or_default(),
            conversation,
        )
    }

    fn get<'a>(&'a self, user: &'a str) -> &'a str {
        self.0.get(user).map_or(user, String::as_str)
    }
}

fn describe_conversation(c: &ConversationView) -> String {
    let names = Names::of_view(c);
    let about = match (&c.listing, &c.title, &c.listing_id) {
        (Some(card), _, _) => {
            let price = card
                .price
                .as_ref()
                .map(|p| {
                    format!(
                        " {}.{:02} {}",
                        p.amount_minor / 100,
                        p.amount_minor % 100,
                        p.currency
                    )
                })
                .unwrap_or_default();
            format!(" \"{}\"{price}", card.title)
        }
        (None, Some(title), _) => format!(" \"{title}\""),
        (None, None, Some(listing)) => format!(" listing={listing}"),
        (None, None, None) => String::new(),
    };
    let last = c
        .last_message
        .as_ref()
        .map(|m| format!("  last: #{} {}: {}", m.seq, names.get(&m.sender_id), m.body))
        .unwrap_or_default();
    let people: Vec<&str> = c.participants.iter().map(|p| names.get(p)).collect();
    format!(
        "{}  {}{}  [{}]  unread={}{}{}",
        c.conversation_id,
        c.kind.as_str(),
        about,
        people.join(","),
        c.unread_count,
        if c.muted { "  muted" } else { "" },
        last
    )
}

fn describe_message(m: &MessageView, names: &Names) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(m.created_at.max(0) as u64);
    let media = m
        .media_key
        .as_ref()
        .map(|k| format!(" [media {k}]"))
        .unwrap_or_default();
    if m.kind == turbochat_client::MessageKind::Deleted {
        return format!(
            "#{} {} {}: (deleted)",
            m.seq,
            humantime::format_rfc3339_seconds(at),
            names.get(&m.sender_id)
        );
    }
    format!(
        "#{} {} {}: {}{}",
        m.seq,
        humantime::format_rfc3339_seconds(at),
        names.get(&m.sender_id),
        m.body,
        media
    )
}
