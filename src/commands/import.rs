//! `hoist import ROOTFS.tar[.gz|.zst] NAME[:TAG]`: one gzip layer made from a
//! root filesystem tarball, a config with history, tagged.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path};

use anyhow::{bail, Context as _};
use hoist_cache::image::media_types;
use hoist_cache::{Descriptor, MediaType, Store};
use hoist_snapshotter::apply::decompress;
use hoist_snapshotter::{CompressionOptions, LayerWriter};
use oci_spec::image::{
    Config, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, ImageManifestBuilder,
    RootFsBuilder,
};

use hoist_cache::text::escape;

use crate::context::Context;
use crate::hint::WithHint;
use crate::resolve;

/// Create an image from a root filesystem tarball
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tarball (plain, gzip or zstd), or `-` for stdin
    source: String,
    /// Name of the new image, NAME[:TAG]
    name: String,
    /// Apply a Dockerfile instruction to the config (CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// Commit message recorded in the image history
    #[arg(short, long)]
    message: Option<String>,
    /// Stack the new layer on top of this image (its layers and config are
    /// inherited)
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let name = resolve::parse_tag_name(&args.name)?;
    let store = context.store()?;
    let _lease = hoist_cache::LeaseGuard::take(&store, "import")
        .context("failed to take a lease on the store")?;
    let base = match &args.base {
        Some(base) => {
            let (entry, _) = resolve::resolve(&store, base)
                .with_context(|| format!("failed to resolve the base image `{base}`"))?;
            Some(entry.image()?.clone())
        }
        None => None,
    };
    // Validate the changes before reading anything.
    let mut config = base
        .as_ref()
        .map(|b| b.config.clone())
        .unwrap_or_else(new_config);
    let mut runtime = config.config().clone().unwrap_or_default();
    crate::change::apply(&mut runtime, &args.changes)?;
    config.set_config(Some(runtime));

    let input: Box<dyn Read> = if args.source == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(
            File::open(&args.source)
                .with_context(|| format!("failed to open `{}`", args.source))?,
        )
    };
    let source_label = if args.source == "-" {
        "stdin"
    } else {
        &args.source
    };
    // Checked before anything is read or written.
    let now = crate::time::format_rfc3339(crate::time::now_or_source_date_epoch()?);
    let mut created = Vec::new();
    let result = (|| {
        let layer = write_layer(&store, input)
            .with_context(|| format!("failed to import `{}`", escape(source_label)))?;
        if layer.created {
            created.push(layer.digest.clone());
        }
        config.set_created(Some(now.clone()));
        let mut diff_ids = config.rootfs().diff_ids().clone();
        diff_ids.push(layer.diff_id.to_string());
        config.set_rootfs(RootFsBuilder::default().diff_ids(diff_ids).build()?);
        let mut history = config.history().clone().unwrap_or_default();
        let comment = args.message.clone().unwrap_or_else(|| {
            format!(
                "Imported from {}",
                if args.source == "-" {
                    "-"
                } else {
                    &args.source
                }
            )
        });
        history.push(
            HistoryBuilder::default()
                .created(now)
                .created_by(format!("hoist import{}", changes_suffix(&args.changes)))
                .comment(comment)
                .build()?,
        );
        config.set_history(Some(history));
        let mut config_json = serde_json::to_value(&config)?;
        if let Some(base) = &base {
            keep_unmodelled_fields(&store, base, &mut config_json)?;
        }
        let config_descriptor = store.put_json(&config_json, media_types::OCI_CONFIG)?;
        created.push(config_descriptor.digest().clone());
        let mut layers: Vec<Descriptor> = base
            .as_ref()
            .map(|b| b.layers().to_vec())
            .unwrap_or_default();
        layers.push(Descriptor::new(
            MediaType::ImageLayerGzip,
            layer.size,
            layer.digest,
        ));
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_descriptor.clone())
            .layers(layers)
            .build()?;
        let target = store.put_json(&manifest, media_types::OCI_MANIFEST)?;
        created.push(target.digest().clone());
        store.set_ref(&name.to_string(), &target)?;
        Ok::<_, anyhow::Error>(config_descriptor)
    })();
    match result {
        Ok(config_descriptor) => {
            writeln!(io::stdout().lock(), "{}", config_descriptor.digest())?;
            Ok(())
        }
        Err(e) => {
            // Leave the store as it was: remove the blobs this import wrote,
            // except any that an existing image also uses (an identical
            // config or manifest may already have been there).
            discard(&store, &created);
            Err(e)
        }
    }
}

fn discard(store: &Store, created: &[hoist_cache::Digest]) {
    let mut reachable = std::collections::BTreeSet::new();
    if let Ok(refs) = store.list_refs() {
        for r in refs {
            if let Ok(blobs) = store.reachable_blobs(&r.target) {
                reachable.extend(blobs);
            }
        }
    }
    for digest in created {
        if !reachable.contains(&digest.to_string()) {
            let _ = store.content().delete_blob(digest);
        }
    }
}

