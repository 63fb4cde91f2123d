//! `sotto`: the command-line client. A profile directory holds the encrypted store (SQLite,
//! sealed under the profile passphrase); every command opens it, talks to the relay, and closes.
#![forbid(unsafe_code)]

mod demo;

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sotto_client::{
    ClientEvent, ClientOptions, ConnectionState, ConversationId, Event, IdentityPolicy, LoginError,
    QueryError, RegisterError, SendTextError, SottoClient, StoreLocation, StoreSecret,
};

/// Sotto: end-to-end encrypted messaging from the terminal.
#[derive(Debug, Parser)]
#[command(name = "sotto", version, about, long_about = None)]
struct Cli {
    /// Profile directory (the encrypted store lives here).
    #[arg(long, env = "SOTTO_PROFILE", global = true, default_value_os_t = default_profile())]
    profile: PathBuf,
    /// Passphrase of the profile's store (asked for when not given).
    #[arg(long, env = "SOTTO_PASSPHRASE", global = true, hide_env_values = true)]
    passphrase: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an account and log in this device (creates the profile).
    Register {
        /// Relay URL, e.g. http://127.0.0.1:7700.
        #[arg(long, env = "SOTTO_SERVER")]
        server: String,
        /// 3-20 characters of A-Z, a-z, 0-9 and _.
        #[arg(long)]
        username: String,
        /// E-mail address.
        #[arg(long)]
        email: String,
        /// Account password (asked for when not given).
        #[arg(long, env = "SOTTO_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Log in the account's first device into this profile.
    Login {
        /// Relay URL.
        #[arg(long, env = "SOTTO_SERVER")]
        server: String,
        /// Username.
        #[arg(long)]
        username: String,
        /// Account password (asked for when not given).
        #[arg(long, env = "SOTTO_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Link this profile as a new device of an existing account: prints a code to enter on the
    /// existing device (`sotto link-device CODE`), then waits.
    Link {
        /// Relay URL.
        #[arg(long, env = "SOTTO_SERVER")]
        server: String,
    },
    /// On an existing device: link the new device showing CODE.
    LinkDevice {
        /// The code `sotto link` printed.
        code: String,
    },
    /// Show this profile's account and device.
    Whoami,
    /// List this account's devices, or remove one.
    Devices {
        /// Remove this device id.
        #[arg(long)]
        remove: Option<u32>,
    },
    /// Send a text message to a user (by username or user id).
    Send {
        /// The recipient's username or user id.
        #[arg(value_name = "USER")]
        user_id: String,
        /// The text (1-1000 characters).
        text: String,
    },
    /// Chat with a user: type lines to send; messages, typing and receipts show live.
    Chat {
        /// The other user's username or user id.
        #[arg(value_name = "USER")]
        user_id: String,
    },
    /// Show a conversation's history, newest first.
    History {
        /// The other user's username or user id.
        #[arg(value_name = "USER")]
        user_id: String,
        /// Messages per page (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Cursor from a previous page.
        #[arg(long)]
        before: Option<u64>,
    },
    /// List conversations with unread counts.
    Conversations,
    /// Show the safety number with a contact (compare it out of band).
    SafetyNumber {
        /// The contact's username or user id.
        #[arg(value_name = "USER")]
        user_id: String,
        /// Mark the contact verified (after comparing).
        #[arg(long)]
        verified: bool,
    },
    /// Accept a contact's changed identity key.
    Approve {
        /// The contact's username or user id.
        #[arg(value_name = "USER")]
        user_id: String,
    },
    /// Groups: list, create, send, history, add, remove, rename, leave, invitations.
    Groups {
        #[command(subcommand)]
        command: Option<GroupCommand>,
    },
    /// Run a scripted demo against a relay: two users (one with two devices) talk; prints
    /// what the relay stored beside what the users read. Exits 0 only if every step worked.
    Demo {
        /// Relay URL.
        #[arg(long, env = "SOTTO_SERVER")]
        server: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List the groups this device knows (the default).
    List,
    /// Create a group with these members (user ids); you are its admin.
    Create {
        /// The group's name (1-100 characters; travels only end to end).
        #[arg(long)]
        name: String,
        /// Members: usernames or user ids.
        #[arg(value_name = "USER")]
        members: Vec<String>,
    },
    /// Send a text to a group.
    Send {
        /// The group id.
        group_id: String,
        /// The text (1-1000 characters).
        text: String,
    },
    /// Show a group's history, newest first.
    History {
        /// The group id.
        group_id: String,
        /// Messages per page (1-100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Cursor from a previous page.
        #[arg(long)]
        before: Option<u64>,
    },
    /// Add members (admins).
    Add {
        /// The group id.
        group_id: String,
        /// Users to add: usernames or user ids.
        #[arg(value_name = "USER")]
        members: Vec<String>,
    },
    /// Remove a member (admins); what follows is closed to them.
    Remove {
        /// The group id.
        group_id: String,
        /// The member's username or user id.
        #[arg(value_name = "USER")]
        user_id: String,
    },
    /// Rename a group (admins).
    Rename {
        /// The group id.
        group_id: String,
        /// The new name.
        name: String,
    },
    /// Set a group's description (admins; 0-500 characters, "" clears it).
    Describe {
        /// The group id.
        group_id: String,
        /// The description (travels only end to end).
        description: String,
    },
    /// Set a group's avatar from an image file (admins; at most 5 MB), clear it, or save it.
    Avatar {
        /// The group id.
        group_id: String,
        /// The image to set.
        #[arg(conflicts_with_all = ["clear", "save"])]
        image: Option<PathBuf>,
        /// The image's content type.
        #[arg(long = "type", default_value = "image/png")]
        content_type: String,
        /// Remove the avatar.
        #[arg(long)]
        clear: bool,
        /// Download, verify and decrypt the avatar into this file.
        #[arg(long, value_name = "FILE")]
        save: Option<PathBuf>,
    },
    /// Leave a group.
    Leave {
        /// The group id.
        group_id: String,
    },
    /// List pending invitations, or accept one.
    Invitations {
        /// Accept the invitation to this group.
        #[arg(long)]
        accept: Option<String>,
    },
}

fn default_profile() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".sotto")
}

/// A failed command, as the user should read it.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for CliError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for CliError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<LoginError> for CliError {
    fn from(e: LoginError) -> Self {
        Self(match e {
            LoginError::Unreachable => {
                "the relay cannot be reached (is it running? check --server)".into()
            }
            LoginError::NoAccount => {
                "this profile has no account yet: run `sotto register` or `sotto login`".into()
            }
            e => e.to_string(),
        })
    }
}

