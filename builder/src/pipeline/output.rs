//! Where a built image goes besides the store's cache: names in the store,
//! OCI and Docker archives, a directory or tar of the root filesystem, and
//! a Docker engine (`--load`).

use std::fmt;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hoist_cache::archive::{self, SaveImage};
use hoist_cache::{Descriptor, Lease, Store};
use hoist_snapshotter::Compression;

use super::{Notice, Notify, PipelineError};
use crate::engine::build::Built;
use crate::engine::convert::{self, LayerFormat};
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
        /// The layers' compression and the media types, when asked.
        format: Option<LayerFormat>,
    },
    /// `type=oci`: an OCI image layout archive, the image named inside it
    /// with the build's tags and `names`.
    Oci {
        /// Where it goes.
        dest: Dest,
        /// More names (`name=`), normalised.
        names: Vec<String>,
        /// The layers' compression and the media types, when asked.
        format: Option<LayerFormat>,
    },
    /// `type=docker`: an archive `docker load` reads.
    Docker {
        /// Where it goes.
        dest: Dest,
        /// More names (`name=`), normalised.
        names: Vec<String>,
        /// The layers' compression and the media types, when asked.
        format: Option<LayerFormat>,
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
    (
        "image",
        "name, push, compression, compression-level, force-compression, oci-mediatypes",
    ),
    (
        "registry",
        "name, compression, compression-level, force-compression, oci-mediatypes",
    ),
    (
        "oci",
        "dest, name, compression, compression-level, force-compression, oci-mediatypes",
    ),
    (
        "docker",
        "dest, name, compression, compression-level, force-compression, oci-mediatypes",
    ),
    ("local", "dest"),
    ("tar", "dest"),
];

/// `true|false` (and `1|0`) of the key `key`.
fn parse_bool(key: &str, value: &str) -> Result<bool, PipelineError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(PipelineError::Invalid(format!(
            "invalid --output {key}=`{}`: expected true or false",
            hoist_untrusted::escape(value)
        ))),
    }
}

/// The layer format the keys `compression`, `compression-level`,
/// `force-compression` and `oci-mediatypes` ask for (`None` when none is
/// given): checked as BuildKit checks them, the value named when wrong.
fn parse_format(keys: &[(String, String)]) -> Result<Option<LayerFormat>, PipelineError> {
    let mut format = LayerFormat::default();
    let mut any = false;
    let mut level = None;
    for (key, value) in keys {
        let shown = hoist_untrusted::escape(value);
        match key.as_str() {
            "compression" => {
                format.compression = match value.as_str() {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::Uncompressed,
                    "estargz" => {
                        return Err(PipelineError::Invalid(
                            "invalid --output compression=`estargz`: eStargz layers are not \
                             supported; use gzip, zstd or uncompressed"
                                .into(),
                        ))
                    }
                    _ => {
                        return Err(PipelineError::Invalid(format!(
                            "invalid --output compression=`{shown}`: expected gzip, zstd or \
                             uncompressed"
                        )))
                    }
                }
            }
            "compression-level" => {
                level = Some((
                    value.parse::<u32>().map_err(|_| {
                        PipelineError::Invalid(format!(
                            "invalid --output compression-level=`{shown}`: expected a number"
                        ))
                    })?,
                    shown,
                ))
            }
            "force-compression" => format.force = parse_bool(key, value)?,
            "oci-mediatypes" => format.oci_media_types = Some(parse_bool(key, value)?),
            _ => continue,
        }
        any = true;
    }
    if let Some((n, shown)) = level {
        let max = match format.compression {
            Compression::Gzip => 9,
            Compression::Zstd => 22,
            // As BuildKit: a level means nothing without compression.
            Compression::Uncompressed => u32::MAX,
        };
        if n > max {
            return Err(PipelineError::Invalid(format!(
                "invalid --output compression-level=`{shown}`: {} levels are 0 to {max}",
                match format.compression {
                    Compression::Gzip => "gzip",
                    _ => "zstd",
                }
            )));
        }
        format.level = Some(n);
    }
    Ok(any.then_some(format))
}

