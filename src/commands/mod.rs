//! One module per subcommand. To add one: create `src/commands/<name>.rs`
//! with `pub struct Args` (clap `Args` derive, its doc comment is the help
//! text) and `pub fn run(context: &Context, args: Args) -> anyhow::Result<()>`,
//! then add a variant to [`Command`] and an arm to [`run`].

use crate::context::Context;

mod autobuild;
mod binfmt;
mod build;
mod check;
mod completion;
mod debug;
mod du;
mod fsck;
mod history;
mod images;
mod import;
mod info;
mod inspect;
mod load;
mod login;
mod prune;
mod pull;
mod push;
mod rebase;
mod rmi;
mod run;
mod save;
mod tag;

// One value per process, parsed once: the size of `build::Args` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<build::Args>),
    /// Create an image from a root filesystem tarball (like `docker import`)
    Import(import::Args),
    /// List images
    Images(images::Args),
    /// Show an image's manifest, config, digests and sizes as JSON
    Inspect(inspect::Args),
    /// Show the history of an image
    History(history::Args),
    /// Move an image onto another base image without running its steps again
    ///
    /// The layers of the old base at the bottom of IMAGE are replaced by the
    /// new base's; the layers IMAGE added are kept byte for byte; the config
    /// (diff_ids, history, and what IMAGE inherited unchanged from the old
    /// base: Env, Entrypoint, Cmd, WorkingDir, User, Labels, ExposedPorts, …)
    /// follows the new base. The steps are NOT run again: a program compiled or
    /// linked against the old base may need a rebuild. Images built by hoist
    /// record their base (org.opencontainers.image.base.name and .digest), so
    /// --from may be left out, and --to defaults to the newest image under the
    /// recorded name (pulled). See docs/rebase.md.
    Rebase(rebase::Args),
    /// Run a command in a throwaway container of an image (no -d, no -p: for checking images)
    ///
    /// The command runs in the sandbox of RUN steps over a writable snapshot of
    /// the image, discarded when it exits (--rm is always in effect). hoist run
    /// is for checking an image, not for running services: there is no -d
    /// (detach) and no -p (publish ports). Exit status: the command's own; 125
    /// when hoist itself failed, 126 when the command cannot be executed, 127
    /// when it does not exist, 128+N when signal N ended it. See docs/run.md.
    Run(Box<run::Args>),
    /// Give an image another name
    Tag(tag::Args),
    /// Remove images (untag, then delete blobs no other image uses)
    Rmi(rmi::Args),
    /// Show the store's disk usage by kind
    Du(du::Args),
    /// Remove build cache (unused cache records, layers, snapshots, cache mounts)
    Prune(prune::Args),
    /// Check the store and, with --repair, remove what cannot be trusted
    Fsck(fsck::Args),
    /// Write images to a tar archive (docker or OCI layout)
    Save(save::Args),
    /// Read images from a tar archive (docker save or OCI layout)
    Load(load::Args),
    /// Download an image from a registry
    Pull(pull::Args),
    /// Upload an image to a registry
    Push(push::Args),
    /// Log in to a registry
    Login(login::Args),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Show the store, runtime and registry settings in effect
    Info(info::Args),
    /// Inspect how hoist understands its inputs (Dockerfile syntax trees)
    Debug(debug::Args),
    /// Automated builds: rebuild and push images on git pushes
    Autobuild(autobuild::Args),
    /// Show or register emulators for building other platforms
    Binfmt(binfmt::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    Completion(completion::Args),
    /// Write man pages into a directory
    Man(completion::ManArgs),
}

/// `cli` builds the whole clap definition, which completion scripts and man
/// pages are generated from (it lives in main.rs with the global options).
pub fn run(context: &Context, command: Command, cli: fn() -> clap::Command) -> anyhow::Result<()> {
    match command {
        Command::Build(args) => build::run(context, *args),
        Command::Import(args) => import::run(context, args),
        Command::Images(args) => images::run(context, args),
        Command::Inspect(args) => inspect::run(context, args),
        Command::History(args) => history::run(context, args),
        Command::Run(args) => run::run(context, *args),
        Command::Rebase(args) => rebase::run(context, args),
        Command::Tag(args) => tag::run(context, args),
        Command::Rmi(args) => rmi::run(context, args),
        Command::Du(args) => du::run(context, args),
        Command::Prune(args) => prune::run(context, args),
        Command::Fsck(args) => fsck::run(context, args),
        Command::Save(args) => save::run(context, args),
        Command::Load(args) => load::run(context, args),
        Command::Pull(args) => pull::run(context, args),
        Command::Push(args) => push::run(context, args),
        Command::Login(args) => login::run(context, args),
        Command::Logout(args) => login::logout(context, args),
        Command::Info(args) => info::run(context, args),
        Command::Debug(args) => debug::run(context, args),
        Command::Autobuild(args) => autobuild::run(context, args),
        Command::Binfmt(args) => binfmt::run(context, args),
        Command::Completion(args) => completion::completion(cli(), args),
        Command::Man(args) => completion::man(cli(), args),
    }
}

/// Ends hoist with `code` (a command's own status, e.g. `hoist run`'s),
/// after reporting `error` when there is one.
#[derive(Debug, thiserror::Error)]
#[error("exit status {code}")]
pub struct ExitWith {
    /// The exit status.
    pub code: u8,
    /// What went wrong, when hoist itself failed.
    pub error: Option<anyhow::Error>,
}

/// `--format` of listing commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}
