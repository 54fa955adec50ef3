//! `hoist save IMAGE... -o FILE [--format docker|oci]`.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use hoist_cache::archive::{self, SaveImage};

use crate::context::Context;
use crate::hint::WithHint;
use crate::resolve::{all_images, find, By};
use crate::util::familiar;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ArchiveFormat {
    /// `docker save` layout: what `docker load` reads
    #[default]
    Docker,
    /// OCI image layout: what `skopeo copy oci-archive:FILE` reads
    Oci,
}

/// Write images to a tar archive (docker or OCI layout)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Images (name, ID or digest)
    #[arg(required = true)]
    images: Vec<String>,
    /// Output file (default: stdout, when it is not a terminal)
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive layout
    #[arg(long, value_enum, default_value_t)]
    format: ArchiveFormat,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let entries = all_images(&store)?;
    let mut images: Vec<SaveImage> = Vec::new();
    for arg in &args.images {
        let (i, by) = find(&entries, arg)?;
        let entry = &entries[i];
        entry.image()?;
        let names = match by {
            By::Name(name) => vec![name],
            By::Id => entry.names.clone(),
        };
        // docker load expects short names (`busybox:latest`); OCI archives
        // carry hoist's fully qualified names.
        let names: Vec<String> = match args.format {
            ArchiveFormat::Docker => names.iter().map(|n| familiar(n)).collect(),
            ArchiveFormat::Oci => names,
        };
        match images
            .iter_mut()
            .find(|s| s.target.digest() == entry.target.digest())
        {
            Some(existing) => {
                for name in names {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
            }
            None => images.push(SaveImage {
                names,
                target: entry.target.clone(),
            }),
        }
    }
    let write = |out: &mut dyn Write| -> anyhow::Result<()> {
        match args.format {
            ArchiveFormat::Docker => archive::save_docker(&store, &images, out)?,
            ArchiveFormat::Oci => archive::save_oci(&store, &images, out)?,
        }
        Ok(())
    };
    match &args.output {
        None => {
            if io::stdout().is_terminal() {
                return Err(anyhow::anyhow!(
                    "refusing to write an archive to a terminal"
                ))
                .hint("use `-o FILE` or redirect the output");
            }
            let mut out = BufWriter::new(io::stdout().lock());
            write(&mut out)?;
            out.flush()?;
        }
        Some(path) => write_atomically(path, write)?,
    }
    Ok(())
}

/// Write whole or not at all (the pipeline's writer of `-o` archives).
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    hoist_builder::pipeline::write_file(path, |out| write(out).map_err(Into::into))
        .map_err(anyhow::Error::new)
}
