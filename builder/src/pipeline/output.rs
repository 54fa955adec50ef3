//! Where a built image goes besides the store's cache: names in the store,
//! OCI and Docker archives, a directory or tar of the root filesystem, and
//! a Docker engine (`--load`).

use std::fmt;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hoist_cache::archive::{self, SaveImage};
use hoist_cache::Store;

use super::{Notice, Notify, PipelineError};
use crate::engine::build::Built;
use crate::engine::export;

/// Where an archive is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A file, written whole or not at all (a temporary file beside it is
    /// renamed over it once complete).
    File(PathBuf),
    /// Standard output (`dest=-`); refused when it is a terminal.
    Stdout,
}

impl Dest {
    fn parse(text: &str) -> Dest {
        if text == "-" {
            Dest::Stdout
        } else {
            Dest::File(PathBuf::from(text))
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::File(path) => write!(f, "{}", path.display()),
            Dest::Stdout => f.write_str("stdout"),
        }
    }
}

/// One output of a build (`-o`), in BuildKit's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `type=image`: the image is named in the store with the build's tags
    /// and `names`, and pushed to all of them with `push`
    /// (`type=registry` is `type=image,push=true`).
    Image {
        /// More names (`name=`), normalised.
        names: Vec<String>,
        /// Push the names to their registries.
        push: bool,
    },
    /// `type=oci`: an OCI image layout archive, the image named inside it
    /// with the build's tags and `names`.
    Oci {
        /// Where it goes.
        dest: Dest,
        /// More names (`name=`), normalised.
        names: Vec<String>,
    },
    /// `type=docker`: an archive `docker load` reads.
    Docker {
        /// Where it goes.
        dest: Dest,
        /// More names (`name=`), normalised.
        names: Vec<String>,
    },
    /// `type=local`: the final root filesystem in a directory.
    Local(PathBuf),
    /// `type=tar`: the final root filesystem as a tar archive.
    Tar(Dest),
    /// `--load`: the image streamed into the Docker engine's `docker load`.
    Load,
}

/// The keys each `-o` type takes, for the message about one it does not.
const KEYS: [(&str, &str); 6] = [
    ("image", "name, push"),
    ("registry", "name"),
    ("oci", "dest, name"),
    ("docker", "dest, name"),
    ("local", "dest"),
    ("tar", "dest"),
];

impl Output {
    /// `type=image` with the build's tags only.
    pub fn image() -> Output {
        Output::Image {
            names: Vec::new(),
            push: false,
        }
    }