impl Output {
    /// `type=image` with the build's tags only.
    pub fn image() -> Output {
        Output::Image {
            names: Vec::new(),
            push: false,
            format: None,
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
        let mut format_keys = Vec::new();
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
                "push" => push = Some(parse_bool(k, v)?),
                "compression" | "compression-level" | "force-compression" | "oci-mediatypes" => {
                    format_keys.push((k.to_owned(), v.to_owned()))
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
        let format = parse_format(&format_keys)?;
        match kind.as_str() {
            "image" => {
                return Ok(Output::Image {
                    names,
                    push: push.unwrap_or(false),
                    format,
                })
            }
            "registry" => {
                return Ok(Output::Image {
                    names,
                    push: true,
                    format,
                })
            }
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
                format,
            },
            "docker" => Output::Docker {
                dest: Dest::parse(&dest),
                names,
                format,
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

    /// The layer format this output asks for, if any.
    pub fn format(&self) -> Option<&LayerFormat> {
        match self {
            Output::Image { format, .. }
            | Output::Oci { format, .. }
            | Output::Docker { format, .. } => format.as_ref(),
            _ => None,
        }
    }

    /// Writes this output of `built` (`tags` are normalised names); for
    /// `type=image`, returns what its names point at (the image in the
    /// asked layer format), which is what is pushed to them. Conversions
    /// are kept in the store under `lease`.
    pub(super) fn write(
        &self,
        store: &Store,
        built: &Built,
        tags: &[String],
        notify: &Notify,
        lease: Option<&Lease>,
    ) -> Result<Option<Descriptor>, PipelineError> {
        let converted = |target: &Descriptor| -> Result<Descriptor, PipelineError> {
            // Without a format, the default one, needed only when the steps
            // (or the cache) gave layers in another compression.
            let default = LayerFormat::default();
            let format = match self.format() {
                Some(format) => format,
                // (Every platform's layers, of a multi-platform build.)
                None if built
                    .layers
                    .iter()
                    .chain(built.platforms.iter().flat_map(|p| &p.layers))
                    .all(|l| {
                        hoist_cache::image::layer_compression(&l.media_type)
                            == Some(hoist_cache::image::Compression::Gzip)
                    }) =>
                {
                    return Ok(target.clone())
                }
                None => &default,
            };
            let converted = convert::convert(store, target, format, lease).map_err(|e| {
                PipelineError::Other {
                    action: "convert the image's layers".into(),
                    source: Box::new(e),
                }
            })?;
            for warning in converted.warnings {
                notify(Notice::Warning(warning));
            }
            Ok(converted.target)
        };
        match self {
            Output::Image { names, .. } => {
                let target = converted(built.target())?;
                for tag in &with(tags, names) {
                    store
                        .set_ref(tag, &target)
                        .map_err(|source| PipelineError::Store {
                            action: format!("tag the image as `{tag}`"),
                            source,
                        })?;
                }
                Ok(Some(target))
            }
            Output::Oci { dest, names, .. } => {
                // With provenance, the index holding image and attestation.
                let images = [SaveImage {
                    names: with(tags, names),
                    target: converted(built.target())?,
                }];
                write_to(dest, |out| {
                    archive::save_oci(store, &images, out).map_err(box_error)
                })
                .map(|()| None)
            }
            Output::Docker { dest, names, .. } => {
                // A docker archive holds one manifest per image, no index.
                let images = [SaveImage {
                    names: with(tags, names).iter().map(|t| familiar(t)).collect(),
                    target: converted(&built.image.manifest)?,
                }];
                write_to(dest, |out| {
                    archive::save_docker(store, &images, out).map_err(box_error)
                })
                .map(|()| None)
            }
            Output::Local(dir) => {
                // Several platforms: a directory each, named as BuildKit's
                // (`linux_arm64`).
                let each: Vec<(PathBuf, &[crate::engine::artifact::Layer])> =
                    if built.platforms.is_empty() {
                        vec![(dir.clone(), &built.layers)]
                    } else {
                        built
                            .platforms
                            .iter()
                            .map(|p| {
                                let name = p.platform.to_string().replace('/', "_");
                                (dir.join(name), p.layers.as_slice())
                            })
                            .collect()
                    };
                for (dir, layers) in each {
                    export::export_local(store, layers, &dir).map_err(|e| {
                        PipelineError::Other {
                            action: format!("write the image's files to `{}`", dir.display()),
                            source: Box::new(e),
                        }
                    })?;
                }
                Ok(None)
            }
            Output::Tar(dest) => {
                // Several platforms: a directory each in the tar (`linux_arm64/`).
                let names: Vec<String> = built
                    .platforms
                    .iter()
                    .map(|p| p.platform.to_string().replace('/', "_"))
                    .collect();
                let parts: Vec<(&str, &[crate::engine::artifact::Layer])> =
                    if built.platforms.is_empty() {
                        vec![("", &built.layers)]
                    } else {
                        names
                            .iter()
                            .zip(&built.platforms)
                            .map(|(n, p)| (n.as_str(), p.layers.as_slice()))
                            .collect()
                    };
                write_to(dest, |out| {
                    export::export_tar_each(store, &parts, out).map_err(box_error)
                })
                .map(|()| None)
            }
            Output::Load => {
                let answer = load(store, tags, &converted(&built.image.manifest)?)?;
                if !answer.is_empty() {
                    notify(Notice::Loaded(answer));
                }
                Ok(None)
            }
        }
    }
}

/// An error of a writer: any error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn box_error(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
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
                push: true,
                format: None,
            }
        );
        assert_eq!(
            parse("type=registry,name=a").unwrap(),
            Output::Image {
                names: vec!["docker.io/library/a:latest".into()],
                push: true,
                format: None,
            }
        );
        assert_eq!(
            parse("type=oci,dest=-").unwrap(),
            Output::Oci {
                dest: Dest::Stdout,
                names: vec![],
                format: None,
            }
        );
        assert_eq!(
            parse("type=docker,dest=out.tar,name=x:1").unwrap(),
            Output::Docker {
                dest: Dest::File("out.tar".into()),
                names: vec!["docker.io/library/x:1".to_string()],
                format: None,
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
            "invalid --output key `color` for type=oci: it takes dest, name, compression, \
             compression-level, force-compression, oci-mediatypes"
        );
        let e = parse("type=local,dest=d,compression=zstd").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --output key `compression` for type=local: it takes dest"
        );
        assert!(parse("type=image,push=maybe").is_err());
        assert!(parse("type=image,name=a@sha256:0000").is_err());
        assert!(parse("dest=x").is_err());
    }