impl From<RegisterError> for CliError {
    fn from(e: RegisterError) -> Self {
        Self(match e {
            RegisterError::Unreachable => {
                "the relay cannot be reached (is it running? check --server)".into()
            }
            e => e.to_string(),
        })
    }
}

impl From<sotto_client::GroupOpError> for CliError {
    fn from(e: sotto_client::GroupOpError) -> Self {
        Self(e.to_string())
    }
}

impl From<QueryError> for CliError {
    fn from(e: QueryError) -> Self {
        Self(e.to_string())
    }
}

impl From<SendTextError> for CliError {
    fn from(e: SendTextError) -> Self {
        Self(match e {
            SendTextError::Failed(sotto_client::SendFailure::UnknownUser) => {
                "unknown user (no such user id on this relay)".into()
            }
            SendTextError::Failed(sotto_client::SendFailure::NoVerifiedDevices) => {
                "that user has no device this client could verify".into()
            }
            e => e.to_string(),
        })
    }
}

fn prompt(what: &str) -> Result<String, CliError> {
    eprint!("{what}: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError(format!("cannot read {what}: {e}")))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(CliError(format!("no {what} given")));
    }
    Ok(line)
}

fn options(cli: &Cli, server: &str) -> Result<ClientOptions, CliError> {
    let passphrase = match &cli.passphrase {
        Some(p) => p.clone(),
        None => prompt("profile passphrase")?,
    };
    Ok(ClientOptions {
        server_url: server.to_owned(),
        store: StoreLocation::Sqlite(cli.profile.join("store.sqlite")),
        store_secret: StoreSecret::Passphrase(passphrase),
        identity_policy: IdentityPolicy::RequireApproval,
    })
}

fn new_profile(cli: &Cli) -> Result<(), CliError> {
    if cli.profile.join("store.sqlite").exists() {
        return Err(CliError(format!(
            "profile {} already holds an account (use another --profile)",
            cli.profile.display()
        )));
    }
    std::fs::create_dir_all(&cli.profile)
        .map_err(|e| CliError(format!("cannot create {}: {e}", cli.profile.display())))
}

