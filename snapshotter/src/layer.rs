//! From tar bytes to a layer blob in one pass: compress, and hash both the
//! uncompressed stream (the *diff_id*) and the compressed one (the blob
//! *digest*) while writing into the caller's writer.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI media type of a gzip layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain tar.
    Uncompressed,
    /// gzip (the default), compressed in parallel in fixed 1 MiB blocks.
    #[default]
    Gzip,
    /// zstd, compressed by libzstd's worker threads (always at least one,
    /// so the bytes are the same for any thread count).
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Uncompressed => MEDIA_TYPE_LAYER_TAR,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }
}

impl From<Compression> for hoist_untrusted::Compression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Uncompressed => hoist_untrusted::Compression::None,
            Compression::Gzip => hoist_untrusted::Compression::Gzip,
            Compression::Zstd => hoist_untrusted::Compression::Zstd,
        }
    }
}

/// A blob's sniffed compression as the compression to write it in: the two
/// types stay apart because one names what untrusted bytes are and the other
/// what hoist writes (with its media types and CLI names).
impl From<hoist_untrusted::Compression> for Compression {
    fn from(c: hoist_untrusted::Compression) -> Self {
        match c {
            hoist_untrusted::Compression::None => Compression::Uncompressed,
            hoist_untrusted::Compression::Gzip => Compression::Gzip,
            hoist_untrusted::Compression::Zstd => Compression::Zstd,
        }
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "uncompressed" | "none" => Ok(Compression::Uncompressed),
            _ => Err(Error::UnknownName {
                what: "compression",
                value: s.to_string(),
                expected: "gzip, zstd, uncompressed",
            }),
        }
    }
}

/// What a layer blob turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// `sha256:<hex>` of the uncompressed tar (goes into the image config's
    /// `rootfs.diff_ids`).
    pub diff_id: String,
    /// `sha256:<hex>` of the blob as written (goes into the manifest).
    pub digest: String,
    /// Size of the blob as written, in bytes.
    pub size: u64,
    /// Size of the uncompressed tar, in bytes.
    pub uncompressed_size: u64,
    /// The OCI media type of the blob.
    pub media_type: &'static str,
    /// The gzip blocks the blob was written in, when the writer was asked
    /// to list them ([`LayerWriter::reusing`]); empty otherwise.
    pub blocks: Vec<GzipBlock>,
}

/// One block of a gzip layer as [`ParallelGzip`] wrote it. A later layer
/// whose stream holds the same block (same input, same 32 KiB before it,
/// same level) may take its deflate bytes instead of deflating it again:
/// they are the bytes deflate would make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GzipBlock {
    /// sha256 of everything the block's deflate bytes depend on: this
    /// code's version, the level, what the deflate library makes of a fixed
    /// sample at that level (so a library that compresses differently never
    /// matches), the dictionary and the input.
    pub key: [u8; 32],
    /// Where the block's deflate bytes start in the blob.
    pub offset: u64,
    /// How many there are.
    pub len: u64,
    /// sha256 of those deflate bytes, to check them when read back.
    pub digest: [u8; 32],
}

/// Deflate bytes of earlier blocks, by [`GzipBlock::key`].
pub trait GzipBlockSource: Send + Sync {
    /// The deflate bytes of the block `key`, exactly as written then (the
    /// source checks them against their [`GzipBlock::digest`]), or `None`.
    fn block(&self, key: &[u8; 32]) -> Option<Vec<u8>>;
}

/// Compression settings of a [`LayerWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionOptions {
    /// The algorithm.
    pub compression: Compression,
    /// Level; `None` means the algorithm's default (gzip 6, zstd 3).
    pub level: Option<u32>,
    /// Compression threads; 0 means one per core. The bytes do not depend
    /// on this number.
    pub threads: usize,
    /// The writer the blob goes to hashes it anyway (a content store
    /// ingest, which names the blob by it): the layer writer does not hash
    /// the compressed stream a second time, and the descriptor's `digest`
    /// is left empty for the caller to fill from its writer.
    pub skip_blob_digest: bool,
}

