//! Reading a file whole, transparently gunzipping it when it starts with the gzip magic.

use std::io::Read;
use std::path::Path;

use crate::error::DataError;

/// The most bytes a gzipped file may decompress to (MNIST's training images are 47 MB, a
/// CIFAR-10 batch 30 MB): a small damaged or hostile stream must not fill the memory.
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// The bytes of `path`, decompressed if gzipped (magic 1f 8b).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.into(),
        error: e,
    })?;
    decompress_maybe_gz(raw, path)
}

/// `raw` itself, or its decompression when it starts with the gzip magic; `path` names the file
/// in errors.
pub fn decompress_maybe_gz(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| DataError::format(path, format!("corrupt or truncated gzip stream: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(DataError::format(
            path,
            format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(out)
}