async fn open(cli: &Cli) -> Result<SottoClient, CliError> {
    if !cli.profile.join("store.sqlite").exists() {
        return Err(CliError(format!(
            "no profile at {}: run `sotto register` or `sotto login` first",
            cli.profile.display()
        )));
    }
    let client = SottoClient::open(options(cli, "http://unused.invalid")?).await?;
    Ok(client)
}

/// Waits until the relay's backlog for this device has been delivered (or a few seconds).
async fn catch_up(client: &SottoClient, secs: u64) -> Vec<ClientEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, client.next_event()).await {
        let done = matches!(e, ClientEvent::Connection(ConnectionState::CaughtUp));
        seen.push(e);
        if done {
            break;
        }
    }
    client.idle().await;
    seen
}

fn print_event(e: &ClientEvent) {
    match e {
        ClientEvent::Event(Event::Message(m)) => {
            let who = if m.outgoing { "you" } else { &m.sender_user_id };
            println!(
                "[{}] {who}: {}",
                m.conversation,
                m.text.as_deref().unwrap_or("(attachment)")
            );
        }
        ClientEvent::Event(Event::Delivered {
            message_id,
            device_id,
            ..
        }) => {
            println!("  ✓ delivered {} to device {device_id}", short(message_id));
        }
        ClientEvent::Event(Event::Read {
            message_ids,
            user_id,
            ..
        }) => {
            println!("  ✓✓ {user_id} read {} message(s)", message_ids.len());
        }
        ClientEvent::Event(Event::Typing {
            user_id,
            typing: true,
            ..
        }) => println!("  … {user_id} is typing"),
        ClientEvent::Event(Event::IdentityChanged {
            user_id,
            needs_approval,
            ..
        }) => {
            println!(
                "  ! the identity key of {user_id} changed{}",
                if *needs_approval {
                    " — compare safety numbers, then `sotto approve`"
                } else {
                    ""
                }
            );
        }
        ClientEvent::Event(Event::SendFailed {
            message_id, reason, ..
        }) => {
            println!("  ✗ {} not sent: {reason:?}", short(message_id));
        }
        ClientEvent::StoreFailed(e) => println!("  ✗ store failed: {e}"),
        _ => {}
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Register {
            server,
            username,
            email,
            password,
        } => {
            new_profile(&cli)?;
            let password = match password {
                Some(p) => p.clone(),
                None => prompt("password")?,
            };
            // Everything asked for first: a missing passphrase must not leave an account behind
            // with no profile to log in from.
            let options = options(&cli, server)?;
            let user_id = SottoClient::register(server, username, email, &password).await?;
            let client = SottoClient::login(options, username, &password).await?;
            println!(
                "registered {username}: user id {user_id}, device {}",
                client.device_id()
            );
            client.close().await;
        }
        Command::Login {
            server,
            username,
            password,
        } => {
            new_profile(&cli)?;
            let password = match password {
                Some(p) => p.clone(),
                None => prompt("password")?,
            };
            let client = SottoClient::login(options(&cli, server)?, username, &password).await?;
            println!(
                "logged in: user id {}, device {}",
                client.user_id(),
                client.device_id()
            );
            client.close().await;
        }
        Command::Link { server } => {
            new_profile(&cli)?;
            let opts = options(&cli, server)?;
            let pending = SottoClient::begin_link(server).await?;
            println!(
                "On your existing device run:\n\n  sotto link-device {}\n",
                pending.code()
            );
            println!("waiting up to 10 minutes…");
            let client = SottoClient::finish_link(pending, opts, 600).await?;
            println!(
                "linked: user id {}, device {}",
                client.user_id(),
                client.device_id()
            );
            client.close().await;
        }
        Command::LinkDevice { code } => {
            let client = open(&cli).await?;
            client.link_device(code).await?;
            println!("sent the account identity to the new device (end-to-end encrypted)");
            client.close().await;
        }
        Command::Whoami => {
            let client = open(&cli).await?;
            println!(
                "user id {}, device {}",
                client.user_id(),
                client.device_id()
            );
            client.close().await;
        }
        Command::Devices { remove } => {
            let client = open(&cli).await?;
            if let Some(id) = remove {
                client.remove_device(*id).await?;
                println!("removed device {id}");
            } else {
                for d in client.devices().await? {
                    println!(
                        "device {}{}",
                        d.device_id,
                        if d.this_device { " (this device)" } else { "" }
                    );
                }
            }
            client.close().await;
        }
        Command::Send { user_id, text } => {
            let client = open(&cli).await?;
            let user_id = &resolve(&client, user_id).await?;
            let sent =
                tokio::time::timeout(Duration::from_secs(30), client.send_text(user_id, text))
                    .await
                    .map_err(|_| {
                        CliError::from(
                            "the relay did not accept the message in 30 s (is it reachable?)",
                        )
                    })??;
            println!("sent {} (accepted by the relay)", short(&sent.id));
            client.close().await;
        }
        Command::Chat { user_id } => chat(&cli, user_id).await?,
        Command::History {
            user_id,
            limit,
            before,
        } => {
            let client = open(&cli).await?;
            let user_id = resolve(&client, user_id).await?;
            catch_up(&client, 5).await;
            let page = client
                .history(&ConversationId::Direct(user_id), *before, *limit)
                .await?;
            print_history(&page, true);
            client.close().await;
        }
        Command::Conversations => {
            let client = open(&cli).await?;
            catch_up(&client, 5).await;
            for c in client.conversations() {
                println!(
                    "{}  unread {}  last: {}",
                    c.id,
                    c.unread_count,
                    c.last_message.map(|m| m.text).unwrap_or_default()
                );
            }
            client.close().await;
        }
        Command::SafetyNumber { user_id, verified } => {
            let client = open(&cli).await?;
            let user_id = &resolve(&client, user_id).await?;
            if *verified {
                client
                    .set_verified(user_id, true)
                    .await
                    .map_err(|e| CliError(e.to_string()))?;
            }
            let n = client.safety_number(user_id).map_err(|_| {
                CliError::from("no identity known for that user yet (exchange a message first)")
            })?;
            println!("{}", n.display);
            println!("QR payload: {}", hex::encode(&n.qr_payload));
            println!("verified: {}", n.verified);
            client.close().await;
        }
        Command::Approve { user_id } => {
            let client = open(&cli).await?;
            let user_id = &resolve(&client, user_id).await?;
            client
                .approve_identity(user_id)
                .await
                .map_err(|e| CliError(e.to_string()))?;
            println!("accepted the new identity of {user_id}");
            client.close().await;
        }
        Command::Groups { command } => groups(&cli, command.as_ref()).await?,
        Command::Demo { server } => demo::run(server).await?,
    }
    Ok(())
}