impl Default for CompressionOptions {
    fn default() -> Self {
        CompressionOptions {
            compression: Compression::Gzip,
            level: None,
            threads: 0,
            skip_blob_digest: false,
        }
    }
}

/// The default zstd level (libzstd's and BuildKit's).
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;

/// The number of compression threads `threads` asks for (0: one per core).
fn thread_count(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// A zstd encoder whose bytes depend only on the input and the level.
///
/// libzstd's multi-threaded mode cuts the input into jobs of
/// [`ZSTD_JOB_SIZE`], never sized by the worker count, so its output is the
/// same for 1 and for N workers; the single-threaded mode (0 workers) makes
/// other bytes. Hence always at least one worker.
fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
    threads: usize,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    let workers = u32::try_from(thread_count(threads))
        .unwrap_or(u32::MAX)
        .max(1);
    encoder.multithread(workers)?;
    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(encoder)
}

/// The input of one zstd job. libzstd's default is four windows (8 MiB at
/// level 3), and it keeps workers + 2 jobs in flight, each with its input
/// and output buffers: hoist's peak RSS writing a 1 GB zstd layer was 87 MB
/// on 2 cores. 2 MiB jobs (each still primed with the end of the one
/// before) keep it flat at a few MiB per worker, whatever the layer's size.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// SHA-256 of a stream, on a thread of its own once the stream passes
/// [`StreamHash::INLINE`]: the tar's writer (the diff's walk, one thread
/// reading every file) was the critical path of a layer, and its own hashing
/// of the stream was a sixth of its time while a core sat idle.
#[derive(Default)]
struct StreamHash {
    /// The hash while the stream is short.
    inline: Option<Sha256>,
    inlined: usize,
    off: Option<OffThread>,
}

struct OffThread {
    chunk: Vec<u8>,
    chunks: Option<mpsc::SyncSender<Vec<u8>>>,
    /// Chunks hashed, for reuse.
    spare: mpsc::Receiver<Vec<u8>>,
    thread: JoinHandle<[u8; 32]>,
}

impl StreamHash {
    /// Streams up to this size are hashed by the writer itself.
    const INLINE: usize = 4 << 20;
    /// What the thread hashes at a time; two wait at most.
    const CHUNK: usize = 1 << 20;

    fn update(&mut self, buf: &[u8]) -> io::Result<()> {
        let off = match self.off {
            Some(ref mut off) => off,
            None if self.inlined + buf.len() <= Self::INLINE => {
                self.inline.get_or_insert_with(Sha256::new).update(buf);
                self.inlined += buf.len();
                return Ok(());
            }
            None => self.start()?,
        };
        let mut rest = buf;
        while !rest.is_empty() {
            let n = (Self::CHUNK - off.chunk.len()).min(rest.len());
            off.chunk.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if off.chunk.len() == Self::CHUNK {
                off.send()?;
            }
        }
        Ok(())
    }

    /// Moves the hash so far to a thread of its own.
    fn start(&mut self) -> io::Result<&mut OffThread> {
        let mut hash = self.inline.take().unwrap_or_default();
        let (chunks, receive) = mpsc::sync_channel::<Vec<u8>>(2);
        let (recycle, spare) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("diff-id".into())
            .spawn(move || {
                for chunk in receive {
                    hash.update(&chunk);
                    // The writer may be gone (an error); the chunk then is too.
                    let _ = recycle.send(chunk);
                }
                hash.finalize().into()
            })?;
        Ok(self.off.insert(OffThread {
            chunk: Vec::with_capacity(Self::CHUNK),
            chunks: Some(chunks),
            spare,
            thread,
        }))
    }

    fn finish(self) -> io::Result<[u8; 32]> {
        let Some(mut off) = self.off else {
            return Ok(self.inline.unwrap_or_default().finalize().into());
        };
        if !off.chunk.is_empty() {
            off.send()?;
        }
        drop(off.chunks.take());
        off.thread
            .join()
            .map_err(|_| io::Error::other("the diff_id's hashing thread panicked"))
    }
}

