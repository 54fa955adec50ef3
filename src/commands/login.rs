//! `hoist login [-u USER] [-p PASS | --password-stdin] [REGISTRY]` and
//! `hoist logout [REGISTRY]`: credentials in Docker's `config.json` format
//! (the file `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json` names). Credentials are read from more files
//! (podman's first: [`hoist_registry::AuthChain`]).

use std::io::{Read, Write};

use anyhow::{bail, Context as _};
use hoist_registry::auth::normalize_registry;
use hoist_registry::reference::DEFAULT_REGISTRY;
use hoist_registry::{block_on, AuthFile, Client, Credential};

use crate::context::Context;
use crate::hint::WithHint;

/// Log in to a registry
#[derive(clap::Args, Debug)]
pub struct Args {
    /// User name
    #[arg(short, long)]
    username: Option<String>,
    /// Password (prefer --password-stdin: a command line is visible to others)
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    /// Registry host (default docker.io)
    registry: Option<String>,
}

/// Log out from a registry
#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry host (default docker.io)
    registry: Option<String>,
}

pub fn run(_context: &Context, args: Args) -> anyhow::Result<()> {
    let registry = normalize_registry(args.registry.as_deref().unwrap_or(DEFAULT_REGISTRY));
    let Some(username) = args.username.filter(|u| !u.is_empty()) else {
        return Err(anyhow::anyhow!(
            "a user name is required to log in to {registry}"
        ))
        .hint("`hoist login -u USER --password-stdin REGISTRY`");
    };
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(password) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        password
    } else {
        return Err(anyhow::anyhow!(
            "a password is required to log in to {registry}"
        ))
        .hint("pass it on standard input with `--password-stdin`, or with `-p`");
    };
    if password.is_empty() {
        bail!("the password for {registry} is empty");
    }
    let auth_file = AuthFile::discover();
    let client = Client::from_environment().context("failed to set up the registry client")?;
    let credential = Credential::new(username, password);
    block_on(hoist_registry::login(
        &client,
        &registry,
        &credential,
        &auth_file,
    ))?
    .with_context(|| format!("failed to log in to {registry}"))?;
    let path = auth_file.path().display();
    // Docker warns on stderr where the password went; say it always.
    match auth_file.helper_for(&registry).ok().flatten() {
        Some(helper) => eprintln!(
            "Credentials saved with docker-credential-{} (the helper {path} names)",
            escape(&helper)
        ),
        None => eprintln!("Credentials saved in {path} (base64, not encrypted)"),
    }
    // podman's files are read before Docker's (containers/image's order):
    // an entry there would hide the one just written.
    for file in hoist_registry::AuthChain::discover().files() {
        if file.path() == auth_file.path() {
            break;
        }
        if file.get(&registry).ok().flatten().is_some() {
            eprintln!(
                "warning: {} also has credentials for {registry} and is read first; \
                 remove them there (`podman logout {registry}`) or set REGISTRY_AUTH_FILE",
                file.path().display()
            );
        }
    }
    writeln!(std::io::stdout(), "Login Succeeded")?;
    Ok(())
}

fn escape(text: &str) -> String {
    hoist_cache::text::escape_except(text, &[]).into_owned()
}

pub fn logout(_context: &Context, args: LogoutArgs) -> anyhow::Result<()> {
    let registry = normalize_registry(args.registry.as_deref().unwrap_or(DEFAULT_REGISTRY));
    let auth_file = AuthFile::discover();
    let removed = hoist_registry::logout(&registry, &auth_file)
        .with_context(|| format!("failed to log out from {registry}"))?;
    let mut out = std::io::stdout();
    if removed {
        writeln!(out, "Removing login credentials for {registry}")?;
    } else {
        writeln!(out, "Not logged in to {registry}")?;
    }
    Ok(())
}