/// oci-spec's `Config` has no fields for `Healthcheck`, `Shell`, `OnBuild`
/// or `ArgsEscaped`; copy such keys of the base's runtime config over so a
/// child does not silently lose them.
fn keep_unmodelled_fields(
    store: &Store,
    base: &hoist_cache::image::Image,
    config: &mut serde_json::Value,
) -> anyhow::Result<()> {
    let raw: serde_json::Value = serde_json::from_slice(&store.content().read_blob(base.id())?)
        .with_context(|| format!("failed to parse the base config {}", base.id()))?;
    let Some(base_runtime) = raw.get("config").and_then(|c| c.as_object()) else {
        return Ok(());
    };
    let runtime = config
        .as_object_mut()
        .map(|c| c.entry("config").or_insert_with(|| serde_json::json!({})));
    if let Some(serde_json::Value::Object(runtime)) = runtime {
        for (key, value) in base_runtime {
            if !runtime.contains_key(key) && !value.is_null() {
                runtime.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn changes_suffix(changes: &[String]) -> String {
    changes.iter().map(|c| format!(" --change '{c}'")).collect()
}

fn new_config() -> ImageConfiguration {
    let (os, architecture) = hoist_cache::image::host_platform();
    // The builder only fails on missing required fields; all are given.
    ImageConfigurationBuilder::default()
        .os(os)
        .architecture(architecture)
        .config(Config::default())
        .build()
        .unwrap_or_default()
}

struct Layer {
    digest: hoist_cache::Digest,
    diff_id: hoist_cache::Digest,
    size: u64,
    created: bool,
}

/// Stream `input` (tar, tar.gz or tar.zst) into a gzip layer blob while a
/// tar parser validates it: headers and checksums, every entry's data fully
/// present, no `..` in names, and a complete compressed stream. The layer is
/// compressed and hashed by the snapshotter's layer writer, the one every
/// built layer goes through, and the input decompressed by its reader.
fn write_layer(store: &Store, input: Box<dyn Read>) -> anyhow::Result<Layer> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let head = input.fill_buf().context("failed to read the input")?;
    if head.is_empty() {
        bail!("the input is empty (expected a tar archive)");
    }
    if let Some(name) = hoist_cache::image::Compression::sniff_unsupported(head) {
        return Err(anyhow::anyhow!("{name}-compressed input is not supported")).hint(format!(
            "decompress it first: `{name} -dc FILE | hoist import - NAME`"
        ));
    }
    let decompressed =
        decompress(&mut input).context("failed to read the input's compressed stream")?;
    let mut writer = store.content().writer()?;
    // The ingest hashes the blob to name it: the layer writer does not.
    let options = CompressionOptions {
        skip_blob_digest: true,
        ..CompressionOptions::default()
    };
    let layer = LayerWriter::new(&mut writer, &options).context("failed to start the layer")?;
    let mut tee = Tee {
        inner: decompressed,
        out: layer,
        write_error: None,
    };
    let entries = validate_tar(&mut tee);
    if let Some(e) = tee.write_error.take() {
        return Err(anyhow::Error::new(e).context("failed to write the layer into the store"));
    }
    let entries = entries?;
    if entries == 0 {
        bail!("the input is not a tar archive (no entries found)");
    }
    // The rest after the end-of-archive blocks: hash it too (it is part of
    // the layer) and let the decompressor check its trailer.
    let mut rest = Vec::new();
    tee.read_to_end(&mut rest)
        .context("the input ends in the middle of its compressed stream")?;
    if let Some(e) = tee.write_error.take() {
        return Err(anyhow::Error::new(e).context("failed to write the layer into the store"));
    }
    let described = tee
        .out
        .finish()
        .context("failed to finish the gzip stream of the layer")?;
    let diff_id: hoist_cache::Digest = described.diff_id.parse()?;
    let committed = writer.commit(Some(described.size), None)?;
    Ok(Layer {
        digest: committed.digest,
        diff_id,
        size: committed.size,
        created: committed.created,
    })
}

fn validate_tar(input: &mut impl Read) -> anyhow::Result<u64> {
    let mut archive = tar::Archive::new(input);
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(tar_error)
        .context("the input is not a valid tar archive")?;
    for entry in entries {
        let mut entry = entry
            .map_err(tar_error)
            .context("the input is not a valid tar archive")?;
        let path = entry
            .path()
            .map_err(tar_error)
            .context("the input is not a valid tar archive (bad entry name)")?
            .into_owned();
        if path.components().any(|c| c == Component::ParentDir) {
            bail!(
                "the tar archive has an entry `{}` that climbs out of the root with `..`",
                display(&path)
            );
        }
        let expected = entry.size();
        let copied = io::copy(&mut entry, &mut io::sink())
            .map_err(tar_error)
            .with_context(|| {
                format!(
                    "the input is truncated or corrupt in entry `{}`",
                    display(&path)
                )
            })?;
        if copied != expected {
            bail!(
                "the input is truncated: entry `{}` has {copied} of its {expected} bytes",
                display(&path)
            );
        }
        count += 1;
    }
    Ok(count)
}

/// An entry name as a message quotes it: the archive is untrusted, so its
/// control characters are escaped.
fn display(path: &Path) -> String {
    hoist_cache::text::escape_path(path).into_owned()
}

/// The tar crate's errors quote header fields and names as they are (a
/// corrupt archive's bytes, terminal escapes included): keep the message,
/// escaped.
fn tar_error(error: io::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", escape(&error.to_string()))
}

/// Passes bytes through to `out` as they are read.
struct Tee<R, W> {
    inner: R,
    out: W,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            self.write_error = Some(e);
            return Err(io::Error::new(kind, "writing the layer failed"));
        }
        Ok(n)
    }
}