impl OffThread {
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(StreamHash::CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.chunk.clear();
        self.chunks
            .as_ref()
            .and_then(|chunks| chunks.send(full).ok())
            .ok_or_else(|| io::Error::other("the diff_id's hashing thread died"))
    }
}

/// Counts and (unless the sink does) hashes what passes through.
struct HashCount<W> {
    inner: W,
    hash: Option<Sha256>,
    count: u64,
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hash) = &mut self.hash {
            hash.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    Plain(HashCount<W>),
    // Boxed: the encoder is much larger than the other two.
    Gzip(Box<ParallelGzip<HashCount<W>>>),
    Zstd(zstd::stream::write::Encoder<'static, HashCount<W>>),
}

/// A `Write` that turns a tar stream into a layer blob written to `out`.
///
/// Write the uncompressed tar into it, then call [`LayerWriter::finish`] for
/// the digests and sizes. Nothing is buffered beyond a few compression blocks.
pub struct LayerWriter<W: Write> {
    hash: StreamHash,
    count: u64,
    encoder: Encoder<W>,
    media_type: &'static str,
}

impl<W: Write> LayerWriter<W> {
    /// A writer compressing into `out`.
    pub fn new(out: W, options: &CompressionOptions) -> io::Result<Self> {
        Self::build(out, options, None)
    }

    /// A writer compressing into `out` that lists the gzip blocks it writes
    /// in its descriptor, and takes from `earlier` the deflate bytes of any
    /// block it holds. The blob's bytes are the same either way. Only gzip
    /// has blocks: for the other compressions this is [`LayerWriter::new`].
    pub fn reusing(
        out: W,
        options: &CompressionOptions,
        earlier: Option<Arc<dyn GzipBlockSource>>,
    ) -> io::Result<Self> {
        Self::build(out, options, Some(earlier))
    }

    fn build(
        out: W,
        options: &CompressionOptions,
        blocks: Option<Option<Arc<dyn GzipBlockSource>>>,
    ) -> io::Result<Self> {
        let sink = HashCount {
            inner: out,
            hash: (!options.skip_blob_digest).then(Sha256::new),
            count: 0,
        };
        let encoder = match options.compression {
            Compression::Uncompressed => Encoder::Plain(sink),
            Compression::Gzip => {
                let mut gzip =
                    ParallelGzip::new(sink, options.level.unwrap_or(6).min(9), options.threads);
                if let Some(earlier) = blocks {
                    gzip.blocks = Some(BlockReuse {
                        earlier,
                        written: Vec::new(),
                    });
                }
                Encoder::Gzip(Box::new(gzip))
            }
            Compression::Zstd => {
                let level = options
                    .level
                    .map_or(ZSTD_DEFAULT_LEVEL, |l| l.min(22) as i32);
                Encoder::Zstd(zstd_encoder(sink, level, options.threads)?)
            }
        };
        Ok(LayerWriter {
            hash: StreamHash::default(),
            count: 0,
            encoder,
            media_type: options.compression.media_type(),
        })
    }

    /// Finishes compression and returns what was written.
    pub fn finish(self) -> io::Result<LayerDescriptor> {
        let mut blocks = Vec::new();
        let mut sink = match self.encoder {
            Encoder::Plain(s) => s,
            Encoder::Gzip(g) => {
                let (sink, written) = g.finish_with_blocks()?;
                blocks = written;
                sink
            }
            Encoder::Zstd(z) => z.finish()?,
        };
        sink.flush()?;
        Ok(LayerDescriptor {
            diff_id: format!("sha256:{}", hex::encode(self.hash.finish()?)),
            digest: sink
                .hash
                .map(|h| format!("sha256:{}", hex::encode(h.finalize())))
                .unwrap_or_default(),
            size: sink.count,
            uncompressed_size: self.count,
            media_type: self.media_type,
            blocks,
        })
    }
}

impl<W: Write> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::Plain(s) => s.write(buf)?,
            Encoder::Gzip(g) => g.write(buf)?,
            Encoder::Zstd(z) => z.write(buf)?,
        };
        self.hash.update(&buf[..n])?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        // A compressor's flush would end a block where the caller happened
        // to flush, and the bytes would depend on it: only the plain
        // stream passes it on.
        match &mut self.encoder {
            Encoder::Plain(s) => s.flush(),
            Encoder::Gzip(_) | Encoder::Zstd(_) => Ok(()),
        }
    }
}

