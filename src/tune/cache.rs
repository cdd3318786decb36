//! The logit cache of `calibrate`: every model's logits on every image of a labeled folder,
//! stored once (postcard) so a re-run with the same models and data is instant. The file is
//! named after the folder and the models' names; inside it the models' checksums (sha256 of
//! the ONNX file and the manifest), the data's fingerprint (labels.csv, file sizes) and the
//! payload the last model saw (`--encoding`, `--jpeg-quality`) decide
//! whether it still holds: a cache made by other models or other data is rebuilt.

use crate::model::Model;
use crate::offload::payload::PayloadSpec;
use crate::tune::eval::Record;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bumped whenever the stored layout or the way logits are computed changes.
const CACHE_VERSION: u32 = 2;

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Key {
    version: u32,
    /// (model name, sha256 of its ONNX file and manifest)
    models: Vec<(String, String)>,
    data: String,
    /// The payload the last model saw (`PayloadSpec`'s text, e.g. `crop-jpeg q90`).
    payload: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    key: Key,
    errors: usize,
    records: Vec<Record>,
}

pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("edgecascade")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a model's ONNX file and manifest.
pub fn model_checksum(m: &Model) -> std::io::Result<String> {
    let mut h = Sha256::new();
    h.update(std::fs::read(&m.manifest.onnx)?);
    h.update(std::fs::read(&m.manifest.path)?);
    Ok(hex(&h.finalize()))
}

/// The data's fingerprint: labels.csv (or, for unlabeled data, a mark saying so) and each
/// listed file's size.
fn data_fingerprint(dir: &Path, files: &[PathBuf], labeled: bool) -> std::io::Result<String> {
    let mut h = Sha256::new();
    if dir.is_file() {
        // A TSV of sentences holds its inputs and labels: its contents are the data set.
        h.update(b"text data set: ");
        h.update(std::fs::read(dir)?);
        return Ok(hex(&h.finalize()));
    }
    if labeled {
        h.update(std::fs::read(dir.join("labels.csv"))?);
    } else {
        h.update(b"unlabeled: every image of the folder");
    }
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::metadata(f)?.len().to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Where the cache of these models on this folder lives.
fn file_for(cache_dir: &Path, data: &Path, models: &[&Model]) -> PathBuf {
    let canon = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_owned());
    let mut h = Sha256::new();
    h.update(canon.to_string_lossy().as_bytes());
    for m in models {
        h.update(m.name().as_bytes());
        h.update([0]);
    }
    cache_dir.join(format!("logits-{}.postcard", &hex(&h.finalize())[..16]))
}

/// What `load_or_build` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Provenance {
    Cached(PathBuf),
    Built { path: PathBuf, why: String },
}

/// The records of `models` on the `items` of `data` (labeled by its labels.csv, or not:
/// `labeled` false, the records' labels are then placeholders), from the cache when it holds,
/// else computed by `build` and stored. Returns the records, the count of images that failed,
/// and where they came from. A cache that cannot be written is only a warning.
pub fn load_or_build(
    cache_dir: &Path,
    data: &Path,
    files: &[PathBuf],
    labeled: bool,
    models: &[&Model],
    payload: PayloadSpec,
    build: impl FnOnce() -> (Vec<Record>, usize),
) -> std::io::Result<(Vec<Record>, usize, Provenance)> {
    let key = Key {
        version: CACHE_VERSION,
        models: models.iter().map(|m| Ok((m.name().to_owned(), model_checksum(m)?))).collect::<std::io::Result<_>>()?,
        data: data_fingerprint(data, files, labeled)?,
        payload: payload.to_string(),
    };
    let path = file_for(cache_dir, data, models);
    let why = match std::fs::read(&path) {
        Err(_) => "no cache yet".to_owned(),
        Ok(bytes) => match postcard::from_bytes::<Stored>(&bytes) {
            Err(e) => format!("the cache {} is unreadable ({e})", path.display()),
            Ok(s) if s.key.version != key.version => "the cache is from another version".to_owned(),
            Ok(s) if s.key.models != key.models => "the cache was made by other models (checksums differ)".to_owned(),
            Ok(s) if s.key.data != key.data => "the data changed since the cache was made".to_owned(),
            Ok(s) if s.key.payload != key.payload => {
                format!("the cache's host stage saw {} payloads, not {}", s.key.payload, key.payload)
            }
            Ok(s) => return Ok((s.records, s.errors, Provenance::Cached(path))),
        },
    };
    let (records, errors) = build();
    let stored = Stored { key, errors, records };
    // Written to a temporary file and renamed: a reader never sees half a cache.
    let write = std::fs::create_dir_all(cache_dir).and_then(|_| {
        let bytes = postcard::to_allocvec(&stored).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(cache_dir)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(&path).map(|_| ()).map_err(|e| e.error)
    });
    if let Err(e) = write {
        log::warn!("cannot write the logit cache {}: {e}", path.display());
    }
    Ok((stored.records, stored.errors, Provenance::Built { path, why }))
}