/// One page of history, newest first (with each message's status when `status`).
fn print_history(page: &sotto_client::HistoryPage, status: bool) {
    for m in &page.messages {
        let who = if m.outgoing {
            "you"
        } else {
            m.sender_user_id.as_str()
        };
        let text = m.text.as_deref().unwrap_or("(attachment)");
        if status {
            println!("{} {who}: {text} [{:?}]", m.sent_at, m.status);
        } else {
            println!("{} {who}: {text}", m.sent_at);
        }
    }
    if let Some(c) = page.next_cursor {
        println!("(older: --before {c})");
    }
}

async fn groups(cli: &Cli, command: Option<&GroupCommand>) -> Result<(), CliError> {
    let client = open(cli).await?;
    catch_up(&client, 5).await;
    match command.unwrap_or(&GroupCommand::List) {
        GroupCommand::List => {
            for g in client.groups() {
                let members: Vec<String> = g
                    .members
                    .iter()
                    .map(|m| format!("{}{}", m.user_id, if m.admin { " (admin)" } else { "" }))
                    .collect();
                println!(
                    "{}  {:?}{}  members: {}",
                    g.group_id,
                    g.name,
                    if g.active { "" } else { " (left)" },
                    members.join(", ")
                );
                if !g.description.is_empty() {
                    println!("    {}", g.description);
                }
                if let Some(a) = &g.avatar {
                    println!("    avatar: {} bytes ({})", a.size, a.content_type);
                }
            }
        }
        GroupCommand::Create { name, members } => {
            let members = &resolve_all(&client, members).await?;
            let id = client.create_group(members, name).await?;
            println!("created group {id}");
        }
        GroupCommand::Send { group_id, text } => {
            let sent = tokio::time::timeout(
                Duration::from_secs(30),
                client.send_group_text(group_id, text),
            )
            .await
            .map_err(|_| {
                CliError::from("the relay did not accept the message in 30 s (is it reachable?)")
            })??;
            println!("sent {} (accepted by the relay)", short(&sent.id));
        }
        GroupCommand::History {
            group_id,
            limit,
            before,
        } => {
            let page = client
                .history(&ConversationId::Group(group_id.clone()), *before, *limit)
                .await?;
            print_history(&page, false);
        }
        GroupCommand::Add { group_id, members } => {
            let members = &resolve_all(&client, members).await?;
            client.add_group_members(group_id, members).await?;
            println!("added {}", members.join(", "));
        }
        GroupCommand::Remove { group_id, user_id } => {
            let user_id = &resolve(&client, user_id).await?;
            client.remove_group_member(group_id, user_id).await?;
            println!("removed {user_id}");
        }
        GroupCommand::Rename { group_id, name } => {
            client.rename_group(group_id, name).await?;
            println!("renamed");
        }
        GroupCommand::Describe {
            group_id,
            description,
        } => {
            client.set_group_description(group_id, description).await?;
            println!("description set");
        }
        GroupCommand::Avatar {
            group_id,
            image,
            content_type,
            clear,
            save,
        } => {
            if let Some(dest) = save {
                match client.download_group_avatar(group_id, dest).await {
                    Ok(Some(n)) => println!("saved the avatar ({n} bytes) to {}", dest.display()),
                    Ok(None) => println!("the group has no avatar"),
                    Err(e) => return Err(CliError(e.to_string())),
                }
            } else if *clear {
                client.set_group_avatar(group_id, None).await?;
                println!("avatar cleared");
            } else if let Some(path) = image {
                client
                    .set_group_avatar(group_id, Some((path.as_path(), content_type.as_str())))
                    .await?;
                println!("avatar set");
            } else {
                return Err(CliError::from("give an image file, --clear or --save FILE"));
            }
        }
        GroupCommand::Leave { group_id } => {
            client.leave_group(group_id).await?;
            println!("left {group_id}");
        }
        GroupCommand::Invitations { accept } => {
            if let Some(g) = accept {
                client.accept_group_invitation(g).await?;
                println!("joined {g}");
            } else {
                for (g, from) in client.group_invitations().await? {
                    println!("{g}  from {from}");
                }
            }
        }
    }
    client.idle().await;
    client.close().await;
    Ok(())
}