/// Size of the blocks compressed independently. Fixed, so that the output
/// depends only on the input and the level, never on the thread count.
pub const GZIP_BLOCK_SIZE: usize = 1 << 20;
/// Each block is primed with the last 32 KiB of the previous one, the
/// deflate window, so the ratio stays that of a single stream (pigz's trick).
const DICT_SIZE: usize = 32 * 1024;

struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
}

/// A block's deflate bytes and CRC, with its key and their digest when
/// blocks are listed.
type Compressed = (Vec<u8>, crc32fast::Hasher, Option<([u8; 32], [u8; 32])>);

/// A finished block, with its input buffer back for the next block.
type JobResult = (u64, io::Result<Compressed>, Vec<u8>);

/// Listing the blocks written, and taking earlier ones.
struct BlockReuse {
    earlier: Option<Arc<dyn GzipBlockSource>>,
    written: Vec<GzipBlock>,
}

/// The version of how hoist cuts and deflates blocks; part of every key.
const BLOCK_KEY_VERSION: &[u8] = b"hoist-gzip-block 1\0";

/// What this build's deflate makes of a fixed sample at `level`: a library
/// that deflates differently (another version, another backend) gives
/// other keys, so its blocks and ours never mix within one layer.
fn deflate_fingerprint(level: u32) -> [u8; 32] {
    static PRINTS: std::sync::OnceLock<Vec<[u8; 32]>> = std::sync::OnceLock::new();
    let prints = PRINTS.get_or_init(|| {
        // Text-like, repetitive and pseudo-random parts, so the match
        // finder, the lazy evaluation and the Huffman coding all show.
        let mut x: u32 = 0x9e37_79b9;
        let sample: Vec<u8> = (0..48 * 1024u32)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                match i % 7 {
                    0 | 1 => (x >> 24) as u8,
                    _ => b"the quick brown fox jumps over the lazy dog "[(i % 44) as usize],
                }
            })
            .collect();
        (0..=9)
            .map(
                |l| match deflate_block(l, &sample[..4096], &sample[4096..]) {
                    Ok(out) => Sha256::digest(&out).into(),
                    // A deflate that fails here fails on the layer too; no key
                    // it could give would ever be looked up.
                    Err(_) => [0; 32],
                },
            )
            .collect()
    });
    prints[level.min(9) as usize]
}

/// The key of a block (see [`GzipBlock::key`]).
fn block_key(level: u32, dict: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BLOCK_KEY_VERSION);
    h.update([level as u8]);
    h.update(deflate_fingerprint(level));
    h.update((dict.len() as u64).to_le_bytes());
    h.update(dict);
    h.update(data);
    h.finalize().into()
}

/// Deflates one block (see [`deflate_block`]), or takes its bytes from
/// `earlier`; with `list`, also gives its key and the bytes' digest.
fn compress_block(
    level: u32,
    dict: &[u8],
    data: &[u8],
    list: bool,
    earlier: Option<&dyn GzipBlockSource>,
) -> io::Result<Compressed> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    if !list {
        return Ok((deflate_block(level, dict, data)?, crc, None));
    }
    let key = block_key(level, dict, data);
    let out = match earlier.and_then(|e| e.block(&key)) {
        Some(out) => out,
        None => deflate_block(level, dict, data)?,
    };
    let digest = Sha256::digest(&out).into();
    Ok((out, crc, Some((key, digest))))
}

struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<JobResult>,
    workers: Vec<JoinHandle<()>>,
}

