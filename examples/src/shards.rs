//! A directory of image files written as WebDataset tar shards, to any store (a local
//! directory or an `s3://` prefix): `shard-00000.tar`, `shard-00001.tar`, ..., each sample a
//! file's bytes as field `jpg` and its position as field `cls`.

use std::error::Error;
use std::path::PathBuf;

use pipeline_runtime::storage::object_store::path::Path;
use pipeline_runtime::storage::{block_on, Store, TarWriter};

/// Writes `files` as shards of `per_shard` samples (key: the file's stem) to `store`; returns
/// the shards' paths and the bytes written.
pub fn write_image_shards(
    files: &[PathBuf],
    store: &Store,
    per_shard: usize,
) -> Result<(Vec<Path>, u64), Box<dyn Error>> {
    let mut written = Vec::new();
    let mut bytes = 0u64;
    for (n, chunk) in files.chunks(per_shard.max(1)).enumerate() {
        let mut tar = TarWriter::new();
        for (i, file) in chunk.iter().enumerate() {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| format!("{}: no usable file name", file.display()))?;
            // A dot would end the key early: WebDataset keys stop at the first one.
            let key = stem.replace('.', "_");
            let data = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            tar.append(&format!("{key}.jpg"), &data);
            let index = n * per_shard + i;
            tar.append(&format!("{key}.cls"), index.to_string().as_bytes());
        }
        let data = tar.finish();
        bytes += data.len() as u64;
        let path = store.path(&format!("shard-{n:05}.tar"));
        block_on(store.put(&path, data.into()))?;
        written.push(path);
    }
    Ok((written, bytes))
}