    /// Parses `-o` as buildx does: `type=image|registry|oci|docker|local|tar`
    /// with its keys (`name=`, `push=`, `dest=PATH|-`), or a bare `DIR`
    /// (`type=local,dest=DIR`) or `-` (`type=tar,dest=-`). An archive's
    /// `name=` names the image inside it besides the tags.
    pub fn parse(spec: &str) -> Result<Output, PipelineError> {
        let shown = hoist_untrusted::escape(spec);
        let invalid = PipelineError::Invalid;
        if spec == "-" {
            return Ok(Output::Tar(Dest::Stdout));
        }
        if !spec.contains('=') {
            return Ok(Output::Local(PathBuf::from(spec)));
        }
        let mut kind = None;
        let mut dest = None;
        let mut names = Vec::new();
        let mut push = None;
        let mut keys = Vec::new();
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "invalid --output `{shown}`: expected KEY=VALUE pairs"
                ))
            })?;
            match k {
                "type" => kind = Some(v.to_owned()),
                "dest" => dest = Some(v.to_owned()),
                "name" => names.push(normalise_name(v)?),
                "push" => {
                    push = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(invalid(format!(
                                "invalid --output push=`{}`: expected true or false",
                                hoist_untrusted::escape(v)
                            )))
                        }
                    })
                }
                _ => {}
            }
            keys.push(k.to_owned());
        }
        let kind =
            kind.ok_or_else(|| invalid(format!("invalid --output `{shown}`: type= is required")))?;
        let Some((_, takes)) = KEYS.iter().find(|(t, _)| *t == kind) else {
            return Err(invalid(format!(
                "invalid --output type `{}`: expected image, registry, oci, docker, local or tar",
                hoist_untrusted::escape(&kind)
            )));
        };
        if let Some(unknown) = keys
            .iter()
            .find(|k| *k != "type" && !takes.split(", ").any(|t| t == *k))
        {
            return Err(invalid(format!(
                "invalid --output key `{}` for type={kind}: it takes {takes}",
                hoist_untrusted::escape(unknown)
            )));
        }
        match kind.as_str() {
            "image" => {
                return Ok(Output::Image {
                    names,
                    push: push.unwrap_or(false),
                })
            }
            "registry" => return Ok(Output::Image { names, push: true }),
            _ => {}
        }
        let dest = dest.ok_or_else(|| {
            invalid(format!(
                "--output `{shown}` needs dest=PATH (or dest=- for stdout)"
            ))
        })?;
        Ok(match kind.as_str() {
            "oci" => Output::Oci {
                dest: Dest::parse(&dest),
                names,
            },
            "docker" => Output::Docker {
                dest: Dest::parse(&dest),
                names,
            },
            "local" => Output::Local(PathBuf::from(dest)),
            _ => Output::Tar(Dest::parse(&dest)),
        })
    }

    /// What can be known wrong before the build: an archive for a terminal,
    /// `--load` without a daemon.
    pub(super) fn check(&self) -> Result<(), PipelineError> {
        match self {
            Output::Oci {
                dest: Dest::Stdout, ..
            }
            | Output::Docker {
                dest: Dest::Stdout, ..
            }
            | Output::Tar(Dest::Stdout)
                if io::stdout().is_terminal() =>
            {
                Err(PipelineError::Invalid(
                    "refusing to write an archive to a terminal; redirect stdout or give \
                     dest=FILE"
                        .into(),
                ))
            }
            Output::Load => check_docker(),
            _ => Ok(()),
        }
    }

    /// Writes this output of `built` (`tags` are normalised names).
    pub(super) fn write(
        &self,
        store: &Store,
        built: &Built,
        tags: &[String],
        notify: &Notify,
    ) -> Result<(), PipelineError> {
        match self {
            Output::Image { names, .. } => {
                for tag in &with(tags, names) {
                    store
                        .set_ref(tag, built.target())
                        .map_err(|source| PipelineError::Store {
                            action: format!("tag the image as `{tag}`"),
                            source,
                        })?;
                }
                Ok(())
            }
            Output::Oci { dest, names } => {
                // With provenance, the index holding image and attestation.
                let images = [SaveImage {
                    names: with(tags, names),
                    target: built.target().clone(),
                }];
                write_to(dest, |out| {
                    archive::save_oci(store, &images, out).map_err(box_error)
                })
            }
            Output::Docker { dest, names } => {
                // A docker archive holds one manifest per image, no index.
                let images = [SaveImage {
                    names: with(tags, names).iter().map(|t| familiar(t)).collect(),
                    target: built.image.manifest.clone(),
                }];
                write_to(dest, |out| {
                    archive::save_docker(store, &images, out).map_err(box_error)
                })
            }
            Output::Local(dir) => {
                export::export_local(store, &built.layers, dir).map_err(|e| PipelineError::Other {
                    action: format!("write the image's files to `{}`", dir.display()),
                    source: Box::new(e),
                })
            }
            Output::Tar(dest) => write_to(dest, |out| {
                export::export_tar(store, &built.layers, out).map_err(box_error)
            }),
            Output::Load => {
                let answer = load(store, tags, &built.image.manifest)?;
                if !answer.is_empty() {
                    notify(Notice::Loaded(answer));
                }
                Ok(())
            }
        }
    }
}

/// An error of a writer: any error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn box_error(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