/// A gzip encoder in the manner of pigz: the input is cut into fixed-size
/// blocks, each deflated on a worker thread with the previous 32 KiB as
/// dictionary and ended with a sync flush (byte-aligned, not final); the
/// pieces are concatenated in order, an empty final block and the gzip
/// trailer (CRC-32 combined from the blocks' CRCs, length) close one valid
/// gzip member. With one thread the same blocks are deflated inline, so the
/// bytes are identical for 1..N threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    threads: usize,
    block: Vec<u8>,
    dict: Vec<u8>,
    next_seq: u64,
    next_out: u64,
    crc: crc32fast::Hasher,
    total: u64,
    pool: Option<Pool>,
    pending: BTreeMap<u64, Compressed>,
    header_written: bool,
    /// Bytes written to `out` so far (where the next block starts).
    offset: u64,
    blocks: Option<BlockReuse>,
    /// Input buffers of finished blocks, for the next ones: each would
    /// otherwise be a fresh 1 MiB mapping.
    spare: Vec<Vec<u8>>,
}

/// Whether `data` looks incompressible: every byte value occurs within a
/// quarter of its share of a uniform distribution, as in random, encrypted
/// or already compressed data (text or binaries have absent and dominant
/// byte values). Integers only, so the answer (and the layer's bytes) is
/// the same on every machine.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < 64 * 1024 {
        return false;
    }
    let mut counts = [0u32; 256];
    for b in data {
        counts[usize::from(*b)] += 1;
    }
    let expected = data.len() as u64;
    // count * 256 within [0.75, 1.25] * len
    counts.iter().all(|&c| {
        let scaled = u64::from(c) * 256 * 4;
        scaled >= expected * 3 && scaled <= expected * 5
    })
}

/// `data` as deflate stored blocks (BFINAL 0, BTYPE 00): the stream is
/// byte-aligned here (start, or after a sync flush), so each block is a
/// zero header byte, LEN, NLEN and the bytes.
fn stored_blocks(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 5);
    for chunk in data.chunks(65535) {
        let len = chunk.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Deflates one block primed with `dict`, ending with a sync flush; a block
/// that looks incompressible is stored instead, which costs a copy where
/// deflate would spend its slowest path to gain nothing.
///
/// A new compressor for every block, never one reset: with flate2's zlib-rs
/// backend a reset compressor at level 3 gave other bytes than a new one
/// for some blocks, so a layer's bytes depended on which worker had
/// deflated what before (seen in session 8's reuse test; not in a unit test
/// of a few blocks).
fn deflate_block(level: u32, dict: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress};
    if level > 0 && looks_incompressible(data) {
        return Ok(stored_blocks(data));
    }
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 4096);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // The flush is complete once all input is taken and the compressor
        // stopped with output space left.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