    #[test]
    fn layer_format_keys_parse_like_buildkit() {
        let format = |spec: &str| Output::parse(spec).unwrap().format().copied();
        assert_eq!(format("type=image"), None);
        assert_eq!(
            format("type=registry,compression=zstd,compression-level=19,force-compression=true"),
            Some(LayerFormat {
                compression: Compression::Zstd,
                level: Some(19),
                force: true,
                oci_media_types: None,
            })
        );
        assert_eq!(
            format("type=oci,dest=x,oci-mediatypes=false"),
            Some(LayerFormat {
                oci_media_types: Some(false),
                ..LayerFormat::default()
            })
        );
        assert_eq!(
            format("type=docker,dest=x,compression=uncompressed")
                .unwrap()
                .compression,
            Compression::Uncompressed
        );
        let error = |spec: &str| Output::parse(spec).unwrap_err().to_string();
        assert_eq!(
            error("type=image,compression=lz4\x1b"),
            "invalid --output compression=`lz4\\u{1b}`: expected gzip, zstd or uncompressed"
        );
        assert!(error("type=image,compression=estargz").contains("eStargz"));
        assert_eq!(
            error("type=image,compression-level=10"),
            "invalid --output compression-level=`10`: gzip levels are 0 to 9"
        );
        assert_eq!(
            error("type=image,compression=zstd,compression-level=23"),
            "invalid --output compression-level=`23`: zstd levels are 0 to 22"
        );
        assert!(error("type=image,compression-level=-1").contains("expected a number"));
        assert!(error("type=image,force-compression=yes").contains("expected true or false"));
        assert!(error("type=image,oci-mediatypes=no").contains("expected true or false"));
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