/// Parses `--annotation [TYPE[PLATFORM]:]KEY=VALUE` as buildx does; the
/// types other than `manifest` (the default) are refused for now, naming
/// the one given.
pub fn parse_annotation(text: &str) -> Result<(String, String), PipelineError> {
    let shown = hoist_untrusted::escape(text);
    let (key, value) = text.split_once('=').ok_or_else(|| {
        PipelineError::Invalid(format!(
            "invalid --annotation `{shown}`: expected KEY=VALUE"
        ))
    })?;
    let key = match key.split_once(':') {
        // `manifest:k`, `manifest[linux/amd64]:k`, `index:k`, … (a key
        // itself has no colon in buildx's forms).
        Some((kind, rest)) => {
            let base = kind.split_once('[').map_or(kind, |(b, _)| b);
            match (base, kind.contains('[')) {
                ("manifest", false) => rest,
                ("manifest" | "index" | "manifest-descriptor" | "index-descriptor", _) => {
                    return Err(PipelineError::Invalid(format!(
                        "--annotation `{shown}`: `{}` annotations are not supported yet (only \
                         the image manifest's, `KEY=VALUE` or `manifest:KEY=VALUE`)",
                        hoist_untrusted::escape(kind)
                    )))
                }
                _ => key,
            }
        }
        None => key,
    };
    if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(PipelineError::Invalid(format!(
            "invalid --annotation `{shown}`: the key is empty or has spaces or control characters"
        )));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `tags` and then those of `more` not among them.
fn with(tags: &[String], more: &[String]) -> Vec<String> {
    let mut all = tags.to_vec();
    for name in more {
        if !all.contains(name) {
            all.push(name.clone());
        }
    }
    all
}

/// A name for the image (`NAME[:TAG]`, no digest), normalised.
fn normalise_name(text: &str) -> Result<String, PipelineError> {
    let shown = hoist_untrusted::escape(text);
    let reference = hoist_registry::Reference::parse(text)
        .map_err(|e| PipelineError::Invalid(format!("invalid --output name `{shown}`: {e}")))?;
    if reference.digest().is_some() {
        return Err(PipelineError::Invalid(format!(
            "invalid --output name `{shown}`: an image name here must be NAME[:TAG]"
        )));
    }
    Ok(reference.to_string())
}

/// `docker.io/library/busybox:latest` as Docker names it: `busybox:latest`.
pub fn familiar(name: &str) -> String {
    match hoist_registry::Reference::parse(name) {
        Ok(r) => r.familiar(),
        Err(_) => name.to_owned(),
    }
}

/// Runs `write` into `dest`; a file appears only once it is complete.
fn write_to(
    dest: &Dest,
    write: impl FnOnce(&mut dyn Write) -> Result<(), BoxError>,
) -> Result<(), PipelineError> {
    let failed = |source: BoxError| PipelineError::Other {
        action: format!("write {dest}"),
        source,
    };
    match dest {
        Dest::Stdout => {
            let mut out = BufWriter::new(io::stdout().lock());
            write(&mut out).map_err(failed)?;
            out.flush().map_err(|e| failed(Box::new(e)))
        }
        Dest::File(path) => write_file(path, write).map_err(|e| failed(Box::new(e))),
    }
}

/// Why [`write_file`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    /// The file (or its temporary file beside it) could not be created.
    #[error("failed to create `{}`", path.display())]
    Create {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing, syncing or renaming it into place failed; nothing is left.
    #[error("failed to write `{}`", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

/// Writes `path` whole or not at all ([`hoist_untrusted::atomic::write_whole`]:
/// a temporary file beside it, synced and renamed over it, the directory
/// synced; a device or FIFO is written in place).
pub fn write_file(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), BoxError>,
) -> Result<(), WriteFileError> {
    // The writer's own error, kept whole so that its causes (an ENOSPC deep
    // in a layer copy) stay in the chain the caller sees.
    let mut failure: Option<BoxError> = None;
    let result = hoist_untrusted::atomic::write_whole(path, |out| {
        write(out).map_err(|e| {
            failure = Some(e);
            io::Error::other("the writer failed")
        })
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.action == "create" => Err(WriteFileError::Create {
            path: e.path,
            source: e.source,
        }),
        Err(e) => Err(WriteFileError::Write {
            path: path.to_path_buf(),
            source: failure.take().unwrap_or_else(|| Box::new(e)),
        }),
    }
}

/// Fails with a clear message when `docker load` would have no daemon.
fn check_docker() -> Result<(), PipelineError> {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    let reason = match output {
        Err(e) => format!("cannot run `docker`: {e}"),
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("the daemon did not answer")
            .trim()
            .to_owned(),
    };
    Err(PipelineError::Load(format!(
        "no Docker daemon is reachable ({})\n\nhint: build without --load and run `hoist save \
         IMAGE | docker load` where a daemon runs, or use `-o type=docker,dest=FILE`",
        hoist_untrusted::escape(&reason)
    )))
}

/// Streams the image in docker format into `docker load`; what it answered
/// (`Loaded image: …`) is returned for the caller to show.
fn load(
    store: &Store,
    tags: &[String],
    manifest: &hoist_cache::Descriptor,
) -> Result<String, PipelineError> {
    let mut child = Command::new("docker")
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PipelineError::Load(format!("failed to start `docker load`: {e}")))?;
    let images = [SaveImage {
        names: tags.iter().map(|t| familiar(t)).collect(),
        target: manifest.clone(),
    }];
    let written: Result<(), BoxError> = match child.stdin.take() {
        Some(stdin) => {
            let mut pipe = BufWriter::new(stdin);
            archive::save_docker(store, &images, &mut pipe)
                .map_err(box_error)
                .and_then(|_| pipe.flush().map_err(box_error))
        }
        None => Ok(()),
    };
    let output = child
        .wait_with_output()
        .map_err(|e| PipelineError::Load(format!("failed to wait for `docker load`: {e}")))?;
    if !output.status.success() {
        return Err(PipelineError::Load(format!(
            "`docker load` failed: {}",
            hoist_untrusted::escape(String::from_utf8_lossy(&output.stderr).trim())
        )));
    }
    written.map_err(|e| PipelineError::Load(format!("failed to stream the image: {e}")))?;
    let answer = String::from_utf8_lossy(&output.stdout);
    Ok(hoist_untrusted::escape_keep_lines(answer.trim_end()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_like_buildx() {
        let parse = Output::parse;
        assert_eq!(parse("type=image").unwrap(), Output::image());
        assert_eq!(
            parse("type=image,name=a,name=reg:5000/b:1,push=true").unwrap(),
            Output::Image {
                names: vec!["docker.io/library/a:latest".into(), "reg:5000/b:1".into()],
                push: true
            }
        );
        assert_eq!(
            parse("type=registry,name=a").unwrap(),
            Output::Image {
                names: vec!["docker.io/library/a:latest".into()],
                push: true
            }
        );
        assert_eq!(
            parse("type=oci,dest=-").unwrap(),
            Output::Oci {
                dest: Dest::Stdout,
                names: vec![]
            }
        );
        assert_eq!(
            parse("type=docker,dest=out.tar,name=x:1").unwrap(),
            Output::Docker {
                dest: Dest::File("out.tar".into()),
                names: vec!["docker.io/library/x:1".to_string()]
            }
        );
        assert_eq!(
            parse("type=local,dest=dir").unwrap(),
            Output::Local("dir".into())
        );
        assert_eq!(parse("out/dir").unwrap(), Output::Local("out/dir".into()));
        assert_eq!(parse("-").unwrap(), Output::Tar(Dest::Stdout));
        let e = parse("type=tar").unwrap_err();
        assert!(e.to_string().contains("needs dest=PATH"), "{e}");
        let e = parse("type=zip,dest=x").unwrap_err();
        assert!(e.to_string().contains("invalid --output type `zip`"), "{e}");
        let e = parse("type=oci,dest=x,color=\x1b[31m").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --output key `color` for type=oci: it takes dest, name"
        );
        let e = parse("type=image,compression=zstd").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --output key `compression` for type=image: it takes name, push"
        );
        assert!(parse("type=image,push=maybe").is_err());
        assert!(parse("type=image,name=a@sha256:0000").is_err());
        assert!(parse("dest=x").is_err());
    }

    #[test]
    fn annotations_parse_as_buildx_writes_them() {
        let ok = |t: &str| parse_annotation(t).unwrap();
        assert_eq!(ok("a.b=c"), ("a.b".into(), "c".into()));
        assert_eq!(ok("manifest:a.b=c=d"), ("a.b".into(), "c=d".into()));
        assert_eq!(ok("org.x="), ("org.x".into(), String::new()));
        let e = parse_annotation("index:a=b").unwrap_err();
        assert!(
            e.to_string()
                .contains("`index` annotations are not supported yet"),
            "{e}"
        );
        assert!(parse_annotation("manifest[linux/amd64]:a=b").is_err());
        assert!(parse_annotation("manifest-descriptor:a=b").is_err());
        assert!(parse_annotation("novalue").is_err());
        assert!(parse_annotation("=v").is_err());
        assert!(parse_annotation("a b=v").is_err());
    }

    #[test]
    fn a_file_output_appears_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tar");
        std::fs::write(&path, b"old").unwrap();
        let dest = Dest::File(path.clone());
        let e = write_to(&dest, |out| {
            out.write_all(b"half")?;
            Err("disk on fire".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("out.tar"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_to(&dest, |out| Ok(out.write_all(b"new")?)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_device_output_is_written_in_place_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        write_to(&Dest::File(null.into()), |out| Ok(out.write_all(b"gone")?)).unwrap();
        assert!(std::fs::metadata(null)
            .unwrap()
            .file_type()
            .is_char_device());
    }
}