impl<W: Write> ParallelGzip<W> {
    /// A gzip encoder writing to `out` at `level` (0-9) with `threads`
    /// workers (0 = one per core).
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = thread_count(threads);
        ParallelGzip {
            out,
            level,
            threads,
            block: Vec::with_capacity(GZIP_BLOCK_SIZE),
            dict: Vec::new(),
            next_seq: 0,
            next_out: 0,
            crc: crc32fast::Hasher::new(),
            total: 0,
            pool: None,
            pending: BTreeMap::new(),
            header_written: false,
            offset: 0,
            blocks: None,
            spare: Vec::new(),
        }
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // Magic, deflate, no flags, mtime 0, no extra flags, OS unknown:
            // nothing about the machine or the time ends up in the blob.
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
            self.offset += 10;
            self.header_written = true;
        }
        Ok(())
    }

    fn start_pool(&mut self) {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let (res_tx, res_rx) = mpsc::channel::<JobResult>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::new();
        for _ in 0..self.threads {
            let job_rx = Arc::clone(&job_rx);
            let res_tx = res_tx.clone();
            let level = self.level;
            let list = self.blocks.is_some();
            let earlier = self.blocks.as_ref().and_then(|b| b.earlier.clone());
            workers.push(std::thread::spawn(move || loop {
                let job = {
                    let Ok(rx) = job_rx.lock() else { return };
                    match rx.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    }
                };
                let result = compress_block(level, &job.dict, &job.data, list, earlier.as_deref());
                if res_tx.send((job.seq, result, job.data)).is_err() {
                    return;
                }
            }));
        }
        self.pool = Some(Pool {
            jobs: Some(job_tx),
            results: res_rx,
            workers,
        });
    }

    fn emit(&mut self, (data, crc, listed): Compressed) -> io::Result<()> {
        self.out.write_all(&data)?;
        self.crc.combine(&crc);
        if let (Some(blocks), Some((key, digest))) = (&mut self.blocks, listed) {
            blocks.written.push(GzipBlock {
                key,
                offset: self.offset,
                len: data.len() as u64,
                digest,
            });
        }
        self.offset += data.len() as u64;
        self.next_out += 1;
        Ok(())
    }

    /// Receives one finished block and writes out every block now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let (seq, result, data) = pool
            .results
            .recv()
            .map_err(|_| io::Error::other("gzip worker thread died"))?;
        self.spare.push(data);
        self.pending.insert(seq, result?);
        while let Some(block) = self.pending.remove(&self.next_out) {
            self.emit(block)?;
        }
        Ok(())
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        self.write_header()?;
        let next = match self.spare.pop() {
            Some(mut spare) => {
                spare.clear();
                spare
            }
            None => Vec::with_capacity(GZIP_BLOCK_SIZE),
        };
        let data = std::mem::replace(&mut self.block, next);
        let start = data.len().saturating_sub(DICT_SIZE);
        let dict = std::mem::replace(&mut self.dict, data[start..].to_vec());
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pool.is_none() && (self.threads <= 1 || (last && seq == 0)) {
            let earlier = self.blocks.as_ref().and_then(|b| b.earlier.as_deref());
            let block = compress_block(self.level, &dict, &data, self.blocks.is_some(), earlier)?;
            self.spare.push(data);
            return self.emit(block);
        }
        if self.pool.is_none() {
            self.start_pool();
        }
        if let Some(Pool { jobs: Some(tx), .. }) = &self.pool {
            tx.send(Job { seq, dict, data })
                .map_err(|_| io::Error::other("gzip worker threads died"))?;
        }
        // Bound memory: at most two blocks per thread in flight.
        while self.next_seq - self.next_out > 2 * self.threads as u64 {
            self.collect_one()?;
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        self.finish_with_blocks().map(|(out, _)| out)
    }

    /// [`ParallelGzip::finish`], with the blocks written when they were
    /// listed.
    fn finish_with_blocks(mut self) -> io::Result<(W, Vec<GzipBlock>)> {
        self.dispatch(true)?;
        while self.next_out < self.next_seq {
            self.collect_one()?;
        }
        if let Some(mut pool) = self.pool.take() {
            pool.jobs = None;
            for w in pool.workers.drain(..) {
                let _ = w.join();
            }
        }
        self.write_header()?;
        // An empty final fixed-Huffman block closes the deflate stream.
        self.out.write_all(&[0x03, 0x00])?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        let blocks = self.blocks.take().map(|b| b.written).unwrap_or_default();
        Ok((self.out, blocks))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZIP_BLOCK_SIZE - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        self.total += n as u64;
        if self.block.len() == GZIP_BLOCK_SIZE {
            self.dispatch(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b"hello world "[i % 12]
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut g = ParallelGzip::new(Vec::new(), 6, threads);
        g.write_all(data).unwrap();
        g.finish().unwrap()
    }

    #[test]
    fn parallel_gzip_is_valid_and_identical_across_thread_counts() {
        for len in [0, 1, 1000, GZIP_BLOCK_SIZE, GZIP_BLOCK_SIZE * 3 + 17] {
            let data = sample(len);
            let one = gzip(&data, 1);
            for threads in [2, 3, 8] {
                assert_eq!(one, gzip(&data, threads), "len {len} threads {threads}");
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                // xorshift64*: good enough to look uniform to the histogram.
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn random_blocks_are_stored_and_the_stream_stays_valid() {
        // random, then text, then random with a short tail: stored and
        // deflated blocks alternate and the dictionary crosses both ways.
        let mut data = random(GZIP_BLOCK_SIZE, 1);
        data.extend(sample(GZIP_BLOCK_SIZE + 500));
        data.extend(random(GZIP_BLOCK_SIZE + 70_000, 2));
        let one = gzip(&data, 1);
        assert_eq!(one, gzip(&data, 3));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert!(looks_incompressible(&random(GZIP_BLOCK_SIZE, 3)));
        assert!(!looks_incompressible(&sample(GZIP_BLOCK_SIZE)));
        // Stored costs 5 bytes per 64 KiB; the text block still shrinks.
        assert!(one.len() < data.len());
        assert!(one.len() > 2 * GZIP_BLOCK_SIZE);
    }

    #[test]
    fn the_diff_id_is_the_streams_sha256_whichever_thread_hashes_it() {
        // Inline, at the limit, just past it, and many chunks with a partial
        // last one; written in pieces that straddle the chunks.
        for len in [
            0,
            1,
            StreamHash::INLINE,
            StreamHash::INLINE + 1,
            3 * StreamHash::INLINE + 12_345,
        ] {
            let data = sample(len);
            let options = CompressionOptions {
                compression: Compression::Uncompressed,
                ..CompressionOptions::default()
            };
            let (_, d) = layer_in(&data, &options, 300_001);
            assert_eq!(
                d.diff_id,
                format!("sha256:{}", hex::encode(Sha256::digest(&data))),
                "len {len}"
            );
            assert_eq!(d.uncompressed_size, len as u64);
        }
    }

    #[test]
    fn layer_writer_hashes_both_streams() {
        let data = sample(100_000);
        let mut blob = Vec::new();
        let d = {
            let mut w = LayerWriter::new(&mut blob, &CompressionOptions::default()).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap()
        };
        assert_eq!(
            d.diff_id,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
        assert_eq!(
            d.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&blob)))
        );
        assert_eq!(d.size, blob.len() as u64);
        assert_eq!(d.uncompressed_size, data.len() as u64);
        assert_eq!(d.media_type, MEDIA_TYPE_LAYER_GZIP);
    }

    fn layer(data: &[u8], options: &CompressionOptions) -> (Vec<u8>, LayerDescriptor) {
        layer_in(data, options, 77_777)
    }

    fn layer_in(
        data: &[u8],
        options: &CompressionOptions,
        write_size: usize,
    ) -> (Vec<u8>, LayerDescriptor) {
        let mut blob = Vec::new();
        let mut w = LayerWriter::new(&mut blob, options).unwrap();
        // Odd write sizes: the bytes must not depend on how the caller cuts
        // the stream, nor on its flushes.
        for chunk in data.chunks(write_size) {
            w.write_all(chunk).unwrap();
            w.flush().unwrap();
        }
        let d = w.finish().unwrap();
        (blob, d)
    }

    #[test]
    fn zstd_layers_are_identical_for_any_worker_count() {
        // Jobs of ZSTD_JOB_SIZE: 9 MiB makes five, so the workers really
        // share the stream (and the bytes differ from the single-threaded
        // mode's, checked by hand).
        let mut data = sample(6 << 20);
        data.extend(random(3 << 20, 7));
        let options = |threads| CompressionOptions {
            compression: Compression::Zstd,
            level: Some(1),
            threads,
            skip_blob_digest: false,
        };
        let (one, d1) = layer(&data, &options(1));
        for threads in [2, 4] {
            let (other, d) = layer(&data, &options(threads));
            assert!(one == other, "{threads} workers wrote other bytes than 1");
            assert_eq!(d, d1);
        }
        assert_eq!(d1.media_type, MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
        assert_eq!(
            d1.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&one)))
        );
    }

    #[test]
    fn layer_bytes_do_not_depend_on_write_sizes() {
        // A step's tar writer and an export's conversion feed the writer in
        // different pieces; both must make the same blob.
        let mut data = sample(5 << 20);
        data.extend(random(1 << 20, 9));
        for compression in [Compression::Gzip, Compression::Zstd] {
            let options = CompressionOptions {
                compression,
                level: Some(1),
                threads: 2,
                skip_blob_digest: false,
            };
            let (whole, _) = layer_in(&data, &options, data.len());
            for write_size in [1 << 20, 4093] {
                let (pieces, _) = layer_in(&data, &options, write_size);
                assert!(
                    whole == pieces,
                    "{compression:?} in {write_size}-byte writes"
                );
            }
        }
    }

    #[test]
    fn a_hashing_sink_is_not_hashed_twice() {
        let data = sample(300_000);
        for compression in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Uncompressed,
        ] {
            let options = CompressionOptions {
                compression,
                ..CompressionOptions::default()
            };
            let (blob, hashed) = layer(&data, &options);
            let (same, unhashed) = layer(
                &data,
                &CompressionOptions {
                    skip_blob_digest: true,
                    ..options
                },
            );
            assert_eq!(blob, same);
            assert_eq!(unhashed.digest, "");
            assert_eq!(
                LayerDescriptor {
                    digest: hashed.digest.clone(),
                    ..unhashed
                },
                hashed
            );
        }
    }

    /// Earlier blocks by key, counting those found.
    struct Earlier {
        blocks: std::collections::HashMap<[u8; 32], Vec<u8>>,
        found: std::sync::atomic::AtomicUsize,
    }

    impl GzipBlockSource for Earlier {
        fn block(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
            let block = self.blocks.get(key).cloned();
            if block.is_some() {
                self.found
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            block
        }
    }

    fn listed(
        data: &[u8],
        options: &CompressionOptions,
        earlier: Option<Arc<dyn GzipBlockSource>>,
    ) -> (Vec<u8>, LayerDescriptor) {
        let mut blob = Vec::new();
        let mut w = LayerWriter::reusing(&mut blob, options, earlier).unwrap();
        for chunk in data.chunks(77_777) {
            w.write_all(chunk).unwrap();
        }
        let d = w.finish().unwrap();
        (blob, d)
    }

    #[test]
    fn a_layer_taking_earlier_blocks_has_the_bytes_of_a_fresh_one() {
        let old = sample(GZIP_BLOCK_SIZE * 5 + 1000);
        let options = CompressionOptions::default();
        let (old_blob, old_layer) = listed(&old, &options, None);
        // Listing blocks changes nothing in the blob.
        assert_eq!(old_blob, layer(&old, &options).0);
        assert_eq!(old_layer.blocks.len(), 6);
        let mut earlier = std::collections::HashMap::new();
        for b in &old_layer.blocks {
            let bytes = &old_blob[b.offset as usize..(b.offset + b.len) as usize];
            assert_eq!(<[u8; 32]>::from(Sha256::digest(bytes)), b.digest);
            earlier.insert(b.key, bytes.to_vec());
        }
        assert_eq!(old_layer.blocks[0].offset, 10);
        let earlier = Arc::new(Earlier {
            blocks: earlier,
            found: Default::default(),
        });

        // One byte changes in the third block, far from its end: the fourth
        // block's dictionary (the third's last 32 KiB) is unchanged.
        let mut new = old.clone();
        new[GZIP_BLOCK_SIZE * 2 + 10] ^= 1;
        let fresh = layer(&new, &options).0;
        for threads in [1, 4] {
            earlier.found.store(0, std::sync::atomic::Ordering::Relaxed);
            let options = CompressionOptions { threads, ..options };
            let (blob, d) = listed(&new, &options, Some(earlier.clone()));
            assert_eq!(blob, fresh, "{threads} threads");
            assert_eq!(
                earlier.found.load(std::sync::atomic::Ordering::Relaxed),
                5,
                "{threads} threads"
            );
            assert_eq!(d.blocks.len(), 6);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, new);
        }

        // Another level: no key matches, and the blob is that level's own.
        earlier.found.store(0, std::sync::atomic::Ordering::Relaxed);
        let other = CompressionOptions {
            level: Some(1),
            ..options
        };
        let (blob, _) = listed(&old, &other, Some(earlier.clone()));
        assert_eq!(blob, layer(&old, &other).0);
        assert_eq!(earlier.found.load(std::sync::atomic::Ordering::Relaxed), 0);

        // zstd has no blocks to list or take.
        let zstd = CompressionOptions {
            compression: Compression::Zstd,
            ..options
        };
        let (blob, d) = listed(&old, &zstd, Some(earlier.clone()));
        assert!(d.blocks.is_empty());
        assert_eq!(blob, layer(&old, &zstd).0);
    }
}