/// Whether `s` has the shape of a user id (a UUID) rather than of a username.
fn is_user_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A user id as given, or the account a username names (looked up on the relay).
async fn resolve(client: &SottoClient, who: &str) -> Result<String, CliError> {
    if is_user_id(who) {
        return Ok(who.to_ascii_lowercase());
    }
    match client.lookup_user(who).await {
        Ok(user) => Ok(user.user_id),
        Err(QueryError::Unknown) => Err(CliError(format!("no user is called {who:?}"))),
        Err(e) => Err(CliError(format!("could not look up {who:?}: {e}"))),
    }
}

async fn resolve_all(client: &SottoClient, who: &[String]) -> Result<Vec<String>, CliError> {
    let mut ids = Vec::with_capacity(who.len());
    for w in who {
        ids.push(resolve(client, w).await?);
    }
    Ok(ids)
}

async fn chat(cli: &Cli, user_id: &str) -> Result<(), CliError> {
    let client = open(cli).await?;
    let user_id = &resolve(&client, user_id).await?;
    println!("chatting with {user_id}; type a line to send, Ctrl-D to quit");
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if lines_tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    let conv = ConversationId::Direct(user_id.to_owned());
    loop {
        tokio::select! {
            line = lines_rx.recv() => {
                let Some(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let _ = client.set_typing(user_id, false).await;
                match client.queue_text(user_id, &line).await {
                    Ok(_) => {}
                    Err(e) => println!("  ✗ {}", CliError::from(e)),
                }
            }
            event = client.next_event() => {
                let Some(event) = event else { break };
                if let ClientEvent::Event(Event::Message(m)) = &event {
                    if m.conversation == conv && !m.outgoing {
                        client.mark_read(&conv).await;
                    }
                }
                print_event(&event);
            }
        }
    }
    client.close().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sotto: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sotto: {e}");
            ExitCode::FAILURE
        }
    }
}
